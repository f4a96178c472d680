//! Whole-file tests of the configuration parser.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::*;

const SEED: &str = "\
driftfile /var/lib/ntp/ntp.drift
server ntp_server_1 iburst
server ntp_server_2 iburst
server ntp_server_3 iburst
server ntp_server_4 iburst
server ntp_server_5 iburst
# By default, exchange time with everybody, but don't allow configuration.
restrict -4 default kod notrap nomodify nopeer noquery limited
restrict -6 default kod notrap nomodify nopeer noquery limited
# Local users may interrogate the ntp server more closely.
restrict 127.0.0.1
restrict ::1
";

const POOL_FLAGS: RestrictFlags = RestrictFlags(
    RestrictFlags::KOD.0
        | RestrictFlags::NOTRAP.0
        | RestrictFlags::NOMODIFY.0
        | RestrictFlags::NOPEER.0
        | RestrictFlags::NOQUERY.0
        | RestrictFlags::LIMITED.0,
);

fn ok(text: &str) -> Config {
    match Config::parse(text, "ntp.conf") {
        Ok(config) => config,
        Err(e) => panic!("{e}"),
    }
}

fn err(text: &str) -> String {
    match Config::parse(text, "ntp.conf") {
        Ok(config) => panic!("accepted: {text:?} -> {config:?}"),
        Err(e) => {
            assert_eq!(e.source, "ntp.conf");
            e.to_string()
        }
    }
}

fn net(addr: &str, prefix_len: u8) -> RestrictTarget {
    RestrictTarget::Net {
        addr: addr.parse().unwrap(),
        prefix_len,
    }
}

fn sock(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn check_seed(config: &Config) {
    assert_eq!(config.servers.len(), 5);
    for (i, s) in config.servers.iter().enumerate() {
        assert_eq!(s.kind, SourceKind::Server);
        assert_eq!(s.host, format!("ntp_server_{}", i + 1));
        assert!(s.iburst);
        assert!(!s.burst && !s.prefer && !s.noselect);
        assert_eq!((s.minpoll, s.maxpoll), (6, 10));
        assert_eq!(s.line, i + 2);
    }
    assert_eq!(
        config.driftfile.as_deref(),
        Some(Path::new("/var/lib/ntp/ntp.drift"))
    );
    assert_eq!(config.leapfile, None);
    let rules: Vec<_> = config
        .restrict
        .iter()
        .map(|r| (r.target, r.flags, r.line))
        .collect();
    assert_eq!(
        rules,
        [
            (
                RestrictTarget::Default { family: Family::V4 },
                POOL_FLAGS,
                8
            ),
            (
                RestrictTarget::Default { family: Family::V6 },
                POOL_FLAGS,
                9
            ),
            (net("127.0.0.1", 32), RestrictFlags::empty(), 11),
            (net("::1", 128), RestrictFlags::empty(), 12),
        ]
    );
    assert!(config.listen.is_empty());
    assert_eq!(config.workers, None);
    assert_eq!(config.io, IoChoice::Auto);
    assert_eq!(config.metrics, None);
    assert_eq!(config.clock, ClockChoice::Auto);
    assert_eq!(config.local_stratum, None);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn seed_file_loads_as_is() {
    let config = ok(SEED);
    assert_eq!(config.source, "ntp.conf");
    check_seed(&config);
    assert_eq!(
        POOL_FLAGS.to_string(),
        "kod limited nomodify noquery nopeer notrap"
    );
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("tachyon-config-test-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_reads_a_file_and_reports_failures() {
    let file = TempFile::new("seed.conf", SEED.as_bytes());
    let config = Config::load(&file.0).unwrap();
    assert_eq!(config.source, file.0.display().to_string());
    check_seed(&config);

    let missing = std::env::temp_dir().join("tachyon-config-test-no-such-file.conf");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!(e.line, 0);
    assert_eq!(e.source, missing.display().to_string());
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read", missing.display())),
        "{shown}"
    );
    assert!(shown.contains("No such file"), "{shown}");

    let file = TempFile::new("latin1.conf", b"server a iburst\nserver b\xe9 iburst\n");
    let e = Config::load(&file.0).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("UTF-8"), "{e}");
}

#[test]
fn embedded_default_parses() {
    assert!(Config::parse(EMBEDDED_DEFAULT, "x").is_ok());
    let config = Config::embedded_default();
    assert_eq!(config.source, "<embedded default>");
    let hosts: Vec<&str> = config.servers.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "0.pool.ntp.org",
            "1.pool.ntp.org",
            "2.pool.ntp.org",
            "3.pool.ntp.org"
        ]
    );
    assert!(config.servers.iter().all(|s| s.iburst));
    let targets: Vec<_> = config.restrict.iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        [
            RestrictTarget::Default {
                family: Family::Any
            },
            net("127.0.0.1", 32),
            net("::1", 128),
        ]
    );
    assert_eq!(config.restrict[0].flags, POOL_FLAGS);
    assert!(config.restrict[1].flags.is_empty());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.listen.is_empty());
    assert_eq!(
        (config.io, config.clock),
        (IoChoice::Auto, ClockChoice::Auto)
    );
}

