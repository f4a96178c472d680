//! Header parse/serialize round trip and trailer walking on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tachyon::proto::ext::walk_trailer;
use tachyon::proto::{Header, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = Header::parse(data) {
        assert_eq!(&h.to_bytes()[..], &data[..HEADER_LEN]);
        let _ = walk_trailer(h.version, &data[HEADER_LEN..]);
    } else {
        assert!(data.len() < HEADER_LEN);
    }
});
