//! Both configuration parsers (ntp.conf and chrony.conf) on arbitrary text: a
//! config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tachyon::config::{Config, Dialect};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for dialect in [Dialect::Ntp, Dialect::Chrony] {
            match Config::parse_as(text, "fuzz.conf", dialect) {
                Ok(config) => {
                    // Whatever parsed compiles into a restrict table.
                    let _ = tachyon::server::access::restrict::RestrictTable::new(&config.restrict);
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
});