#[test]
fn every_directive_and_option() {
    let config = ok("\
server 192.0.2.1 iburst burst prefer minpoll 4 maxpoll 8
server [2001:db8::1] noselect minpoll 3 maxpoll 17
server 2001:db8::2
pool pool.example.org iburst
driftfile /var/lib/tachyon/drift
leapfile /usr/share/zoneinfo/leap-seconds.list
restrict default kod limited nomodify notrap nopeer noquery
restrict 192.0.2.0 mask 255.255.255.0 noserve
restrict 198.51.100.0/24 ignore
restrict -6 2001:db8::/48 noquery
restrict -4 203.0.113.7
listen 192.0.2.10
listen 192.0.2.11:1123
listen ::1
listen [2001:db8::10]:123
workers 4
io uring
metrics 127.0.0.1:9123
clock software
local stratum 10
holdover 600
");
    let shown: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        shown,
        [
            "ntp.conf: local stratum 10: the host clock is served at stratum 10 and the 4 \
          server/pool line(s) are not polled while 'local' is set"
        ]
    );
    let s = &config.servers;
    assert_eq!(s.len(), 4);
    assert_eq!(
        (
            s[0].host.as_str(),
            s[0].iburst,
            s[0].burst,
            s[0].prefer,
            s[0].noselect
        ),
        ("192.0.2.1", true, true, true, false)
    );
    assert_eq!((s[0].minpoll, s[0].maxpoll), (4, 8));
    assert_eq!(s[1].host, "2001:db8::1");
    assert!(s[1].noselect && !s[1].iburst);
    assert_eq!((s[1].minpoll, s[1].maxpoll), (3, 17));
    assert_eq!(s[2].host, "2001:db8::2");
    assert_eq!(
        (s[3].kind, s[3].host.as_str(), s[3].line),
        (SourceKind::Pool, "pool.example.org", 4)
    );
    assert_eq!(
        config.driftfile.as_deref(),
        Some(Path::new("/var/lib/tachyon/drift"))
    );
    assert_eq!(
        config.leapfile.as_deref(),
        Some(Path::new("/usr/share/zoneinfo/leap-seconds.list"))
    );
    let rules: Vec<_> = config
        .restrict
        .iter()
        .map(|r| (r.target, r.flags))
        .collect();
    assert_eq!(
        rules,
        [
            (
                RestrictTarget::Default {
                    family: Family::Any
                },
                POOL_FLAGS
            ),
            (net("192.0.2.0", 24), RestrictFlags::NOSERVE),
            (net("198.51.100.0", 24), RestrictFlags::IGNORE),
            (net("2001:db8::", 48), RestrictFlags::NOQUERY),
            (net("203.0.113.7", 32), RestrictFlags::empty()),
        ]
    );
    assert_eq!(
        config.listen,
        [
            sock("192.0.2.10:123"),
            sock("192.0.2.11:1123"),
            sock("[::1]:123"),
            sock("[2001:db8::10]:123"),
        ]
    );
    assert_eq!(config.workers, Some(4));
    assert_eq!(config.io, IoChoice::Uring);
    assert_eq!(config.metrics, Some(sock("127.0.0.1:9123")));
    assert_eq!(config.clock, ClockChoice::Software);
    assert_eq!(config.local_stratum, Some(10));
    assert_eq!(config.holdover, Some(600));
}

#[test]
fn io_xdp_takes_an_interface_and_options() {
    let xdp = |line: &str| match ok(line).io {
        IoChoice::Xdp(x) => x,
        other => panic!("{line}: {other:?}"),
    };
    let plain = xdp("io xdp eth0");
    assert_eq!(plain.interface, "eth0");
    assert_eq!(
        (plain.queues, plain.native, plain.zerocopy),
        (None, None, None)
    );
    let full = xdp("io xdp enp1s0f0 queues 8 mode native zerocopy off");
    assert_eq!(full.queues, Some(8));
    assert_eq!(full.native, Some(true));
    assert_eq!(full.zerocopy, Some(false));
    assert_eq!(
        format!("io {}", IoChoice::Xdp(full)),
        "io xdp enp1s0f0 queues 8 mode native zerocopy off"
    );
    let with_workers = ok("workers 4\nio xdp eth0\n");
    assert!(with_workers
        .warnings
        .iter()
        .any(|w| w.message.contains("`workers` is not used")));
    assert_eq!(xdp("io xdp eth0 coalesce 0").coalesce_us, Some(0));
    assert_eq!(
        format!("io {}", IoChoice::Xdp(xdp("io xdp eth0 coalesce 50"))),
        "io xdp eth0 mode auto zerocopy auto coalesce 50"
    );
    let generic = xdp("io xdp veth1 zerocopy auto mode generic");
    assert_eq!((generic.native, generic.zerocopy), (Some(false), None));
    for (line, needle) in [
        ("io xdp", "expected an interface name"),
        ("io xdp eth0 queues 0", "queues takes 1..=256"),
        ("io xdp eth0 queues many", "queues \"many\" is not valid"),
        ("io xdp eth0 mode fast", "mode \"fast\" is not valid"),
        ("io xdp eth0 zerocopy", "needs a value"),
        ("io xdp eth0 colour blue", "unknown option"),
        ("io xdp eth0 coalesce 5000", "coalesce takes 0..=1000"),
        (
            "io xdp eth0 coalesce soon",
            "coalesce \"soon\" is not valid",
        ),
        ("io xdp a/b", "not an interface name"),
        ("io xdp sixteen-chars-ab", "not an interface name"),
    ] {
        let shown = err(&format!("{line}\n"));
        assert!(shown.contains(needle), "{line}: {shown}");
    }
}

