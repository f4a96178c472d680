//! End-to-end tests: the ntp-blast binary against tiny NTP responders running
//! in this process on 127.0.0.1 (and ::1 where available). All traffic stays
//! on loopback; every run is bounded to a second or two.

use std::collections::HashSet;
use std::net::{IpAddr, UdpSocket};
use std::process::{Command, Output};

use serde_json::Value;
use tachyon::proto::{Header, LeapIndicator, NtpTimestamp};

#[path = "../../tests/common/fake_ntp.rs"]
mod fake_ntp;

use fake_ntp::{Clock, FakeNtp};

/// A stratum 2 server on `bind` on the host clock whose replies pass
/// through `hook` (see fake_ntp::Hook); None where `bind` is unavailable.
fn responder(bind: &str, hook: fn(u64, &mut Header) -> bool) -> Option<FakeNtp> {
    FakeNtp::start(bind, 2, Clock::HOST, Box::new(hook)).ok()
}

fn honest(_: u64, _: &mut Header) -> bool {
    true
}

fn blast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ntp-blast"))
        .args(args)
        .output()
        .expect("run ntp-blast")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON on stdout ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn honest_server_answers_everything() {
    let r = responder("127.0.0.1:0", honest).unwrap();
    let target = r.addr.to_string();
    let out = blast(&[
        &target,
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--json",
        "--quiet",
    ]);
    r.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let t = &v["totals"];
    let sent = u(t, "sent");
    assert!((1960..=2040).contains(&sent), "sent {sent}");
    assert_eq!(u(t, "answered"), sent);
    assert_eq!(u(t, "ok"), sent);
    assert_eq!(u(t, "invalid"), 0);
    assert_eq!(u(t, "lost"), 0);
    assert_eq!(u(t, "duplicate"), 0);
    assert_eq!(u(t, "kod"), 0);
    assert_eq!(u(&t["rtt_us"], "count"), sent);
    assert!(t["rtt_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(t["server_us"]["max"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["steps"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"]["pass"], Value::Bool(true));
    // Every request is due within the second: one second row plus the tail.
    let secs = v["seconds"].as_array().unwrap();
    let sent_in_seconds: u64 = secs.iter().map(|s| u(s, "sent")).sum();
    assert_eq!(sent_in_seconds, sent);
}

fn corrupt_every_tenth(n: u64, reply: &mut Header) -> bool {
    if n % 10 == 0 {
        reply.origin_ts =
            NtpTimestamp::from_bits(reply.origin_ts.to_bits() ^ 0xdead_beef_0000_0000);
    }
    true
}

#[test]
fn corrupted_origins_are_invalid_and_fail_the_run() {
    let r = responder("127.0.0.1:0", corrupt_every_tenth).unwrap();
    let target = r.addr.to_string();
    let out = blast(&[
        &target,
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--timeout",
        "300ms",
        "--json",
        "--quiet",
        "--fail-on-invalid",
    ]);
    r.finish();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid replies"), "{}", stderr(&out));
    let v = json(&out);
    let t = &v["totals"];
    let sent = u(t, "sent") as f64;
    let invalid = u(t, "invalid") as f64;
    assert!(
        (invalid / sent - 0.10).abs() < 0.01,
        "invalid {invalid} of {sent}"
    );
    assert_eq!(u(&t["invalid_by_reason"], "unknown_origin") as f64, invalid);
    // The requests whose answer was corrupted never got a good one.
    assert!((u(t, "lost") as f64 - invalid).abs() <= 2.0);
    assert_eq!(v["result"]["pass"], Value::Bool(false));
}

fn rate_kiss_every_other(n: u64, reply: &mut Header) -> bool {
    if n % 2 == 0 {
        reply.leap = LeapIndicator::Unknown;
        reply.stratum = 0;
        reply.reference_id = *b"RATE";
    }
    true
}

