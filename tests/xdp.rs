//! `io xdp` end to end: two network namespaces joined by veth, tachyond in
//! one with its XDP program on the veth end there, clients in the other.
//! Real clients (ntpdig, chronyd -Q) are answered over IPv4 and IPv6 by the
//! XDP workers (the server namespace's kernel sees none of those
//! datagrams); ping, TCP and UDP to another port still reach that kernel;
//! the hostile corpus gets no wrong answer; restrict and rate limiting with
//! KoD and the metrics work; receive stamps are checked against the
//! kernel's; after SIGTERM and after SIGKILL no program is left attached.
//!
//! Needs root, iproute2, and a kernel with XDP and AF_XDP (6.1 or later);
//! where that is missing the tests fail, unless TACHYON_SKIP_EXTERNAL=1.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::hostile::{corpus, send_and_check, Rng};
use common::*;
use tachyon::proto::Header;

static NEXT_PAIR: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair: the server end `10.201.N.1`,
/// `fd20:N::1`; the client end `.2`, `::2`.
struct Pair {
    server: Netns,
    client: Netns,
    /// The server's end of the veth pair, and the client's.
    veth: String,
    peer: String,
    n: u32,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        Pair::with_queues(tag, 1)
    }

    /// A pair whose veth ends have `queues` RX and TX queues each.
    fn with_queues(tag: &str, queues: u32) -> Pair {
        let n = NEXT_PAIR.fetch_add(1, Ordering::Relaxed) + 1;
        let server = Netns::new(&format!("{tag}s"));
        let client = Netns::new(&format!("{tag}c"));
        let veth = format!("tx{}s{n}", std::process::id() % 10_000);
        let peer = format!("tx{}c{n}", std::process::id() % 10_000);
        let q = queues.to_string();
        server.ip(&[
            "link",
            "add",
            &veth,
            "netns",
            &server.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &client.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        for (ns, dev, host) in [(&server, &veth, 1), (&client, &peer, 2)] {
            let v4 = format!("10.201.{n}.{host}/24");
            let v6 = format!("fd20:{n}::{host}/64");
            ns.ip(&["-n", &ns.name, "addr", "add", &v4, "dev", dev]);
            ns.ip(&["-n", &ns.name, "addr", "add", &v6, "dev", dev, "nodad"]);
            ns.ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        Pair {
            server,
            client,
            veth,
            peer,
            n,
        }
    }

    fn v4(&self, port: u16) -> SocketAddr {
        format!("10.201.{}.1:{port}", self.n).parse().unwrap()
    }

    fn v6(&self, port: u16) -> SocketAddr {
        format!("[fd20:{}::1]:{port}", self.n).parse().unwrap()
    }

    /// Whether an XDP program is attached to the server's veth end.
    fn xdp_attached(&self) -> bool {
        let out = self
            .server
            .command("ip")
            .args(["link", "show", "dev", &self.veth])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    /// Datagrams the server namespace's kernel delivered to UDP sockets
    /// (IPv4 and IPv6).
    fn kernel_udp_in(&self) -> u64 {
        let read = |file: &str, key: &str| -> u64 {
            let out = self.server.command("cat").arg(file).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if key == "Udp6InDatagrams" {
                return text
                    .lines()
                    .find_map(|l| l.strip_prefix("Udp6InDatagrams"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
            }
            let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
            let names: Vec<&str> = udp.next().unwrap().split_whitespace().collect();
            let values: Vec<&str> = udp.next().unwrap().split_whitespace().collect();
            let i = names.iter().position(|n| *n == key).unwrap();
            values[i].parse().unwrap()
        };
        read("/proc/net/snmp", "InDatagrams") + read("/proc/net/snmp6", "Udp6InDatagrams")
    }

    /// Runs `f` on a thread inside the client namespace.
    fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.client.name, f)
    }
}

/// Runs `f` on a thread of its own that has entered network namespace `name`.
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace descriptor that
        // stays open for the call.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// A tachyond running in the pair's server namespace; killed when dropped.
struct XdpDaemon {
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl XdpDaemon {
    /// Starts tachyond and waits until it answers a query from the client.
    fn start(pair: &Pair, config: &str) -> XdpDaemon {
        let mut daemon = XdpDaemon::spawn(pair, config);
        let probe = pair.v4(123);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if pair.in_client(move || ask(probe, nonce()).is_some()) {
                return daemon;
            }
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tachyond exited with {status}:\n{}", daemon.log());
            }
            assert!(Instant::now() < deadline, "no answer:\n{}", daemon.log());
        }
    }

    /// Starts tachyond and waits until its workers run.
    fn spawn(pair: &Pair, config: &str) -> XdpDaemon {
        assert!(config.contains("clock software"));
        let dir = scratch_dir("xdp");
        let path = dir.join("ntp.conf");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.join("tachyond.log")).unwrap();
        let child = pair
            .server
            .command(env!("CARGO_BIN_EXE_tachyond"))
            .arg("--config")
            .arg(&path)
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tachyond");
        let mut daemon = XdpDaemon {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !daemon.log().contains("serving on") {
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tachyond exited with {status}:\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "tachyond did not start:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tachyond.log")).unwrap_or_default()
    }

    /// Sends `signal`, waits for the exit, and returns the log.
    fn stop_with(mut self, signal: nix::sys::signal::Signal) -> String {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "tachyond did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }
}

impl Drop for XdpDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request from a fresh socket; the reply (bytes and client times).
fn ask(server: SocketAddr, nonce: u64) -> Option<(Vec<u8>, i64, i64)> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    let t1 = tachyon::clock::system_unix_ns();
    socket.send_to(&request(4, nonce), server).ok()?;
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    let t4 = tachyon::clock::system_unix_ns();
    (from == server).then(|| (buf[..n].to_vec(), t1, t4))
}

/// Whether this kernel can run the tests; fails loudly unless skipping is asked.
fn xdp_testable() -> bool {
    if !may_make_netns() {
        return false;
    }
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy().to_string();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (6, 1) {
        return true;
    }
    if std::env::var("TACHYON_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("SKIPPED: io xdp needs Linux 6.1+, this is {release} (TACHYON_SKIP_EXTERNAL=1)");
        return false;
    }
    panic!("io xdp needs Linux 6.1 or later (this is {release}); TACHYON_SKIP_EXTERNAL=1 skips");
}

fn config(pair: &Pair, extra: &str) -> String {
    format!(
        "listen {}\nlisten {}\nio xdp {}\nclock software\nlocal stratum 2\n{extra}",
        pair.v4(123),
        pair.v6(123),
        pair.veth
    )
}

fn run_client(pair: &Pair, program: &str, args: &[&str]) -> (bool, String) {
    let out = pair
        .client
        .command("timeout")
        .arg("20")
        .arg(program)
        .args(args)
        .output()
        .expect("run client");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn real_clients_are_answered_by_the_xdp_path_and_the_rest_reaches_the_kernel() {
    if !xdp_testable() || !have_tool("ntpdig", "ntpsec-ntpdate") || !have_tool("chronyd", "chrony")
    {
        return;
    }
    let pair = Pair::new("xr");
    let metrics = pair.v4(9123);
    let daemon = XdpDaemon::start(&pair, &config(&pair, &format!("metrics {metrics}\n")));
    assert!(pair.xdp_attached(), "no XDP program on {}", pair.veth);
    let kernel_before = pair.kernel_udp_in();

    for server in [pair.v4(123), pair.v6(123)] {
        let ip = server.ip().to_string();
        let (ok, text) = run_client(&pair, "ntpdig", &["--json", "-t", "3", &ip]);
        assert!(ok && text.contains("\"stratum\":2"), "ntpdig {ip}: {text}");
        let dir = scratch_dir("xdp-chronyd");
        let (ok, text) = run_client(
            &pair,
            "chronyd",
            &[
                "-Q",
                "-f",
                "/dev/null",
                "-u",
                "root",
                &format!("server {ip} iburst maxsamples 4"),
                &format!("pidfile {}/chronyd.pid", dir.display()),
                "cmdport 0",
            ],
        );
        assert!(
            ok && text.contains("System clock wrong by"),
            "chronyd -Q {ip}: {text}"
        );
    }
    assert_eq!(
        pair.kernel_udp_in(),
        kernel_before,
        "the server namespace's kernel saw NTP datagrams: the XDP path did not answer them"
    );

    // What is not NTP to a served address reaches the kernel.
    let (ok, text) = run_client(
        &pair,
        "ping",
        &["-c", "1", "-W", "2", &pair.v4(0).ip().to_string()],
    );
    assert!(ok, "ping: {text}");
    let (content_type, body) = pair.in_client(move || scrape_metrics(metrics));
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let answered = |family: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with("tachyon_requests_total{"))
            .filter(|l| l.contains(family) && l.contains("outcome=\"answered\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // ntpdig and chronyd -Q, over each family.
    assert!(answered("ipv4") >= 3.0, "metrics:\n{body}");
    assert!(answered("ipv6") >= 2.0, "metrics:\n{body}");
    // Worker 0 serves the kernel's sockets, worker 1 queue 0: all went to
    // the AF_XDP worker.
    let packets = |worker: &str| -> f64 {
        body.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "tachyon_worker_packets_total{{worker=\"{worker}\"}} "
                ))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no packet count of worker {worker}:\n{body}"))
    };
    assert_eq!(packets("0"), 0.0, "the socket worker got requests:\n{body}");
    assert!(
        packets("1") >= 5.0,
        "the AF_XDP worker got too few:\n{body}"
    );
    // UDP to another port, from port 123 (as an upstream's reply comes).
    let other = pair.v4(40123);
    let echo = std::thread::spawn({
        let name = pair.server.name.clone();
        move || {
            in_netns(&name, move || {
                let s = UdpSocket::bind(other).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = s.recv_from(&mut buf).expect("the kernel got the datagram");
                s.send_to(&buf[..n], from).unwrap();
            })
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let client_v4 = format!("10.201.{}.2:123", pair.n);
    let echoed = pair.in_client(move || {
        let s = UdpSocket::bind(client_v4).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(b"not ntp", other).unwrap();
        let mut buf = [0u8; 64];
        s.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec()).ok()
    });
    echo.join().unwrap();
    assert_eq!(echoed.as_deref(), Some(&b"not ntp"[..]));
    let log = daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(log.contains("AF_XDP on"), "{log}");
    assert!(summary_count(&log, "answered") >= 5, "{log}");
    assert!(!pair.xdp_attached(), "the XDP program outlived tachyond");
}

#[test]
fn the_hostile_corpus_gets_no_wrong_answer_through_xdp() {
    if !xdp_testable() {
        return;
    }
    let pair = Pair::new("xh");
    let daemon = XdpDaemon::start(&pair, &config(&pair, ""));
    let server = pair.v4(123);
    let kernel_before = pair.kernel_udp_in();
    let datagrams: Vec<_> = corpus(&mut Rng(0x5eed_0000_0000_0d9d))
        .into_iter()
        // Larger than the MTU: IP fragments, which are the kernel's
        // (tests/malformed.rs covers them on the socket path).
        .filter(|(d, _)| d.len() <= 1400)
        .collect();
    // The program leaves mode 6 (control queries) to the kernel's sockets.
    let mode_6 = datagrams
        .iter()
        .filter(|(d, _)| d.first().is_some_and(|b| b & 7 == 6))
        .count() as u64;
    let (answered, must_answer, replies) = pair.in_client(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        send_and_check(&socket, server, &datagrams, "xdp")
    });
    assert!(
        answered * 100 >= must_answer * 99,
        "answered {answered} of {must_answer} valid requests"
    );
    let kernel = pair.kernel_udp_in() - kernel_before;
    let log = daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(summary_count(&log, "malformed") >= 200, "{log}");
    assert_eq!(
        kernel, mode_6,
        "datagrams that went to the kernel's sockets, against the mode 6 ones sent"
    );
    eprintln!("xdp: {replies} replies, {answered} of {must_answer} valid requests answered");
}

#[test]
fn restrict_and_rate_limiting_with_kod_through_xdp() {
    if !xdp_testable() {
        return;
    }
    let pair = Pair::new("xl");
    let rules = "restrict default kod limited\nratelimit interval 3 burst 2 leak 8\n";
    let daemon = XdpDaemon::start(&pair, &config(&pair, rules));
    let server = pair.v4(123);
    let (answers, kods) = pair.in_client(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let (mut answers, mut kods) = (0, 0);
        for i in 0..30u64 {
            socket.send_to(&request(4, 0xabc0 + i), server).unwrap();
            let mut buf = [0u8; 128];
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                let h = Header::parse(&buf[..n]).unwrap();
                assert!(n <= 48);
                if &h.reference_id == b"RATE" {
                    assert!(!h.transmit_ts.is_zero() && !h.receive_ts.is_zero());
                    kods += 1;
                } else {
                    answers += 1;
                }
            }
        }
        (answers, kods)
    });
    let log = daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(
        (1..=5).contains(&answers),
        "{answers} answers of 30 over the limit: {log}"
    );
    assert!(kods >= 1, "no KoD: {log}");
    // A KoD can be lost to a busy machine, never invented.
    assert!(summary_count(&log, "kod") >= kods, "{log}");

    // A client under `ignore` gets nothing.
    let pair = Pair::new("xd");
    let rule = format!("restrict 10.201.{}.0 mask 255.255.255.0 ignore\n", pair.n);
    let daemon = XdpDaemon::spawn(&pair, &config(&pair, &rule));
    let server = pair.v4(123);
    let answered = pair.in_client(move || (0..5).filter(|i| ask(server, 77 + i).is_some()).count());
    let log = daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(answered, 0, "a client under `ignore` was answered: {log}");
    assert!(summary_count(&log, "denied") >= 5, "{log}");
}

