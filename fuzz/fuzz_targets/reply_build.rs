//! The reply rules on arbitrary requests and access decisions: never a panic,
//! never a reply longer than the request, origin always copied.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tachyon::proto::{
    parse_client_request, respond, Access, LeapIndicator, NtpTimestamp, ReplyAction, SystemInfo,
};

fuzz_target!(|input: (u8, i8, u64, bool, &[u8])| {
    let (access_kind, poll, rx, from_ntp_port, request) = input;
    let access = match access_kind % 5 {
        0 => Access::Serve,
        1 => Access::ServeRaisingPoll(poll),
        2 => Access::Kod(poll),
        3 => Access::Limit,
        _ => Access::Deny,
    };
    let system = SystemInfo {
        leap: LeapIndicator::NoWarning,
        stratum: 2,
        precision: -24,
        root_delay: 0.01,
        root_dispersion: 0.001,
        reference_id: [192, 0, 2, 1],
        reference_time: NtpTimestamp::from_bits(rx.wrapping_sub(1 << 38)),
    };
    let mut out = [0u8; 64];
    let Ok(parsed) = parse_client_request(request, from_ntp_port) else {
        return;
    };
    match respond(&parsed, NtpTimestamp::from_bits(rx), &system, access, &mut out) {
        ReplyAction::Reply { len } | ReplyAction::Kod { len } => {
            assert!(len <= request.len());
            assert_eq!(&out[24..32], &request[40..48]);
        }
        ReplyAction::Drop(_) => {}
    }
});