#[test]
fn kisses_are_counted_by_code() {
    let r = responder("127.0.0.1:0", rate_kiss_every_other).unwrap();
    let target = r.addr.to_string();
    let out = blast(&[
        &target,
        "--rate",
        "1000",
        "--duration",
        "500ms",
        "--clients",
        "3",
        "--threads",
        "2",
        "--json",
        "--quiet",
        "--max-loss",
        "1",
    ]);
    r.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let t = &json(&out)["totals"];
    assert_eq!(u(t, "sent"), 500);
    assert_eq!(u(t, "answered"), 500);
    assert_eq!(u(&t["kod_by_code"], "RATE"), 250);
    assert_eq!(u(t, "ok"), 250);
    assert_eq!(u(t, "invalid"), 0);
}

fn unsynchronized(_: u64, reply: &mut Header) -> bool {
    reply.leap = LeapIndicator::Unknown;
    reply.stratum = 0;
    reply.reference_id = [0; 4];
    true
}

#[test]
fn unsynchronized_server_needs_allow_unsync() {
    let r = responder("127.0.0.1:0", unsynchronized).unwrap();
    let target = r.addr.to_string();
    let args = [
        &target[..],
        "--rate",
        "500",
        "--duration",
        "400ms",
        "--json",
        "--quiet",
    ];
    let strict = blast(&args);
    let mut lenient_args = args.to_vec();
    lenient_args.push("--allow-unsync");
    let lenient = blast(&lenient_args);
    r.finish();
    let t = &json(&strict)["totals"];
    assert_eq!(u(t, "ok"), 0);
    assert_eq!(u(t, "kod"), u(t, "answered"));
    let t = &json(&lenient)["totals"];
    assert_eq!(u(t, "unsync"), 200);
    assert_eq!(u(t, "kod"), 0);
    assert_eq!(u(&t["rtt_us"], "count"), 200);
}

#[test]
fn nothing_listening_is_a_clear_error() {
    // A port that was free a moment ago; nothing listens on it now.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let out = blast(&[
        &target,
        "--rate",
        "200",
        "--duration",
        "500ms",
        "--timeout",
        "200ms",
        "--quiet",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("no answers from {target}: is the server running?")),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn ramp_steps_in_csv() {
    let r = responder("127.0.0.1:0", honest).unwrap();
    let target = r.addr.to_string();
    let out = blast(&[
        &target,
        "--ramp",
        "400,2,500ms,1600",
        "--timeout",
        "200ms",
        "--csv",
        "--quiet",
    ]);
    r.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("step,rate,"));
    let sent: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(7).unwrap().parse().unwrap())
        .collect();
    assert_eq!(sent, [200, 400, 800]);
}

fn first_500_only(n: u64, _: &mut Header) -> bool {
    n <= 500
}

#[test]
fn stop_on_loss_ends_the_ramp() {
    let r = responder("127.0.0.1:0", first_500_only).unwrap();
    let target = r.addr.to_string();
    // Steps of 200, 400, 800, ... requests; the second loses 100 of its 400.
    let out = blast(&[
        &target,
        "--ramp",
        "200,2,1s,3200",
        "--timeout",
        "200ms",
        "--stop-on-loss",
        "10",
        "--json",
        "--quiet",
    ]);
    r.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let steps = v["steps"].as_array().unwrap();
    // Step 1's loss is known 0.2 s into step 2, which stops there (a heavily
    // loaded machine may take until step 3).
    assert!((3..=4).contains(&steps.len()), "{steps:?}");
    assert_eq!(u(&steps[0], "lost"), 0);
    assert_eq!(u(&steps[1], "lost"), 100);
    let last = steps.last().unwrap();
    assert!(last["sending_s"].as_f64().unwrap() < last["duration_s"].as_f64().unwrap());
    assert!(v["elapsed_s"].as_f64().unwrap() < 4.5);
}

#[test]
fn poll_pattern_follows_the_client_schedule() {
    let r = responder("127.0.0.1:0", honest).unwrap();
    let target = r.addr.to_string();
    // 20 clients start 0.1 s apart, iburst 2 (2 s spacing), then every 1 s:
    // within 3 s all 20 send their first request, the first 10 their second.
    let out = blast(&[
        &target,
        "--clients",
        "20",
        "--threads",
        "2",
        "--pattern",
        "poll:1,iburst:2",
        "--duration",
        "3s",
        "--timeout",
        "200ms",
        "--json",
        "--quiet",
    ]);
    r.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let t = &json(&out)["totals"];
    assert_eq!(u(t, "sent"), 30);
    assert_eq!(u(t, "answered"), 30);
}