#[test]
fn keyword_values() {
    for (line, io) in [
        ("io auto", IoChoice::Auto),
        ("io uring", IoChoice::Uring),
        ("io mmsg", IoChoice::Mmsg),
    ] {
        assert_eq!(ok(line).io, io);
        assert_eq!(format!("io {io}"), line);
    }
    for (line, clock) in [
        ("clock auto", ClockChoice::Auto),
        ("clock system", ClockChoice::System),
        ("clock software", ClockChoice::Software),
    ] {
        assert_eq!(ok(line).clock, clock);
        assert_eq!(format!("clock {clock}"), line);
    }
    assert_eq!(ok("workers auto").workers, None);
    assert_eq!(ok("workers 1").workers, Some(1));
    assert_eq!(ok("workers 1024").workers, Some(1024));
    assert_eq!(ok("local stratum 1").local_stratum, Some(1));
    assert_eq!(ok("local stratum 15").local_stratum, Some(15));
    assert_eq!(ok("metrics [::1]:9100").metrics, Some(sock("[::1]:9100")));
}

#[test]
fn errors_name_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "server a\nfrobnicate 1\n",
            2,
            "unknown directive 'frobnicate'",
        ),
        ("\n\nsever a\n", 3, "did you mean \"server\"?"),
        ("server a iburst ibrust\n", 1, "unknown option \"ibrust\""),
        (
            "server a minpoll 2\n",
            1,
            "minpoll: expected a number 3..=17, got \"2\"",
        ),
        ("server a minpoll 18\n", 1, "expected a number 3..=17"),
        ("server a minpoll x\n", 1, "got \"x\""),
        ("server a minpoll\n", 1, "got nothing"),
        (
            "server a\nserver b minpoll 10 maxpoll 8\n",
            2,
            "minpoll 10 is greater than maxpoll 8",
        ),
        (
            "server a version 5\n",
            1,
            "version: expected a number 1..=4",
        ),
        (
            "server\n",
            1,
            "expected a host name or IP address, got nothing",
        ),
        (
            "restrict default kod nomodfy\n",
            1,
            "unknown flag \"nomodfy\"",
        ),
        ("restrict 10.0.0.0 mask 255.0.255.0\n", 1, "not contiguous"),
        ("restrict 10.0.0.0 mask ffff::\n", 1, "same address family"),
        (
            "# x\nrestrict -4 ::1\n",
            2,
            "-4 given, but ::1 is an IPv6 address",
        ),
        ("restrict -6 127.0.0.1\n", 1, "-6 given"),
        ("restrict ntp.example.org\n", 1, "not resolved"),
        ("restrict\n", 1, "got nothing"),
        ("listen localhost\n", 1, "listen: expected an IP address"),
        (
            "listen 192.0.2.1:99999\n",
            1,
            "listen: expected an IP address",
        ),
        ("listen 192.0.2.1 192.0.2.2\n", 1, "got extra \"192.0.2.2\""),
        ("metrics 127.0.0.1\n", 1, "port is required"),
        (
            "server a\n\n\n\n\n\nworkers zero\n",
            7,
            "workers: expected a number 1..=1024 or \"auto\", got \"zero\"",
        ),
        ("workers 0\n", 1, "got \"0\""),
        (
            "rcvbuf lots\n",
            1,
            "rcvbuf: expected a size 16K..256M (bytes, or with K or M), got \"lots\"",
        ),
        ("rcvbuf 8K\n", 1, "got \"8K\""),
        ("rcvbuf 257M\n", 1, "got \"257M\""),
        ("rcvbuf 1G\n", 1, "got \"1G\""),
        ("rcvbuf K\n", 1, "got \"K\""),
        ("rcvbuf -1M\n", 1, "got \"-1M\""),
        ("rcvbuf 99999999999999999999999M\n", 1, "rcvbuf: expected"),
        ("rcvbuf 1M 2M\n", 1, "got extra \"2M\""),
        ("workers 1025\n", 1, "got \"1025\""),
        (
            "holdover 0\n",
            1,
            "holdover: expected a number 1..=86400, got \"0\"",
        ),
        ("holdover 1h\n", 1, "got \"1h\""),
        (
            "holdover\n",
            1,
            "holdover: expected seconds 1..=86400, got nothing",
        ),
        ("workers\n", 1, "got nothing"),
        (
            "io epoll\n",
            1,
            "io: expected \"uring\", \"mmsg\", \"auto\" or \"xdp IFACE\", got \"epoll\"",
        ),
        ("clock atomic\n", 1, "clock: expected"),
        (
            "local stratum 16\n",
            1,
            "local stratum: expected a number 1..=15, got \"16\"",
        ),
        ("local stratum 0\n", 1, "1..=15"),
        ("local orphan\n", 1, "local: expected \"stratum N\""),
        ("local\n", 1, "got nothing"),
        ("local stratum 5 distance 1\n", 1, "got extra"),
        (
            "driftfile\n",
            1,
            "driftfile: expected a file path, got nothing",
        ),
        ("driftfile /a /b\n", 1, "got extra \"/b\""),
        ("leapfile\n", 1, "leapfile: expected a file path"),
        ("peer 192.0.2.1\n", 1, "'peer' is not supported"),
        ("Server a\n", 1, "unknown directive 'Server'"),
    ];
    for &(text, line, needle) in cases {
        let shown = err(text);
        let prefix = format!("ntp.conf:{line}: ");
        assert!(shown.starts_with(&prefix), "{text:?}: {shown}");
        assert!(shown.contains(needle), "{text:?}: {shown}");
    }
    assert_eq!(
        err("server a\n\n\n\n\n\nworkers zero\n"),
        "ntp.conf:7: workers: expected a number 1..=1024 or \"auto\", got \"zero\""
    );
    let unknown = err("frobnicate\n");
    assert!(unknown.contains("supported: server, pool"), "{unknown}");
    let option = err("server a fast\n");
    assert!(
        option.contains("allowed: iburst, burst, prefer"),
        "{option}"
    );
    let flag = err("restrict default fast\n");
    assert!(flag.contains("valid flags: ignore, kod, limited"), "{flag}");
}

