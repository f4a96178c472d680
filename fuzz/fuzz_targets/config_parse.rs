//! The ntp.conf parser on arbitrary text: a config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match tachyon::config::Config::parse(text, "fuzz.conf") {
            Ok(config) => {
                // Whatever parsed compiles into a restrict table.
                let _ = tachyon::server::access::restrict::RestrictTable::new(&config.restrict);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
