//! The cmsg and sockaddr parsers on arbitrary kernel-looking bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tachyon::server::io::cmsg::{parse_control, parse_sockaddr};

fuzz_target!(|data: &[u8]| {
    let _ = parse_control(data);
    let _ = parse_sockaddr(data);
});