#[test]
fn error_display() {
    let e = ConfigError {
        source: "/etc/ntp.conf".into(),
        line: 0,
        message: "cannot read".into(),
    };
    assert_eq!(e.to_string(), "/etc/ntp.conf: cannot read");
    let e = ConfigError { line: 3, ..e };
    assert_eq!(e.to_string(), "/etc/ntp.conf:3: cannot read");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.source().is_none());
    let w = ConfigWarning {
        source: "f".into(),
        line: 2,
        message: "m".into(),
    };
    assert_eq!(w.to_string(), "f:2: m");
}

#[test]
fn ignored_directives_warn() {
    let config = ok("\
server a
statistics loopstats peerstats
restrict source nomodify noquery
enable stats
tinker panic 0
");
    assert_eq!(config.servers.len(), 1);
    assert!(config.restrict.is_empty());
    let shown: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert!(
        shown[0].starts_with("ntp.conf:2: statistics: ignored by tachyon"),
        "{shown:?}"
    );
    assert!(
        shown[1].starts_with("ntp.conf:3: restrict source: ignored by tachyon"),
        "{shown:?}"
    );
    assert!(
        shown[2].starts_with("ntp.conf:4: enable: ignored"),
        "{shown:?}"
    );
    assert!(
        shown[3].starts_with("ntp.conf:5: tinker: ignored"),
        "{shown:?}"
    );

    // Every ignored directive is accepted, with or without arguments.
    for (name, _) in super::ntp::IGNORED {
        let config = ok(&format!("server a\n{name}\n{name} x y z\n"));
        assert_eq!(config.warnings.len(), 2, "{name}");
        assert!(config.warnings[0].message.contains("ignored by tachyon"));
    }
}

#[test]
fn ignored_options_and_flags_warn() {
    let config = ok("\
server a iburst version 3 key 7 xleave true autokey
restrict default kod lowpriotrap nomrulist notrust ntpport version noepeer serverresponse fuzz
");
    let s = &config.servers[0];
    assert!(s.iburst);
    assert_eq!(config.restrict[0].flags, RestrictFlags::KOD);
    let lines: Vec<usize> = config.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]);
    assert!(config.warnings[0].message.contains("\"version 3\""));
}