#[test]
fn clients_bind_the_source_range() {
    let r = responder("127.0.0.1:0", honest).unwrap();
    let target = r.addr.to_string();
    let out = blast(&[
        &target,
        "--clients",
        "8",
        "--sources",
        "127.0.0.1-127.0.0.4",
        "--rate",
        "800",
        "--duration",
        "300ms",
        "--json",
        "--quiet",
    ]);
    let seen = r.finish().peers;
    assert!(out.status.success(), "{}", stderr(&out));
    let expect: HashSet<IpAddr> = (1..=4).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    assert_eq!(seen, expect);
    assert_eq!(u(&json(&out)["totals"], "answered"), 240);
}

#[test]
fn kernel_tx_timestamps() {
    let r = responder("127.0.0.1:0", honest).unwrap();
    let target = r.addr.to_string();
    let out = blast(&[
        &target,
        "--rate",
        "1000",
        "--duration",
        "500ms",
        "--tx-timestamp",
        "kernel",
        "--clients",
        "2",
        "--json",
        "--quiet",
    ]);
    r.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let t = &v["totals"];
    assert_eq!(u(t, "answered"), 500);
    // Every answer should have found its kernel TX stamp.
    assert!(u(t, "t1_fallback") <= 5, "{t}");
    assert!(v["timestamps"]["t1"].as_str().unwrap().contains("kernel"));
}

#[test]
fn ipv6_loopback() {
    let Some(r) = responder("[::1]:0", honest) else {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    };
    let target = format!("[::1]:{}", r.addr.port());
    let out = blast(&[
        &target,
        "--rate",
        "500",
        "--duration",
        "400ms",
        "--json",
        "--quiet",
    ]);
    r.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let t = &json(&out)["totals"];
    assert_eq!(u(t, "answered"), 200);
    assert_eq!(u(t, "invalid"), 0);
}

