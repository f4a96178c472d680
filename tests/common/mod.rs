//! Shared helpers for the integration tests: start the real tachyond binary,
//! query it with a small NTP client, find free ports and loopback addresses.
#![allow(dead_code)]

pub mod fake_ntp;
pub mod hostile;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tachyon::proto::{Header, NtpTimestamp};

pub const BACKENDS: [&str; 2] = ["uring", "mmsg"];

/// A running tachyond, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub config_path: PathBuf,
    pub dir: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh scratch directory under the target dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A UDP port free on both 127.0.0.1 and ::1 right now.
pub fn free_port() -> u16 {
    loop {
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        if UdpSocket::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

impl Daemon {
    /// Starts tachyond with `config` and waits until `probe` answers a query.
    pub fn start(config: &str, probe: SocketAddr) -> Daemon {
        Daemon::start_with(config, probe, &[])
    }

    /// Like [`Daemon::start`], with extra command-line arguments.
    pub fn start_with(config: &str, probe: SocketAddr, args: &[&str]) -> Daemon {
        // Tests never let tachyond near the host clock: as root, `clock auto` would
        // choose the system clock.
        assert!(
            config.lines().any(|l| l.trim() == "clock software"),
            "test configurations must say `clock software`:\n{config}"
        );
        let dir = scratch_dir("tachyond");
        let config_path = dir.join("ntp.conf");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("tachyond.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tachyond"))
            .arg("--config")
            .arg(&config_path)
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .arg("--log-level")
            .arg("debug")
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tachyond");
        let mut daemon = Daemon {
            child: Some(child),
            config_path,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if query(probe, 4, Duration::from_millis(200)).is_some() {
                return daemon;
            }
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tachyond exited with {status}:\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "tachyond did not answer on {probe}:\n{}",
                daemon.log()
            );
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident memory (kB) and thread count, from /proc.
    pub fn rss_kb_and_threads(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("Threads:"))
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("tachyond.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Stops the daemon with SIGTERM and returns its log.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.log()
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("tachyond did not stop on SIGTERM");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client request with a random-looking transmit nonce.
pub fn request(version: u8, nonce: u64) -> [u8; 48] {
    let mut r = [0u8; 48];
    r[0] = (version << 3) | 3;
    r[2] = 6;
    r[40..48].copy_from_slice(&nonce.to_be_bytes());
    r
}

pub fn nonce() -> u64 {
    let t = tachyon::clock::system_unix_ns() as u64;
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u64;
    (t ^ (n << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// What a query saw.
#[derive(Debug)]
pub struct Answer {
    pub header: Header,
    pub len: usize,
    pub nonce: u64,
    /// Client send and receive times (served = system clock here), Unix ns.
    pub t1_ns: i64,
    pub t4_ns: i64,
}

/// Sends one request and waits for the matching reply.
pub fn query(server: SocketAddr, version: u8, timeout: Duration) -> Option<Answer> {
    let bind: SocketAddr = match server.ip() {
        IpAddr::V4(_) => "127.0.0.1:0".parse().unwrap(),
        IpAddr::V6(_) => "[::1]:0".parse().unwrap(),
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    let nonce = nonce();
    let t1_ns = tachyon::clock::system_unix_ns();
    socket.send_to(&request(version, nonce), server).ok()?;
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            return None;
        };
        let t4_ns = tachyon::clock::system_unix_ns();
        if from != server {
            continue;
        }
        let header = Header::parse(&buf[..len])?;
        if header.origin_ts != NtpTimestamp::from_bits(nonce) {
            continue;
        }
        return Some(Answer {
            header,
            len,
            nonce,
            t1_ns,
            t4_ns,
        });
    }
    None
}

/// Unix nanoseconds of an NTP timestamp near now.
pub fn ntp_to_unix_ns(ts: NtpTimestamp) -> i64 {
    let (s, n) = ts.to_unix_near(tachyon::clock::system_unix_ns() / 1_000_000_000);
    s * 1_000_000_000 + n as i64
}

/// Whether this process may bind port 123 (root or CAP_NET_BIND_SERVICE).
pub fn may_bind_123(addr: &str) -> bool {
    UdpSocket::bind((addr, 123)).is_ok()
}

/// Fails with a clear message when an external tool the tests need is missing,
/// unless TACHYON_SKIP_EXTERNAL=1 asks to skip such tests (then returns false).
pub fn have_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var("TACHYON_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {tool} not installed (TACHYON_SKIP_EXTERNAL=1)");
        return false;
    }
    panic!("{tool} is not installed: run scripts/install-test-deps (Debian package {package})");
}

/// NTPsec's ntpq, as scripts/install-test-deps unpacks it (it conflicts
/// with chrony as a package), ready to run; fails loudly when missing
/// unless TACHYON_SKIP_EXTERNAL=1 (then None).
pub fn ntpq() -> Option<Command> {
    let root = PathBuf::from("/opt/tachyon-tests/ntpsec");
    let script = root.join("usr/bin/ntpq");
    if !script.exists() {
        if std::env::var("TACHYON_SKIP_EXTERNAL").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: {} is missing (TACHYON_SKIP_EXTERNAL=1)",
                script.display()
            );
            return None;
        }
        panic!(
            "{} is missing: run scripts/install-test-deps (it unpacks Debian's ntpsec and \
             python3-ntp there)",
            script.display()
        );
    }
    let mut command = Command::new("python3");
    command
        .arg(script)
        .env("PYTHONPATH", root.join("usr/lib/python3/dist-packages"));
    Some(command)
}

/// Whether io_uring works here (the daemon's own probe). Where it does not,
/// fails with the reason, unless TACHYON_SKIP_EXTERNAL=1 allows skipping.
pub fn uring_available() -> bool {
    match tachyon::server::io::uring::probe() {
        Ok(()) => true,
        Err(e) if std::env::var("TACHYON_SKIP_EXTERNAL").as_deref() == Ok("1") => {
            eprintln!("SKIPPED: io_uring unavailable here: {e} (TACHYON_SKIP_EXTERNAL=1)");
            false
        }
        Err(e) => panic!(
            "io_uring is unavailable here ({e}): the io_uring tests cannot run; set \
             TACHYON_SKIP_EXTERNAL=1 to skip them"
        ),
    }
}

/// A number from the daemon's stop summary ("... answered 17 ...").
pub fn summary_count(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("stopping: "))
        .unwrap_or_else(|| panic!("no stop summary in log:\n{log}"));
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == name {
            if let Some(n) = words
                .next()
                .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            {
                return n;
            }
        }
    }
    panic!("no {name} count in {line}");
}

/// GET /metrics from tachyond's endpoint; returns (content type, body) and
/// checks the status is 200.
pub fn scrape_metrics(addr: SocketAddr) -> (String, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            // Header names are case-insensitive (hyper writes them lowercase).
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// A network namespace of the test's own (only its loopback up), deleted on
/// drop together with its `/etc/netns/NAME` directory, which `ip netns exec`
/// mounts over `/etc` inside it (a resolv.conf of the test's own).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("tachy-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let netns = Netns { name };
        netns.ip(&["netns", "add", &netns.name]);
        netns.ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// Runs `ip ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a file under `/etc/netns/NAME/`, seen at `/etc/FILE` inside.
    pub fn etc_file(&self, file: &str, contents: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), contents).unwrap();
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// Whether namespaces can be made here (root with iproute2); fails loudly
/// otherwise unless TACHYON_SKIP_EXTERNAL=1.
pub fn may_make_netns() -> bool {
    if !have_tool("ip", "iproute2") {
        return false;
    }
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("TACHYON_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("SKIPPED: network namespaces need root (TACHYON_SKIP_EXTERNAL=1)");
        return false;
    }
    panic!("this test makes network namespaces: run it as root, as CI does");
}