#[test]
fn repeated_singletons_later_wins() {
    let config = ok("\
server a
driftfile /a
leapfile /l1
workers 2
io mmsg
metrics 127.0.0.1:1
clock system
local stratum 3
driftfile /b
leapfile /l2
workers auto
io uring
metrics 127.0.0.1:2
clock software
local stratum 4
driftfile /c
");
    assert_eq!(config.driftfile.as_deref(), Some(Path::new("/c")));
    assert_eq!(config.leapfile.as_deref(), Some(Path::new("/l2")));
    assert_eq!(config.workers, None);
    assert_eq!(config.io, IoChoice::Uring);
    assert_eq!(config.metrics, Some(sock("127.0.0.1:2")));
    assert_eq!(config.clock, ClockChoice::Software);
    assert_eq!(config.local_stratum, Some(4));
    let shown: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
    // Seven repeated singletons, and 'local' with a server line.
    assert_eq!(shown.len(), 9, "{shown:?}");
    assert!(
        shown[8].starts_with("ntp.conf: local stratum 4: "),
        "{shown:?}"
    );
    assert_eq!(
        shown[0],
        "ntp.conf:9: driftfile: already set on line 2; the value on this line is used"
    );
    assert_eq!(
        shown[7],
        "ntp.conf:16: driftfile: already set on line 9; the value on this line is used"
    );
}

#[test]
fn duplicates_are_merged_or_skipped() {
    let config = ok("\
server a iburst
server A
pool a
restrict default kod
restrict default limited
restrict 10.1.2.3/16 noquery
restrict 10.1.0.0 mask 255.255.0.0 nopeer
listen 127.0.0.1
listen 127.0.0.1:123
");
    assert_eq!(config.servers.len(), 2);
    assert_eq!(config.servers[1].kind, SourceKind::Pool);
    assert_eq!(config.restrict.len(), 2);
    assert_eq!(
        config.restrict[0].flags,
        RestrictFlags::KOD | RestrictFlags::LIMITED
    );
    assert_eq!(config.restrict[1].target, net("10.1.0.0", 16));
    assert_eq!(
        config.restrict[1].flags,
        RestrictFlags::NOQUERY | RestrictFlags::NOPEER
    );
    assert_eq!(config.restrict[1].line, 6);
    assert_eq!(config.listen, [sock("127.0.0.1:123")]);
    let lines: Vec<usize> = config.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [2, 5, 7, 9]);
}

#[test]
fn comments_blank_lines_and_whitespace() {
    let config = ok("\u{feff}# leading comment\r
\r
   server a iburst # trailing comment\r
\tserver\tb\tprefer#no space before the comment\r
restrict default kod # limited\r
driftfile /var/lib/ntp/ntp.drift#comment\r
#server c\r
        \r
workers 2 # 3\r
");
    let hosts: Vec<(&str, bool, bool)> = config
        .servers
        .iter()
        .map(|s| (s.host.as_str(), s.iburst, s.prefer))
        .collect();
    assert_eq!(hosts, [("a", true, false), ("b", false, true)]);
    assert_eq!(config.servers[1].line, 4);
    assert_eq!(config.restrict[0].flags, RestrictFlags::KOD);
    assert_eq!(
        config.driftfile.as_deref(),
        Some(Path::new("/var/lib/ntp/ntp.drift"))
    );
    assert_eq!(config.workers, Some(2));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn empty_file_warns_about_no_upstreams() {
    let config = ok("# nothing here\n");
    assert_eq!(config.warnings.len(), 1);
    assert_eq!(config.warnings[0].line, 0);
    assert!(config.warnings[0]
        .to_string()
        .starts_with("ntp.conf: no 'server'"));
    assert!(ok("local stratum 10\n").warnings.is_empty());
}

#[test]
fn restrict_prefixes() {
    let cases = [
        ("restrict 2001:db8::/32 limited", net("2001:db8::", 32)),
        (
            "restrict 2001:db8:aaaa:bbbb::1/32 limited",
            net("2001:db8::", 32),
        ),
        (
            "restrict 2001:db8:aaaa:bbbb::1 mask ffff:ffff:ffff:ff00:: limited",
            net("2001:db8:aaaa:bb00::", 56),
        ),
        ("restrict -6 2001:db8::1 limited", net("2001:db8::1", 128)),
        (
            "restrict 10.1.2.3 mask 255.255.0.0 limited",
            net("10.1.0.0", 16),
        ),
        ("restrict 10.1.2.3/31 limited", net("10.1.2.2", 31)),
        (
            "restrict -4 10.1.2.3 mask 255.255.255.255 limited",
            net("10.1.2.3", 32),
        ),
        (
            "restrict 0.0.0.0 mask 0.0.0.0 limited",
            RestrictTarget::Default { family: Family::V4 },
        ),
        (
            "restrict ::/0 limited",
            RestrictTarget::Default { family: Family::V6 },
        ),
    ];
    for (line, target) in cases {
        let config = ok(line);
        assert_eq!(config.restrict[0].target, target, "{line}");
        assert_eq!(config.restrict[0].flags, RestrictFlags::LIMITED, "{line}");
    }
    let target = ok("restrict 10.1.2.3 mask 255.255.0.0").restrict[0].target;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(target.matches(ip("10.1.200.7")));
    assert!(!target.matches(ip("10.2.0.1")));
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_token_lines_never_panic() {
    const TOKENS: &[&str] = &[
        "server",
        "pool",
        "driftfile",
        "leapfile",
        "restrict",
        "listen",
        "workers",
        "io",
        "metrics",
        "clock",
        "local",
        "stratum",
        "statistics",
        "tos",
        "peer",
        "iburst",
        "burst",
        "prefer",
        "noselect",
        "minpoll",
        "maxpoll",
        "version",
        "key",
        "xleave",
        "true",
        "autokey",
        "default",
        "source",
        "mask",
        "-4",
        "-6",
        "kod",
        "limited",
        "nomodify",
        "noquery",
        "nopeer",
        "noserve",
        "notrap",
        "ignore",
        "serverresponse",
        "fuzz",
        "ippeerlimit",
        "notrust",
        "auto",
        "uring",
        "mmsg",
        "system",
        "software",
        "0",
        "1",
        "3",
        "4",
        "6",
        "10",
        "15",
        "16",
        "17",
        "18",
        "255",
        "1024",
        "65535",
        "-1",
        "99999999999999999999",
        "127.0.0.1",
        "127.127.1.0",
        "::1",
        "[::1]",
        "[::1]:123",
        "[::1]:",
        "[",
        "]",
        "::",
        "10.1.2.3/16",
        "10.1.2.3/",
        "/",
        "/33",
        "2001:db8::/32",
        "2001:db8::/129",
        "255.255.0.0",
        "255.0.255.0",
        "ffff::",
        "0.0.0.0",
        "192.0.2.1:0",
        "192.0.2.1:9123",
        "ntp_server_1",
        "a..b",
        "é",
        "\u{0}",
        "#",
        "x#y",
        "\t",
        "/var/lib/ntp/ntp.drift",
        "",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut document = String::new();
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..4000 {
        let count = rng.below(7);
        let mut line = String::new();
        for i in 0..count {
            if i > 0 {
                line.push(' ');
            }
            // Start most lines with a directive so the deeper parsers run.
            let pick = if i == 0 && rng.below(4) > 0 {
                rng.below(15)
            } else {
                rng.below(TOKENS.len())
            };
            line.push_str(TOKENS[pick]);
        }
        match Config::parse(&line, "fuzz.conf") {
            Ok(config) => {
                accepted += 1;
                for w in &config.warnings {
                    assert!(w.to_string().starts_with("fuzz.conf:"));
                }
            }
            Err(e) => {
                rejected += 1;
                assert_eq!(e.line, 1, "{line:?}: {e}");
                assert!(e.to_string().starts_with("fuzz.conf:1: "));
            }
        }
        document.push_str(&line);
        document.push('\n');
    }
    // Both outcomes are exercised.
    assert!(accepted > 100 && rejected > 100, "{accepted} {rejected}");
    // Whole documents, cut at arbitrary character boundaries.
    for _ in 0..50 {
        let mut cut = rng.below(document.len());
        while !document.is_char_boundary(cut) {
            cut -= 1;
        }
        let _ = Config::parse(&document[cut..], "fuzz.conf");
        let _ = Config::parse(&document[..cut], "fuzz.conf");
    }
}

#[test]
fn documented_examples_parse() {
    let doc = include_str!("../../docs/config.md");
    let blocks: Vec<&str> = doc
        .split("```")
        .skip(1)
        .step_by(2)
        .filter(|b| b.contains("restrict default") || b.contains("restrict -4 default"))
        .map(|b| b.strip_prefix('\n').unwrap_or(b))
        .collect();
    assert_eq!(blocks.len(), 3);
    check_seed(&ok(blocks[0]));
    let example = ok(blocks[1]);
    assert!(example.warnings.is_empty(), "{:?}", example.warnings);
    assert_eq!(example.servers.len(), 5);
    assert_eq!(blocks[2], EMBEDDED_DEFAULT);
}

#[test]
fn ratelimit_directive() {
    let c = ok("server a\nratelimit interval 3 burst 8 leak 2\n");
    assert_eq!(c.ratelimit.interval, 3);
    assert_eq!(c.ratelimit.burst, 8);
    assert_eq!(c.ratelimit.leak, 2);
    assert_eq!(
        c.ratelimit.table_entries,
        RateLimitParams::default().table_entries
    );
    let c = ok("server a\nratelimit table 4096 ipv6prefix 56 interval -1\n");
    assert_eq!(c.ratelimit.table_entries, 4096);
    assert_eq!(c.ratelimit.ipv6_prefix, 56);
    assert_eq!(c.ratelimit.interval, -1);
    assert_eq!(ok("server a\n").ratelimit, RateLimitParams::default());
    assert!(err("server a\nratelimit burst 0\n")
        .contains("ntp.conf:2: ratelimit burst: expected a number 1..=255"));
    assert!(err("server a\nratelimit speed 3\n")
        .contains("ntp.conf:2: ratelimit: unknown option \"speed\""));
    assert!(err("server a\nratelimit interval\n").contains("got nothing"));
    assert!(err("server a\nratelimit\n").contains("ntp.conf:2: ratelimit"));
}

#[test]
fn rcvbuf_takes_bytes_kilobytes_and_megabytes() {
    let parse = |text: &str| Config::parse(text, "ntp.conf").unwrap();
    assert_eq!(parse("").rcvbuf, super::DEFAULT_RCVBUF);
    assert_eq!(parse("rcvbuf 262144\n").rcvbuf, 256 << 10);
    assert_eq!(parse("rcvbuf 2M\n").rcvbuf, 2 << 20);
    assert_eq!(parse("rcvbuf 64k\n").rcvbuf, 64 << 10);
    assert_eq!(parse("rcvbuf 16K\n").rcvbuf, 16 << 10);
    assert_eq!(parse("rcvbuf 256M\n").rcvbuf, 256 << 20);
    let twice = parse("rcvbuf 1M\nrcvbuf 4M\n");
    assert_eq!(twice.rcvbuf, 4 << 20);
    assert!(twice.warnings[0]
        .message
        .contains("rcvbuf: already set on line 1"));
}

#[test]
fn xleave_is_on_by_default_and_takes_on_off_and_a_table_size() {
    let parse = |text: &str| Config::parse(text, "ntp.conf").unwrap();
    let default = parse("");
    assert!(default.xleave.enabled && default.tx_timestamps);
    assert_eq!(default.xleave.table_entries, super::DEFAULT_XLEAVE_ENTRIES);
    assert!(!parse("xleave off\n").xleave.enabled);
    assert!(parse("xleave on\n").xleave.enabled);
    let sized = parse("xleave table 4M\n");
    assert!(sized.xleave.enabled);
    assert_eq!(sized.xleave.table_entries, 4 << 20);
    let both = parse("xleave on table 65536\n");
    assert_eq!(
        (both.xleave.enabled, both.xleave.table_entries),
        (true, 65536)
    );
    let off_sized = parse("xleave off table 2048\n");
    assert_eq!(
        (off_sized.xleave.enabled, off_sized.xleave.table_entries),
        (false, 2048)
    );
    assert!(parse("xleave on\nxleave off\n").warnings[0]
        .message
        .contains("xleave: already set on line 1"));
    for (text, needle) in [
        (
            "xleave\n",
            "xleave: expected \"on\", \"off\" or \"table N\"",
        ),
        ("xleave maybe\n", "got \"maybe\""),
        ("xleave table\n", "got \"table\""),
        (
            "xleave table 100\n",
            "xleave table: expected a number of pairs 1K..1024M, got \"100\"",
        ),
        ("xleave table 2048M\n", "got \"2048M\""),
        (
            "xleave on table 4K extra\n",
            "got \"table\" \"4K\" \"extra\"",
        ),
    ] {
        let e = err(text);
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn txtimestamp_off_turns_the_interleaved_mode_off_too() {
    let config = Config::parse("txtimestamp off\n", "ntp.conf").unwrap();
    assert!(!config.tx_timestamps);
    assert!(!config.xleave.enabled);
    assert!(config.warnings.iter().any(|w| w
        .message
        .contains("the interleaved mode needs the kernel's transmit timestamps")));
    let quiet = Config::parse("txtimestamp off\nxleave off\n", "ntp.conf").unwrap();
    assert!(!quiet
        .warnings
        .iter()
        .any(|w| w.message.contains("txtimestamp")));
    assert!(
        Config::parse("txtimestamp on\n", "ntp.conf")
            .unwrap()
            .tx_timestamps
    );
    assert!(
        err("txtimestamp yes\n").contains("txtimestamp: expected \"on\" or \"off\", got \"yes\"")
    );
}

#[test]
fn ipv4_mapped_rules_become_ipv4_rules() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for (line, target) in [
        (
            "restrict ::ffff:192.0.2.0/120 noserve",
            net("192.0.2.0", 24),
        ),
        (
            "restrict ::ffff:192.0.2.77/120 noserve",
            net("192.0.2.0", 24),
        ),
        ("restrict ::ffff:192.0.2.7 noserve", net("192.0.2.7", 32)),
        (
            "restrict [::ffff:192.0.2.0]/127 noserve",
            net("192.0.2.0", 31),
        ),
        (
            "restrict ::ffff:192.0.2.0 mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00 noserve",
            net("192.0.2.0", 24),
        ),
        (
            "restrict -4 ::ffff:10.1.2.3/112 noserve",
            net("10.1.0.0", 16),
        ),
        (
            "restrict ::ffff:0.0.0.0/96 noserve",
            RestrictTarget::Default { family: Family::V4 },
        ),
    ] {
        let config = ok(line);
        assert_eq!(config.restrict[0].target, target, "{line}");
    }
    // The converted rule covers the clients it names, however they arrive.
    let target = ok("restrict ::ffff:192.0.2.0/120 noserve").restrict[0].target;
    assert!(target.matches(ip("192.0.2.200")));
    assert!(target.matches(ip("::ffff:192.0.2.200")));
    assert!(!target.matches(ip("192.0.3.1")));
    assert_eq!(target.to_string(), "192.0.2.0/24");
    // The same network written both ways is one rule.
    let merged = ok("restrict 192.0.2.0/24 noquery\nrestrict ::ffff:192.0.2.0/120 noserve\n");
    assert_eq!(merged.restrict.len(), 1);
    assert_eq!(
        merged.restrict[0].flags,
        RestrictFlags::NOQUERY | RestrictFlags::NOSERVE
    );

    // Shorter than /96 reaches beyond the IPv4-mapped range: no IPv4 rule means that.
    let e = err("restrict ::ffff:192.0.2.0/64 noserve\n");
    assert!(
        e.starts_with("ntp.conf:1: restrict: ::ffff:192.0.2.0/64"),
        "{e}"
    );
    assert!(e.contains("IPv4-mapped"), "{e}");
    let e = err("restrict ::ffff:192.0.2.0 mask ffff:ffff:: noserve\n");
    assert!(e.contains("IPv4-mapped"), "{e}");
    let e = err("restrict -6 ::ffff:192.0.2.1\n");
    assert!(e.contains("-6 given"), "{e}");
    assert!(e.contains("IPv4-mapped"), "{e}");
}

/// `n` distinct `restrict` lines, one host each, plus the same number of
/// distinct `server` and `listen` lines, and one line repeating the first rule.
fn many_rules(n: usize) -> String {
    let mut text = String::with_capacity(n * 60);
    for i in 0..n {
        let [_, a, b, c] = (i as u32).to_be_bytes();
        text.push_str(&format!("restrict 10.{a}.{b}.{c} noquery\n"));
        text.push_str(&format!("server s{i}.example.net\n"));
        text.push_str(&format!("listen 10.{a}.{b}.{c}:{}\n", 1 + i % 60000));
    }
    text.push_str("restrict 10.0.0.0 noserve\n");
    text
}

/// Fastest of three parses, in seconds.
fn parse_seconds(text: &str) -> f64 {
    (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            let config = ok(text);
            let elapsed = start.elapsed().as_secs_f64();
            assert_eq!(config.warnings.len(), 1);
            elapsed
        })
        .fold(f64::INFINITY, f64::min)
}

/// Duplicate detection is a hash look-up per line: ten times the lines take
/// about ten times as long, not a hundred (200k restrict lines took 11 s
/// when each line was compared with every earlier one). Ratios of one run,
/// since absolute times vary with the machine.
#[test]
fn many_distinct_lines_parse_in_linear_time() {
    let small = many_rules(20_000);
    let large = many_rules(200_000);
    let config = ok(&large);
    assert_eq!(config.restrict.len(), 200_000);
    assert_eq!(config.servers.len(), 200_000);
    assert_eq!(config.listen.len(), 200_000);
    assert_eq!(
        config.restrict[0].flags,
        RestrictFlags::NOQUERY | RestrictFlags::NOSERVE
    );
    let (large_s, small_s) = (parse_seconds(&large), parse_seconds(&small));
    let ratio = large_s / small_s;
    eprintln!("parse: 20k lines {small_s:.3} s, 200k lines {large_s:.3} s, ratio {ratio:.1}");
    // Linear is 10; quadratic would be near 100.
    assert!(
        ratio < 30.0,
        "200k lines took {ratio:.1} times as long as 20k"
    );
}

#[test]
fn oversized_files_are_refused_unread() {
    // Comment lines, so only the size can be at fault.
    let line = format!("# {}\n", "x".repeat(77));
    let lines = (MAX_FILE_BYTES as usize) / line.len() + 1;
    let file = TempFile::new("huge.conf", line.repeat(lines).as_bytes());
    let e = Config::load(&file.0).unwrap_err();
    assert_eq!(e.line, 0);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: ", file.0.display())),
        "{shown}"
    );
    assert!(shown.contains("larger than 16 MiB"), "{shown}");
    // Just under the limit loads.
    let fits = TempFile::new("big.conf", line.repeat(lines - 1).as_bytes());
    assert!(Config::load(&fits.0).is_ok());
}

#[test]
fn endless_files_are_cut_at_the_limit() {
    // Used to grow memory until killed.
    let e = Config::load(Path::new("/dev/zero")).unwrap_err();
    assert_eq!(e.source, "/dev/zero");
    assert!(e.message.contains("larger than 16 MiB"), "{e}");
}

#[test]
fn overlong_lines_are_refused() {
    let long = format!("server a\nserver {}\n", "b".repeat(5000));
    let e = err(&long);
    assert!(
        e.starts_with("ntp.conf:2: the line is longer than 4096 bytes"),
        "{e}"
    );
    // A long comment is still a long line: the limit is on what is read.
    assert!(err(&format!("# {}\n", "c".repeat(5000))).starts_with("ntp.conf:1: "));
    assert!(Config::parse(&format!("server {}\n", "b".repeat(60)), "x").is_ok());
}

#[test]
fn long_tokens_are_clipped_in_messages() {
    let long = "h".repeat(3000);
    for text in [
        format!("server {long}\n"),
        format!("server {long}.example\n"),
        format!("{long}\n"),
        format!("restrict {long}\n"),
        format!("restrict default {long}\n"),
        format!("restrict 10.0.0.0/8{long} mask 255.0.0.0\n"),
        format!("listen {long}\n"),
        format!("workers {long}\n"),
        format!("driftfile /a {long}\n"),
        format!("server a minpoll {long}\n"),
        format!("server a {long}\n"),
    ] {
        let e = err(&text);
        assert!(e.len() < 1000, "{} bytes: {e}", e.len());
        assert!(e.contains("… (3"), "{e}");
    }
    // A valid but long host name, in a warning.
    let label = "a".repeat(63);
    let name = format!("{label}.{label}.{label}.example");
    let config = ok(&format!("server {name}\nserver {name}\n"));
    let warning = &config.warnings[0].message;
    assert!(warning.len() < 200, "{warning}");
    assert!(
        warning.contains(&format!("… ({} bytes)", name.len())),
        "{warning}"
    );
}

#[test]
fn unknown_directive_lists_every_supported_one() {
    let e = err("frobnicate\n");
    let list = e
        .split("supported: ")
        .nth(1)
        .and_then(|rest| rest.split(" (see").next())
        .unwrap_or_else(|| panic!("{e}"));
    let listed: Vec<&str> = list.split(", ").collect();
    for name in super::ntp::directive_names() {
        assert!(listed.contains(&name), "{name} missing from: {e}");
    }
    assert_eq!(listed.len(), super::ntp::DIRECTIVES.len(), "{e}");
    // Every listed directive is one the parser acts on: none is unknown.
    for name in listed {
        let e = Config::parse(&format!("{name}\n"), "x").unwrap_err();
        assert!(!e.message.contains("unknown directive"), "{name}: {e}");
    }
}

/// The sample messages in docs/config.md are the ones the parser writes.
#[test]
fn documented_unknown_directive_message_is_current() {
    let doc = include_str!("../../docs/config.md");
    let shown = err("frobnicate\n");
    let message = shown.strip_prefix("ntp.conf:1: ").unwrap();
    assert!(
        doc.contains(&format!("/etc/ntp.conf:12: {message}")),
        "docs/config.md does not show: {message}"
    );
}

#[test]
fn ratelimit_leak_must_let_some_requests_through() {
    // leak 0 would answer every limited request: no limiting at all.
    let e = err("server a\nratelimit leak 0\n");
    assert!(
        e.starts_with("ntp.conf:2: ratelimit leak: expected a number 1..=8, got \"0\""),
        "{e}"
    );
    assert_eq!(ok("server a\nratelimit leak 1\n").ratelimit.leak, 1);
    assert_eq!(ok("server a\nratelimit leak 8\n").ratelimit.leak, 8);
    assert!(err("server a\nratelimit leak 9\n").contains("1..=8"));
    let e = err("server a\nratelimit speed 3\n");
    assert!(e.contains("leak 1..=8"), "{e}");
}

/// The modules of src/config, and what each one's `super::` paths name.
fn config_module_imports() -> Vec<(String, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if path.extension().is_none_or(|e| e != "rs") || name.ends_with("tests") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests may use anything.
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let mut names = Vec::new();
        for (i, _) in text.match_indices("super::") {
            let rest = &text[i + "super::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap()];
                names.extend(group.split(',').map(|n| n.trim().to_string()));
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                names.push(rest[..end].to_string());
            }
        }
        modules.push((name, names));
    }
    modules
}

/// No import cycles in src/config: the `super::` paths of the modules form a
/// directed acyclic graph (a name that is not a module is an item of mod.rs).
#[test]
fn config_modules_import_without_cycles() {
    let modules = config_module_imports();
    let known: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        known.contains(&"mod") && known.contains(&"words"),
        "{known:?}"
    );
    let edges: Vec<(&str, Vec<&str>)> = modules
        .iter()
        .map(|(from, names)| {
            let mut to: Vec<&str> = names
                .iter()
                .map(|n| n.split("::").next().unwrap().trim())
                .map(|n| if known.contains(&n) { n } else { "mod" })
                .filter(|n| n != from)
                .collect();
            to.sort();
            to.dedup();
            (from.as_str(), to)
        })
        .collect();
    // Repeatedly remove modules that import nothing left; a cycle remains.
    let mut left = edges.clone();
    while let Some(i) = left
        .iter()
        .position(|(_, to)| to.iter().all(|t| !left.iter().any(|(m, _)| m == t)))
    {
        left.remove(i);
    }
    assert!(left.is_empty(), "import cycle among: {left:?}");
    // words is the bottom: it imports no sibling.
    let words = edges.iter().find(|(m, _)| *m == "words").unwrap();
    assert!(words.1.is_empty(), "{words:?}");
}