#[test]
fn bad_arguments_are_rejected() {
    for args in [
        &["127.0.0.1", "--ramp", "1000,1,5,2000"][..],
        &["127.0.0.1", "--rate", "-5"],
        &["127.0.0.1", "--duration", "forever"],
        &["127.0.0.1", "--pattern", "storm"],
        &["127.0.0.1", "--rate", "100", "--ramp", "100,2,1,400"],
        &["127.0.0.1", "--json", "--csv"],
    ] {
        let out = blast(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("error"), "{args:?}");
    }
    // Semantic errors exit 1 with a message, before sending anything.
    let out = blast(&["127.0.0.1:1", "--threads", "4", "--clients", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("each thread needs a client"));
}

#[test]
fn non_loopback_target_needs_allow_remote() {
    // 192.0.2.1 is TEST-NET-1. The check comes before any socket is opened,
    // and --max-requests 0 would keep the run silent even if it did not.
    let out = blast(&["192.0.2.1", "--max-requests", "0", "--duration", "100ms"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--allow-remote"), "{}", stderr(&out));
}

/// tachyon's own workers, in this process, serving a synchronized stratum 1
/// state, with the interleaved mode on or off.
fn tachyon_server(xleave: bool) -> (tachyon::server::Server, tachyon::state::StatePublisher) {
    use tachyon::proto::SystemInfo;
    use tachyon::server::access::{AccessControl, SharedAccess};
    use tachyon::server::{Backend, Server, ServerOptions};
    use tachyon::state::{shared_state, ServerState};
    let mut state = ServerState::unsynchronized(-20);
    state.system = SystemInfo {
        leap: LeapIndicator::NoWarning,
        stratum: 1,
        precision: -20,
        root_delay: 0.0,
        root_dispersion: 0.0,
        reference_id: *b"LOCL",
        reference_time: NtpTimestamp::from_unix(1_700_000_000, 0),
    };
    let (publisher, reader) = shared_state(state);
    let server = Server::start(
        ServerOptions {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers: 1,
            backend: Backend::Mmsg,
            access: SharedAccess::new(AccessControl::open()),
            pin: false,
            rcvbuf: 1 << 20,
            tx_timestamps: true,
            xleave: xleave.then_some(1 << 16),
            queries: None,
            xdp: None,
        },
        reader,
    )
    .expect("start tachyon's workers");
    // Receive timestamping is turned on globally through deferred work.
    std::thread::sleep(std::time::Duration::from_millis(100));
    (server, publisher)
}

fn interleaved_run(target: &str) -> Value {
    let out = blast(&[
        target,
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--clients",
        "20",
        "--interleaved",
        "--tx-timestamp",
        "kernel",
        "--json",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    json(&out)
}

#[test]
fn interleaved_clients_get_interleaved_answers_from_tachyon() {
    let (server, _publisher) = tachyon_server(true);
    let v = interleaved_run(&server.local_addrs()[0].to_string());
    server.stop().unwrap();
    let t = &v["totals"];
    let answered = u(t, "answered");
    assert!(answered >= 1900, "{t}");
    assert_eq!(u(t, "invalid"), 0, "{t}");
    // Each client's first two answers are basic (its first request names
    // nothing, its second a reply whose pair was not kept); every other is
    // interleaved.
    assert!(u(t, "basic") <= 2 * 20 + 5, "{t}");
    assert_eq!(u(t, "basic") + u(t, "interleaved"), answered, "{t}");
    assert!(t["interleaved_pct"].as_f64().unwrap() > 97.0, "{t}");
    let offsets = &t["time_error_interleaved_us"];
    assert_eq!(u(offsets, "count"), u(t, "interleaved"));
    // On one clock, with exact transmit timestamps: well under a microsecond
    // typically (a generous bound for a busy test machine).
    assert!(offsets["p50"].as_f64().unwrap() < 5.0, "{t}");
    assert_eq!(v["config"]["interleaved"], Value::Bool(true));
}

#[test]
fn interleaved_clients_of_a_basic_server_get_basic_answers() {
    let (server, _publisher) = tachyon_server(false);
    let v = interleaved_run(&server.local_addrs()[0].to_string());
    server.stop().unwrap();
    let t = &v["totals"];
    assert_eq!(u(t, "interleaved"), 0, "xleave off: {t}");
    assert_eq!(u(t, "basic"), u(t, "answered"), "xleave off: {t}");
    assert_eq!(u(t, "invalid"), 0, "xleave off: {t}");
    // A server of the basic mode only (it echoes the transmit timestamp).
    let r = responder("127.0.0.1:0", honest).unwrap();
    let v = interleaved_run(&r.addr.to_string());
    r.finish();
    let t = &v["totals"];
    assert_eq!(u(t, "interleaved"), 0, "{t}");
    assert_eq!(u(t, "basic"), u(t, "answered"), "{t}");
}

/// Pretends every other reply is interleaved (origin = the request's second
/// nonce), with a transmit timestamp a day off: not the departure of any
/// reply before.
fn bogus_interleaved(n: u64, reply: &mut Header) -> bool {
    if n % 2 == 0 {
        reply.origin_ts =
            NtpTimestamp::from_bits(reply.origin_ts.to_bits() ^ 0x5a5a_0000_0000_0000);
        reply.transmit_ts = reply.receive_ts.add_seconds(86_400.0);
    }
    true
}

#[test]
fn an_interleaved_answer_with_an_impossible_transmit_timestamp_is_invalid() {
    let r = responder("127.0.0.1:0", bogus_interleaved).unwrap();
    let v = interleaved_run(&r.addr.to_string());
    r.finish();
    let t = &v["totals"];
    assert_eq!(u(t, "interleaved"), 0, "{t}");
    let invalid = u(&t["invalid_by_reason"], "interleaved_t3");
    assert!(invalid * 3 >= u(t, "answered"), "{t}");
    assert_eq!(u(t, "invalid"), invalid, "{t}");
}