#[test]
fn no_program_is_left_after_sigterm_or_sigkill() {
    if !xdp_testable() {
        return;
    }
    use nix::sys::signal::Signal;
    let pair = Pair::new("xk");
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let daemon = XdpDaemon::start(&pair, &config(&pair, ""));
        assert!(pair.xdp_attached());
        daemon.stop_with(signal);
        let deadline = Instant::now() + Duration::from_secs(3);
        while pair.xdp_attached() {
            assert!(
                Instant::now() < deadline,
                "an XDP program is still attached after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One exchange's client-measured one-way times on the clock the
/// namespaces share: (T2 − T1, T4 − T3) in ns, after checking its order
/// T1 ≤ T2 ≤ T3 ≤ T4 (T3 to within its estimate's error).
fn exchange(server: SocketAddr, nonce: u64) -> Option<(i64, i64)> {
    let (reply, t1, t4) = ask(server, nonce)?;
    let h = Header::parse(&reply).unwrap();
    let t2 = ntp_to_unix_ns(h.receive_ts);
    let t3 = ntp_to_unix_ns(h.transmit_ts);
    // The NTP format's resolution is 0.23 ns; allow 2 ns of rounding. A
    // basic reply's T3 is an estimate of its departure (a clock read plus
    // the learned lead to the driver, off by up to 2 µs at p99 in
    // docs/benchmarks.md, more when a reply leaves faster than the lead
    // learned on a busy machine), and the one-way trip on veth is about as
    // short: it may come after T4 (seen: 383 ns, and 2.2 µs during a CI
    // build). 10 µs still catches a T3 from the wrong clock or scale.
    assert!(
        t1 <= t2 + 2 && t2 <= t3 + 2 && t3 <= t4 + 10_000,
        "{server}: {t1} {t2} {t3} {t4}"
    );
    Some((t2 - t1, t4 - t3))
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The XDP receive stamp against the kernel's socket stamp, on the same
/// path at the same time. On veth the kernel stamps a datagram as the
/// sender hands it over (`netif_rx`), before any XDP program could run;
/// with an XDP program attached, veth delivers through NAPI instead, and
/// the kernel stamps after the program ran. So the like-for-like
/// comparison is a second tachyond on the kernel's sockets (another port,
/// passed by the program) queried in alternation with the XDP one: the
/// XDP stamp must not come later. Where the kernel refuses
/// `bpf_xdp_adjust_meta` to XDP programs, tachyond loads the program
/// without stamps and says so; its workers then read the clock as they
/// take a batch from the ring, after the wake-up: within 50 µs of the
/// kernel's stamp here, and never missing.
#[test]
fn receive_stamps_agree_with_the_kernels() {
    if !xdp_testable() {
        return;
    }
    let pair = Pair::new("xt");
    let xdp_daemon = XdpDaemon::start(&pair, &config(&pair, ""));
    let kernel_daemon = XdpDaemon::spawn(
        &pair,
        &format!(
            "listen {}\nio mmsg\nworkers 1\nclock software\nlocal stratum 2\n",
            pair.v4(1123)
        ),
    );
    let (xdp, kernel) = (pair.v4(123), pair.v4(1123));
    let (via_xdp, via_kernel) = pair.in_client(move || {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..400u64 {
            // Each server first in every other round: the first exchange
            // after the pause runs on colder caches.
            if i % 2 == 0 {
                a.extend(exchange(xdp, 0x5a5a_0000 + 2 * i));
                b.extend(exchange(kernel, 0x5a5a_0001 + 2 * i));
            } else {
                b.extend(exchange(kernel, 0x5a5a_0001 + 2 * i));
                a.extend(exchange(xdp, 0x5a5a_0000 + 2 * i));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (a, b)
    });
    drop(kernel_daemon);
    let log = xdp_daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(summary_count(&log, "rx_stamp_missing"), 0, "{log}");
    assert!(via_xdp.len() >= 380 && via_kernel.len() >= 380);
    let up = |v: &[(i64, i64)]| median(v.iter().map(|x| x.0).collect());
    let down = |v: &[(i64, i64)]| median(v.iter().map(|x| x.1).collect());
    let (xdp_up, kernel_up) = (up(&via_xdp), up(&via_kernel));
    eprintln!(
        "median T2-T1 / T4-T3: xdp {xdp_up} / {} ns, kernel socket behind XDP_PASS {kernel_up} / {} ns",
        down(&via_xdp),
        down(&via_kernel)
    );
    let stamped_in_xdp = log.contains("receive stamps in XDP");
    let read_by_workers = log.contains("receive stamps read by the workers")
        && log.contains("the kernel refused the XDP program that stamps receive times");
    assert!(stamped_in_xdp || read_by_workers, "which stamps? {log}");
    let bound = if stamped_in_xdp { 1_000 } else { 50_000 };
    assert!(
        xdp_up <= kernel_up + bound,
        "xdp {xdp_up} ns, kernel {kernel_up} ns (stamped in XDP: {stamped_in_xdp})"
    );
}

#[test]
fn tcp_jumbo_frames_and_mode_6_reach_the_kernel_beside_xdp() {
    if !xdp_testable() {
        return;
    }
    let pair = Pair::new("xc");
    // Jumbo frames: a datagram of 3,000 bytes travels whole, in one frame
    // longer than the program redirects.
    for (ns, dev) in [(&pair.server, &pair.veth), (&pair.client, &pair.peer)] {
        ns.ip(&["-n", &ns.name, "link", "set", dev, "mtu", "9000"]);
    }
    let metrics = pair.v4(9124);
    let daemon = XdpDaemon::start(&pair, &config(&pair, &format!("metrics {metrics}\n")));
    let connected = pair
        .in_client(move || TcpStream::connect_timeout(&metrics, Duration::from_secs(3)).is_ok());
    assert!(
        connected,
        "no TCP connection to {metrics} through the XDP interface"
    );
    let server = pair.v4(123);
    pair.in_client(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut big = vec![0u8; 3000];
        big[..48].copy_from_slice(&request(4, 0xb16));
        socket.send_to(&big, server).unwrap();
        // An ntpq query (mode 6, READSTAT): the kernel's sockets answer those.
        socket
            .send_to(&[0x16, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], server)
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    let (_, body) = pair.in_client(move || scrape_metrics(metrics));
    let log = daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    // Worker 0 serves the kernel's sockets: it got the jumbo datagram
    // (and counted it oversized: more than its receive buffer) and the
    // mode 6 query.
    assert!(
        body.contains("tachyon_worker_packets_total{worker=\"0\"} 2"),
        "the jumbo frame and the mode 6 query did not reach the socket worker:\n{body}"
    );
    assert_eq!(summary_count(&log, "oversized"), 1, "{log}");
}

/// The MAC address of `dev` in namespace `ns`.
fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = ns
        .command("cat")
        .arg(format!("/sys/class/net/{dev}/address"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    bytes.try_into().expect("a MAC address")
}

/// An NTP request in an 802.1Q-tagged (VLAN 7) IPv4 frame from the client's
/// end to the server's.
fn tagged_request(pair: &Pair, macs: ([u8; 6], [u8; 6]), nonce: u64) -> Vec<u8> {
    use tachyon::server::io::xdp::frame::{fold, sum16, udp_checksum};
    let (server_mac, client_mac) = macs;
    let source = std::net::Ipv4Addr::new(10, 201, pair.n as u8, 2);
    let destination = std::net::Ipv4Addr::new(10, 201, pair.n as u8, 1);
    let mut udp = Vec::new();
    udp.extend_from_slice(&40007u16.to_be_bytes());
    udp.extend_from_slice(&123u16.to_be_bytes());
    udp.extend_from_slice(&(8u16 + 48).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&request(4, nonce));
    let checksum = udp_checksum(source.into(), destination.into(), &udp);
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&source.octets());
    ip.extend_from_slice(&destination.octets());
    let checksum = !fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = Vec::new();
    frame.extend_from_slice(&server_mac);
    frame.extend_from_slice(&client_mac);
    frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
    frame.extend(ip);
    frame.extend(udp);
    frame
}

/// A packet socket on `ifindex` (every protocol, VLAN tags reported), and
/// the frames it reads until `wait` passes: (data, VLAN tag if any).
struct PacketSocket(std::os::fd::OwnedFd);

const SOL_PACKET: i32 = 263;
const PACKET_AUXDATA: i32 = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;

impl PacketSocket {
    fn open(ifindex: u32) -> PacketSocket {
        use std::os::fd::FromRawFd;
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol as i32) };
        assert!(raw >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        // SAFETY: raw is a fresh descriptor nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain integers; zero is valid.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol;
        address.sll_ifindex = ifindex as i32;
        let one: i32 = 1;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: each call passes a live value of the size given.
        unsafe {
            assert_eq!(
                libc::bind(
                    raw,
                    (&address as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32
                ),
                0
            );
            assert_eq!(
                libc::setsockopt(
                    raw,
                    SOL_PACKET,
                    PACKET_AUXDATA,
                    (&one as *const i32).cast(),
                    4
                ),
                0
            );
            assert_eq!(
                libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32
                ),
                0
            );
        }
        PacketSocket(fd)
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: frame is a live buffer of the length given.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// The next frame and its VLAN tag (from PACKET_AUXDATA: the kernel
    /// takes the tag out of the data of received frames).
    fn receive(&self) -> Option<(Vec<u8>, Option<u16>)> {
        let mut data = [0u8; 2048];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain integers and pointers; zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: msg points at live buffers of the sizes it gives.
        let n = unsafe { libc::recvmsg(self.0.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return None;
        }
        // Control messages, read as bytes: cmsghdr is (len: usize, level:
        // i32, type: i32), then the data, each aligned to 8.
        let bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let bytes = &bytes[..msg.msg_controllen];
        let mut at = 0;
        let mut tag = None;
        while at + 16 <= bytes.len() {
            let len = usize::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
            let level = i32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            let kind = i32::from_ne_bytes(bytes[at + 12..at + 16].try_into().unwrap());
            if len < 16 || at + len > bytes.len() {
                break;
            }
            if level == SOL_PACKET && kind == PACKET_AUXDATA && len >= 16 + 20 {
                let aux = &bytes[at + 16..at + 36];
                let status = u32::from_ne_bytes(aux[0..4].try_into().unwrap());
                let tci = u16::from_ne_bytes(aux[16..18].try_into().unwrap());
                if status & TP_STATUS_VLAN_VALID != 0 {
                    tag = Some(tci);
                }
            }
            at += (len + 7) & !7;
        }
        Some((data[..n as usize].to_vec(), tag))
    }
}

/// A request in a VLAN-tagged frame, injected on the client's end, is
/// answered by the XDP path with a tagged reply whose checksums verify.
#[test]
fn a_vlan_tagged_request_gets_a_tagged_reply() {
    use tachyon::server::io::xdp::frame::{fold, parse, sum16};
    if !xdp_testable() {
        return;
    }
    let pair = Pair::new("xv");
    let daemon = XdpDaemon::start(&pair, &config(&pair, ""));
    let peer = pair.peer.clone();
    let macs = (
        mac_of(&pair.server, &pair.veth),
        mac_of(&pair.client, &peer),
    );
    let nonce = 0x7a6_0000_1234;
    let frame = tagged_request(&pair, macs, nonce);
    let server = pair.v4(123);
    let replies = pair.in_client(move || {
        let ifindex = nix::net::if_::if_nametoindex(peer.as_str()).unwrap();
        let socket = PacketSocket::open(ifindex);
        socket.send(&frame);
        let mut replies = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Some((data, tag)) = socket.receive() else {
                continue;
            };
            if let Ok(udp) = parse(&data) {
                if udp.source_port == 123 && SocketAddr::new(udp.source, 123) == server {
                    replies.push((data, tag, udp));
                }
            }
        }
        replies
    });
    drop(daemon);
    assert_eq!(replies.len(), 1, "one tagged reply expected");
    let (data, tag, udp) = &replies[0];
    assert_eq!(
        tag.map(|t| t & 0x0fff),
        Some(7),
        "the reply lost its VLAN tag"
    );
    assert_eq!(udp.destination_port, 40007);
    assert_eq!(&data[0..6], &macs.1, "to the client's MAC");
    let payload = &data[udp.payload.clone()];
    let header = Header::parse(payload).unwrap();
    assert_eq!(header.origin_ts.to_bits(), nonce);
    let ip = udp.ip_offset;
    assert_eq!(
        fold(sum16(&data[ip..ip + 20], 0)),
        0xffff,
        "IPv4 header checksum"
    );
    let udp_bytes = &data[udp.payload.start - 8..udp.payload.end];
    let mut pseudo = sum16(&data[ip + 12..ip + 20], 0);
    pseudo += 17 + udp_bytes.len() as u32;
    assert_eq!(fold(sum16(udp_bytes, pseudo)), 0xffff, "UDP checksum");
}

/// Two queues, two AF_XDP workers: clients spread over the veth's queues
/// by flow are all answered, by both workers.
#[test]
fn two_queues_are_served_by_two_workers() {
    if !xdp_testable() {
        return;
    }
    let pair = Pair::with_queues("xq", 2);
    let metrics = pair.v4(9125);
    let daemon = XdpDaemon::start(&pair, &config(&pair, &format!("metrics {metrics}\n")));
    let server = pair.v4(123);
    let answered = pair.in_client(move || {
        (0..200u64)
            .filter(|i| ask(server, 0x9900 + i).is_some())
            .count()
    });
    let (_, body) = pair.in_client(move || scrape_metrics(metrics));
    let log = daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(log.contains("2 queue(s)"), "{log}");
    assert!(answered >= 198, "{answered} of 200 answered");
    let packets = |worker: &str| -> f64 {
        body.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "tachyon_worker_packets_total{{worker=\"{worker}\"}} "
                ))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (q0, q1) = (packets("1"), packets("2"));
    eprintln!("queue 0: {q0} requests, queue 1: {q1}");
    assert_eq!(packets("0"), 0.0, "the socket worker got requests");
    assert!(q0 >= 10.0 && q1 >= 10.0, "queue 0 got {q0}, queue 1 {q1}");
}
