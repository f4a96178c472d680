//! Header parse/serialize round trip and trailer walking on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tachyon::proto::control::{parse_control_request, respond_control, MAX_FRAGMENTS};
use tachyon::proto::ext::walk_trailer;
use tachyon::proto::{Header, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    // Mode 6: any request checks, and its answer stays within bounds.
    if let Ok(req) = parse_control_request(data) {
        let answer = respond_control(&req, 0, data);
        assert!(!answer.is_empty() && answer.len() <= MAX_FRAGMENTS);
        assert!(answer.iter().all(|f| f.len() % 4 == 0 && f.len() <= 12 + 468 + 3));
    }
    if let Some(h) = Header::parse(data) {
        assert_eq!(&h.to_bytes()[..], &data[..HEADER_LEN]);
        let _ = walk_trailer(h.version, &data[HEADER_LEN..]);
    } else {
        assert!(data.len() < HEADER_LEN);
    }
});
