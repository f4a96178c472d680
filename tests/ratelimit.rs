//! Rate limiting against the real daemon: one address flooding over many source
//! ports is limited as one client (one quota across workers), gets RATE KoDs at a
//! bounded rate and 1 in 2^leak answers, while a thousand well-behaved clients
//! and the NTP Pool monitor's pattern see no loss.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use tachyon::proto::Header;

struct Tally {
    sent: usize,
    normal_unraised: usize,
    leaked: usize,
    kod_rate: usize,
}

/// Sends `count` requests from `sockets` (round robin) as fast as possible and
/// collects the answers.
fn flood(sockets: &[UdpSocket], server: SocketAddr, count: usize) -> Tally {
    let mut tally = Tally {
        sent: 0,
        normal_unraised: 0,
        leaked: 0,
        kod_rate: 0,
    };
    let mut buf = [0u8; 128];
    let mut collect = |tally: &mut Tally, wait: Duration| {
        let deadline = Instant::now() + wait;
        loop {
            let mut got = false;
            for s in sockets {
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    got = true;
                    let h = Header::parse(&buf[..n]).unwrap();
                    if h.stratum == 0 && &h.reference_id == b"RATE" {
                        tally.kod_rate += 1;
                        assert_eq!(h.poll, 3, "KoD poll raised to the interval");
                    } else if h.poll == 0 {
                        tally.normal_unraised += 1;
                    } else {
                        assert_eq!(h.poll, 3, "leaked answers carry the raised poll");
                        tally.leaked += 1;
                    }
                }
            }
            if !got && Instant::now() >= deadline {
                return;
            }
        }
    };
    for i in 0..count {
        let mut req = request(4, nonce());
        req[2] = 0; // poll 0, so a raised poll is visible
        sockets[i % sockets.len()].send_to(&req, server).unwrap();
        tally.sent += 1;
        if i % 20 == 19 {
            collect(&mut tally, Duration::ZERO);
        }
    }
    collect(&mut tally, Duration::from_millis(300));
    tally
}

#[test]
fn flooder_is_limited_while_honest_clients_are_served() {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start(
        &format!(
            "listen {server}\nworkers 2\nclock software\nlocal stratum 2\n\
             restrict default kod limited nomodify notrap nopeer noquery\n\
             ratelimit interval 3 burst 8 leak 2\n"
        ),
        server,
    );
    // The flooder: one address, 16 source ports (spread over both workers).
    let sockets: Vec<UdpSocket> = (0..16)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.99:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let t = flood(&sockets, server, 4000);
    eprintln!(
        "flooder: sent {} unraised {} leaked {} kod {}",
        t.sent, t.normal_unraised, t.leaked, t.kod_rate
    );
    // One quota for the address, whatever the port and worker: the 8-request burst
    // (a racing first insert on the other worker may add one fresh bucket).
    assert!(
        (8..=16).contains(&t.normal_unraised),
        "burst answers: {}",
        t.normal_unraised
    );
    // About 1 in 4 of the rest leak through.
    let rest = (t.sent - t.normal_unraised) as f64;
    let leak_ratio = t.leaked as f64 / rest;
    assert!(
        (0.18..0.32).contains(&leak_ratio),
        "leak ratio {leak_ratio}"
    );
    // KoDs are themselves limited: one per interval (8 s) per address.
    assert!((1..=2).contains(&t.kod_rate), "KoDs: {}", t.kod_rate);

    // A thousand well-behaved clients, one request each from its own address.
    let mut lost = 0;
    for i in 0..1000u32 {
        let addr = format!("127.1.{}.{}", i / 250, 1 + i % 250);
        let s = UdpSocket::bind((addr.as_str(), 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let n = nonce();
        s.send_to(&request(4, n), server).unwrap();
        let mut buf = [0u8; 128];
        match s.recv_from(&mut buf) {
            Ok((len, _)) => {
                let h = Header::parse(&buf[..len]).unwrap();
                assert_eq!(h.origin_ts.to_bits(), n);
                assert_eq!(h.stratum, 2, "a real answer, not a KoD");
            }
            Err(_) => lost += 1,
        }
    }
    assert_eq!(lost, 0, "honest clients lost {lost} of 1000");

    // The pool monitor: 3 queries 2 s apart from one address, all answered.
    let monitor = UdpSocket::bind("127.0.2.1:0").unwrap();
    monitor
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    for k in 0..3 {
        if k > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        let n = nonce();
        monitor.send_to(&request(4, n), server).unwrap();
        let mut buf = [0u8; 128];
        let (len, _) = monitor.recv_from(&mut buf).expect("monitor answered");
        let h = Header::parse(&buf[..len]).unwrap();
        assert_eq!(h.stratum, 2);
    }

    let log = daemon.stop();
    assert!(summary_count(&log, "rate_limited") > 2000, "{log}");
    assert!(summary_count(&log, "kod") >= 1, "{log}");
}

#[test]
fn localhost_rule_exempts_from_limiting() {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start(
        &format!(
            "listen {server}\nworkers 1\nclock software\nlocal stratum 2\n\
             restrict default kod limited\nrestrict 127.0.0.1\nratelimit interval 3 burst 2 leak 8\n"
        ),
        server,
    );
    let sockets: Vec<UdpSocket> = (0..4)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let t = flood(&sockets, server, 300);
    let log = daemon.stop();
    assert_eq!(t.normal_unraised, 300, "127.0.0.1 is unrestricted:\n{log}");
    assert_eq!(summary_count(&log, "rate_limited"), 0, "{log}");
}

/// chrony's client obeys our RATE Kiss-o'-Death: it logs it and polls less
/// often. (A KoD with zero receive and transmit timestamps is discarded by
/// chrony as invalid, and the client kept polling every 2 s.)
#[test]
fn chronyd_client_backs_off_after_a_kod() {
    if !have_tool("chronyd", "chrony") {
        return;
    }
    for backend in BACKENDS {
        let port = free_port();
        let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let daemon = Daemon::start(
            &format!(
                "listen {server}\nworkers 1\nio {backend}\nclock software\nlocal stratum 2\n\
                 restrict default kod limited\nratelimit interval 3 burst 1 leak 8\n"
            ),
            server,
        );
        let dir = scratch_dir("chronyd-kod");
        // The client polls from its own address so the daemon's start-up probe
        // (from 127.0.0.1) does not use up its burst. iburst sends every 2 s.
        let out = std::process::Command::new("timeout")
            .args([
                "20",
                "chronyd",
                "-Q",
                "-t",
                "9",
                "-f",
                "/dev/null",
                "-u",
                "root",
            ])
            .arg(format!("server 127.0.0.1 port {port} iburst"))
            .arg("bindacqaddress 127.0.0.5")
            .arg(format!("pidfile {}/chronyd.pid", dir.display()))
            .arg("cmdport 0")
            .output()
            .expect("run chronyd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let log = daemon.stop();
        assert!(
            stderr.contains("Received KoD RATE from 127.0.0.1"),
            "{backend}: chronyd did not take the KoD:\n{stderr}\n{log}"
        );
        let received = summary_count(&log, "received");
        let kods = summary_count(&log, "kod");
        // The probe, one answer, one KoD, then silence; without obeying the
        // KoD, iburst keeps going: 5 requests in 9 s. A request over the limit
        // is answered anyway 1 time in 2^8 (leak), and the client polls once
        // more after such an answer. A busy machine may answer the probe
        // late, and the probe is sent again: one more.
        let leaked = summary_count(&log, "leaked");
        assert!(kods >= 1, "{backend}: {log}");
        assert!(
            received <= 4 + leaked,
            "{backend}: {received} requests: the client did not back off\n{stderr}"
        );
    }
}
