//! Whole-file tests of the chrony.conf dialect: the stock files of Debian
//! (the one the chrony package installs here), Fedora and Ubuntu, every
//! chronyd directive, access rules, and the files a chrony.conf includes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Debian's stock file, installed by the chrony package.
const DEBIAN_CONF: &str = "/etc/chrony/chrony.conf";

fn chrony(text: &str) -> Config {
    match Config::parse_as(text, "chrony.conf", Dialect::Chrony) {
        Ok(config) => config,
        Err(e) => panic!("{e}"),
    }
}

fn chrony_err(text: &str) -> ConfigError {
    match Config::parse_as(text, "chrony.conf", Dialect::Chrony) {
        Ok(config) => panic!("accepted: {text:?} -> {config:?}"),
        Err(e) => e,
    }
}

fn load(path: &Path) -> Config {
    match Config::load(path) {
        Ok(config) => config,
        Err(e) => panic!("{e}"),
    }
}

fn messages(config: &Config) -> Vec<String> {
    config.warnings.iter().map(|w| w.to_string()).collect()
}

/// The flags the longest matching rule gives `ip`, as the server's table
/// picks them; `None` when the client is not served (no rule, or `ignore`).
fn served(config: &Config, ip: &str) -> Option<RestrictFlags> {
    let ip: IpAddr = ip.parse().unwrap();
    let rule = config
        .restrict
        .iter()
        .filter(|r| r.target.matches(ip))
        .max_by_key(|r| r.target.prefix_len())?;
    (!rule.flags.contains(RestrictFlags::IGNORE)).then_some(rule.flags)
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/config/testdata")
        .join(name)
}

/// Whether the chrony package's stock file is here. It must be, unless
/// TACHYON_SKIP_EXTERNAL=1 says a missing one may skip the test.
fn have_debian_conf() -> bool {
    if Path::new(DEBIAN_CONF).exists() {
        return true;
    }
    if std::env::var("TACHYON_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {DEBIAN_CONF} is absent (TACHYON_SKIP_EXTERNAL=1)");
        return false;
    }
    panic!(
        "{DEBIAN_CONF} is absent: run scripts/install-test-deps (Debian package chrony), \
         or set TACHYON_SKIP_EXTERNAL=1 to skip"
    );
}

/// What every default file of the three distributions yields: chrony's
/// dialect, no client served, and a warning for each directive tachyon
/// does not act on, one line each.
fn check_distribution_defaults(config: &Config, ignored: &[&str]) {
    assert_eq!(config.dialect, Dialect::Chrony);
    assert_eq!(served(config, "127.0.0.1"), None);
    assert_eq!(served(config, "::1"), None);
    assert_eq!(served(config, "192.0.2.1"), None);
    assert!(config.listen.is_empty(), "{:?}", config.listen);
    assert_eq!(config.local_stratum, None);
    assert_eq!(
        config.makestep,
        Some(MakeStep {
            threshold: Duration::from_secs(1),
            limit: Some(3)
        })
    );
    assert_eq!(
        config.leapfile.as_deref(),
        Some(Path::new("/usr/share/zoneinfo/leap-seconds.list"))
    );
    let shown = messages(config);
    for w in &shown {
        assert!(!w.contains('\n'), "{w}");
    }
    for name in ignored {
        let needle = format!("{name}: ignored by tachyon");
        assert!(
            shown.iter().any(|w| w.contains(&needle)),
            "{name}: {shown:#?}"
        );
    }
    for needle in [
        "no 'allow' directive: as chronyd does, tachyon answers no NTP client",
        "tachyon reads the leap seconds from /usr/share/zoneinfo/leap-seconds.list",
    ] {
        assert!(
            shown.iter().any(|w| w.contains(needle)),
            "{needle}: {shown:#?}"
        );
    }
}

#[test]
fn debian_stock_file_loads() {
    if !have_debian_conf() {
        return;
    }
    let config = load(Path::new(DEBIAN_CONF));
    assert_eq!(config.dialect_reason, "the file is named chrony.conf");
    check_distribution_defaults(
        &config,
        &[
            "keyfile",
            "ntsdumpdir",
            "logdir",
            "maxupdateskew",
            "rtcsync",
        ],
    );
    let first = &config.servers[0];
    assert_eq!(
        (first.kind, first.host.as_str(), first.iburst),
        (SourceKind::Pool, "2.debian.pool.ntp.org", true)
    );
    assert_eq!(
        config.chrony_driftfile.as_deref(),
        Some(Path::new("/var/lib/chrony/chrony.drift"))
    );
    assert_eq!(config.driftfile, None);
    // Every warning names the stock file (or a file it includes).
    for w in &config.warnings {
        assert!(w.source.starts_with("/etc/chrony/"), "{w}");
    }
    // docs/config.md shows these warnings as they are (up to its "...").
    let doc = include_str!("../../docs/config.md");
    let section = doc.split("### Debian's stock chrony.conf").nth(1).unwrap();
    let block = section.split("```").nth(1).unwrap();
    let shown = messages(&config);
    let documented: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(documented.len(), shown.len(), "{shown:#?}");
    for line in documented {
        let prefix = line.split("...").next().unwrap().trim_end();
        assert!(
            shown.iter().any(|w| w.starts_with(prefix)),
            "docs/config.md shows {line:?}, tachyon says {shown:#?}"
        );
    }
}

#[test]
fn fedora_default_file_loads() {
    let config = load(&testdata("fedora/chrony.conf"));
    check_distribution_defaults(&config, &["rtcsync", "keyfile", "ntsdumpdir", "logdir"]);
    let hosts: Vec<&str> = config.servers.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts, ["2.fedora.pool.ntp.org"]);
    assert_eq!(
        config.chrony_driftfile.as_deref(),
        Some(Path::new("/var/lib/chrony/drift"))
    );
    // The lines Fedora ships commented out load too.
    let text = std::fs::read_to_string(testdata("fedora/chrony.conf")).unwrap();
    let enabled: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let config = chrony(&enabled);
    assert_eq!(config.min_sources, Some(2));
    assert_eq!(config.local_stratum, Some(10));
    assert!(served(&config, "192.168.7.7").is_some());
    assert_eq!(served(&config, "192.0.2.1"), None);
    for name in ["hwtimestamp", "authselectmode", "leapsecmode", "log"] {
        let needle = format!("{name}: ignored by tachyon");
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.message.starts_with(&needle)),
            "{name}"
        );
    }
}

#[test]
fn ubuntu_default_file_loads() {
    let config = load(&testdata("ubuntu/chrony.conf"));
    check_distribution_defaults(
        &config,
        &[
            "keyfile",
            "ntsdumpdir",
            "logdir",
            "maxupdateskew",
            "rtcsync",
        ],
    );
    let pools: Vec<(&str, u8)> = config
        .servers
        .iter()
        .take(4)
        .map(|s| (s.host.as_str(), s.max_sources))
        .collect();
    assert_eq!(
        pools,
        [
            ("ntp.ubuntu.com", 4),
            ("0.ubuntu.pool.ntp.org", 1),
            ("1.ubuntu.pool.ntp.org", 1),
            ("2.ubuntu.pool.ntp.org", 2),
        ]
    );
    assert!(config
        .servers
        .iter()
        .all(|s| s.kind == SourceKind::Pool && s.iburst));
    let max_sources: Vec<u8> = config.servers.iter().map(|s| s.max_sources).collect();
    assert_eq!(max_sources, [4, 1, 1, 2]);
}

/// Every directive chronyd 4.x knows (from its conf.c) is acted on, accepted
/// with a warning, or refused with a reason: none is an unknown directive.
#[test]
fn every_chronyd_directive_is_known() {
    const CHRONYD: &[&str] = &[
        "acquisitionport",
        "allow",
        "authselectmode",
        "bindacqaddress",
        "bindacqdevice",
        "bindaddress",
        "bindcmdaddress",
        "bindcmddevice",
        "binddevice",
        "broadcast",
        "clientloglimit",
        "clockprecision",
        "cmdallow",
        "cmddeny",
        "cmdport",
        "cmdratelimit",
        "combinelimit",
        "confdir",
        "corrtimeratio",
        "deny",
        "driftfile",
        "dscp",
        "dumpdir",
        "dumponexit",
        "fallbackdrift",
        "hwclockfile",
        "hwtimestamp",
        "hwtstimeout",
        "include",
        "initstepslew",
        "keyfile",
        "leapsecmode",
        "leapsectz",
        "leapseclist",
        "local",
        "lock_all",
        "log",
        "logbanner",
        "logchange",
        "logdir",
        "mailonchange",
        "makestep",
        "manual",
        "maxchange",
        "maxclockerror",
        "maxdistance",
        "maxdrift",
        "maxjitter",
        "maxntsconnections",
        "maxsamples",
        "maxslewrate",
        "maxstratum",
        "maxupdateskew",
        "maxtxbuffers",
        "minsamples",
        "minsources",
        "minstratum",
        "nocerttimecheck",
        "noclientlog",
        "nosystemcert",
        "ntpsigndsocket",
        "ntsaeads",
        "ntsratelimit",
        "ntscachedir",
        "ntsdumpdir",
        "ntsntpserver",
        "ntsport",
        "ntsprocesses",
        "ntsrefresh",
        "ntsrotate",
        "ntsservercert",
        "ntsserverkey",
        "ntstrustedcerts",
        "opencommands",
        "peer",
        "pidfile",
        "pool",
        "port",
        "ptpdomain",
        "ptpport",
        "ratelimit",
        "refclock",
        "refresh",
        "reselectdist",
        "rtcautotrim",
        "rtcdevice",
        "rtcfile",
        "rtconutc",
        "rtcsync",
        "sched_priority",
        "server",
        "smoothtime",
        "sourcedir",
        "stratumweight",
        "tempcomp",
        "user",
        "commandkey",
        "generatecommandkey",
        "linux_freq_scale",
        "linux_hz",
    ];
    assert_eq!(CHRONYD.len(), 100);
    let known: Vec<&str> = super::chrony::known_names().collect();
    for name in CHRONYD {
        assert!(known.contains(name), "{name} is not in a table");
        match Config::parse_as(&format!("{name}\n"), "c.conf", Dialect::Chrony) {
            Ok(_) => {}
            Err(e) => assert!(!e.message.contains("unknown directive"), "{e}"),
        }
    }
    // What is warned is said in one line, naming the directive.
    for (name, _) in super::chrony::IGNORED {
        let config = chrony(&format!("{name} x y\n"));
        let w = &config.warnings[0];
        assert_eq!((w.line, w.source.as_str()), (1, "chrony.conf"));
        assert!(
            w.message
                .starts_with(&format!("{name}: ignored by tachyon (")),
            "{w}"
        );
    }
}

#[test]
fn allow_and_deny_decide_who_is_served() {
    let config = chrony(
        "allow 192.168/16\ndeny 192.168.5\nallow 192.168.5.7\nallow 2001:db8::/32\n\
         deny 2001:db8:bad::/48\n",
    );
    // Served, and never asked mode 6 queries (chronyd answers none).
    let open = Some(RestrictFlags::NOQUERY);
    assert_eq!(served(&config, "192.168.1.1"), open);
    assert_eq!(served(&config, "::ffff:192.168.1.1"), open);
    assert_eq!(served(&config, "192.168.5.1"), None);
    assert_eq!(served(&config, "192.168.5.7"), open);
    assert_eq!(served(&config, "10.0.0.1"), None);
    assert_eq!(served(&config, "127.0.0.1"), None);
    assert_eq!(served(&config, "2001:db8:1::1"), open);
    assert_eq!(served(&config, "2001:db8:bad::1"), None);
    assert_eq!(served(&config, "::1"), None);
    assert!(!messages(&config).iter().any(|w| w.contains("no 'allow'")));

    let everybody = chrony("allow\n");
    for ip in ["127.0.0.1", "::1", "198.51.100.9", "2001:db8::9"] {
        assert_eq!(served(&everybody, ip), open, "{ip}");
    }
    let v4 = chrony("allow 0/0\n");
    assert_eq!(served(&v4, "198.51.100.9"), open);
    assert_eq!(served(&v4, "2001:db8::9"), None);
    let all = chrony("allow 10.1.2.3\ndeny 10.1.2/24\nallow all 10/8\n");
    assert_eq!(served(&all, "10.1.2.9"), open);
    let e = chrony_err("server a\nallow time.example.org\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("host names are not resolved"), "{e}");
}

#[test]
fn ratelimit_applies_to_every_allowed_client() {
    let config = chrony("allow\nratelimit interval 1 burst 16\n");
    assert_eq!(
        (
            config.ratelimit.interval,
            config.ratelimit.burst,
            config.ratelimit.leak
        ),
        (1, 16, 2)
    );
    assert_eq!(
        served(&config, "192.0.2.1"),
        Some(RestrictFlags::LIMITED | RestrictFlags::NOQUERY)
    );
    // chrony's defaults for what the line leaves out.
    let config = chrony("allow 10/8\ndeny 10.1/16\nratelimit\n");
    assert_eq!(
        (
            config.ratelimit.interval,
            config.ratelimit.burst,
            config.ratelimit.leak
        ),
        (3, 8, 2)
    );
    assert_eq!(
        served(&config, "10.2.0.1"),
        Some(RestrictFlags::LIMITED | RestrictFlags::NOQUERY)
    );
    assert_eq!(served(&config, "10.1.0.1"), None);
    let config = chrony("allow\nratelimit kod 2 leak 3 table 4096 ipv6prefix 56\n");
    assert_eq!(
        served(&config, "192.0.2.1"),
        Some(RestrictFlags::LIMITED | RestrictFlags::KOD | RestrictFlags::NOQUERY)
    );
    assert_eq!(
        (
            config.ratelimit.leak,
            config.ratelimit.table_entries,
            config.ratelimit.ipv6_prefix
        ),
        (3, 4096, 56)
    );
    // Without ratelimit, chronyd does not limit.
    assert_eq!(
        served(&chrony("allow\n"), "192.0.2.1"),
        Some(RestrictFlags::NOQUERY)
    );
    for (text, needle) in [
        (
            "ratelimit interval -5\n",
            "ratelimit interval: expected a number -4..=12",
        ),
        ("ratelimit leak 0\n", "1..=4"),
        ("ratelimit leak 5\n", "1..=4"),
        ("ratelimit kod 5\n", "0..=4"),
        ("ratelimit speed 3\n", "unknown option \"speed\""),
        ("ratelimit burst\n", "got nothing"),
    ] {
        let e = chrony_err(text);
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
    let e = chrony_err("allow\nnoclientlog\nratelimit\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("together with ratelimit"), "{e}");
    let config = chrony("allow\nnoclientlog\n");
    assert!(config.warnings[0]
        .message
        .starts_with("noclientlog: ignored"));
}

#[test]
fn bindaddress_and_port_give_the_listen_addresses() {
    let sock = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    assert!(chrony("server a\n").listen.is_empty());
    assert_eq!(
        chrony("port 11123\n").listen,
        [sock("0.0.0.0:11123"), sock("[::]:11123")]
    );
    assert_eq!(
        chrony("bindaddress 192.0.2.10\n").listen,
        [sock("192.0.2.10:123"), sock("[::]:123")]
    );
    let config =
        chrony("bindaddress 127.0.0.1\nbindaddress ::1\nport 4123\nbindaddress 127.0.0.2\n");
    assert_eq!(config.listen, [sock("127.0.0.2:4123"), sock("[::1]:4123")]);
    assert!(messages(&config)
        .iter()
        .any(|w| w.contains("bindaddress (IPv4): already set on line 1")));
    for (text, needle) in [
        ("port 0\n", "port 0 makes chronyd a client only"),
        ("port 70000\n", "0..=65535"),
        ("bindaddress localhost\n", "names are not resolved"),
        ("bindaddress\n", "got nothing"),
        ("binddevice eth0\n", "use 'bindaddress'"),
        ("listen 127.0.0.1\n", "'bindaddress' and 'port'"),
    ] {
        let e = chrony_err(text);
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn sources_local_and_the_rest() {
    let config = chrony(
        "SERVER 192.0.2.1 IBURST minpoll 4\npool pool.example.org iburst maxsources 2 xleave\n\
         Local stratum 5 orphan distance 0.1\nminsources 2\nleapseclist /etc/leap.list\n\
         leapsectz right/UTC\nclock software\nworkers 2\nio mmsg\nrcvbuf 2M\n\
         metrics 127.0.0.1:9100\nxleave table 1M\n",
    );
    assert_eq!(config.xleave.table_entries, 1 << 20);
    assert_eq!(config.servers.len(), 2);
    assert_eq!(
        (config.servers[0].minpoll, config.servers[0].iburst),
        (4, true)
    );
    assert_eq!(config.servers[1].max_sources, 2);
    assert_eq!(config.local_stratum, Some(5));
    assert_eq!(config.min_sources, Some(2));
    assert_eq!(
        config.leapfile.as_deref(),
        Some(Path::new("/etc/leap.list"))
    );
    assert_eq!(config.clock, ClockChoice::Software);
    assert_eq!(config.workers, Some(2));
    assert_eq!(config.io, IoChoice::Mmsg);
    assert_eq!(config.rcvbuf, 2 << 20);
    assert!(config.metrics.is_some());
    let shown = messages(&config);
    for needle in [
        "chrony.conf:2: pool pool.example.org: option \"xleave\" is ignored",
        "chrony.conf:3: local: option \"orphan\" is ignored",
        "chrony.conf:3: local: option \"distance 0.1\" is ignored",
        "chrony.conf:6: leapsectz right/UTC: ignored by tachyon: the leap seconds come from",
        "chrony.conf: local stratum 5: the host clock is served at stratum 5",
    ] {
        assert!(
            shown.iter().any(|w| w.starts_with(needle)),
            "{needle}: {shown:#?}"
        );
    }
    assert_eq!(chrony("local\n").local_stratum, Some(10));
    let steps = chrony("makestep 0.5 -1\n").makestep.unwrap();
    assert_eq!(
        (steps.threshold, steps.limit),
        (Duration::from_millis(500), None)
    );
    for (text, line, needle) in [
        ("server a\npeer 192.0.2.1\n", 2, "'peer' is not supported"),
        (
            "refclock PHC /dev/ptp0\n",
            1,
            "reference clocks are not supported",
        ),
        (
            "restrict default\n",
            1,
            "'allow' and 'deny' say who is served",
        ),
        ("statistics loopstats\n", 1, "is ntp.conf syntax"),
        (
            "frobnicate\n",
            1,
            "supported in a chrony.conf: server, pool, allow",
        ),
        ("alow\n", 1, "did you mean \"allow\""),
        ("server a nts\n", 1, "does not support NTS"),
        ("local stratum 16\n", 1, "1..=15"),
        ("local fast\n", 1, "unknown option \"fast\""),
        ("makestep 1\n", 1, "THRESHOLD LIMIT"),
        ("makestep x 3\n", 1, "expected a number"),
        ("minsources 0\n", 1, "1..=64"),
        ("driftfile\n", 1, "FILE [interval N]"),
        ("driftfile /a interval x\n", 1, "driftfile interval"),
        ("confdir\n", 1, "one or more directories"),
        (
            "sourcedir a b c d e f g h i j k\n",
            1,
            "at most 10 directories",
        ),
        ("include\n", 1, "got nothing"),
        ("noclientlog x\n", 1, "takes no arguments"),
        ("clock atomic\n", 1, "clock: expected"),
    ] {
        let e = chrony_err(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
    // Comments as chronyd reads them: only at the start of a line.
    let config = chrony("  ! a\n; b\n% c\n# d\ndriftfile /var/lib/chrony/drift#1\n");
    assert_eq!(
        config.chrony_driftfile.as_deref(),
        Some(Path::new("/var/lib/chrony/drift#1"))
    );
    let e = chrony_err("server a iburst # comment\n");
    assert!(e.message.contains("unknown option \"#\""), "{e}");
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "tachyon-chrony-test-{}-{tag}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to `name` (folders created) and returns its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn confdir_sourcedir_and_include_are_followed() {
    let d = TempDir::new("follow");
    d.file("a/20-late.conf", "allow 10/8\n");
    d.file("a/10-early.conf", "allow 192.0.2.0/24\n");
    d.file("b/10-early.conf", "allow 198.51.100.0/24\n"); // hidden by a/10-early.conf
    d.file("b/15-mid.conf", "deny 10.9/16\n");
    d.file("a/.hidden.conf", "frobnicate\n");
    d.file("a/notes.txt", "frobnicate\n");
    d.file(
        "s/dhcp.sources",
        "server 192.0.2.50 iburst\npool dhcp.example.net\n",
    );
    d.file("s/partial.sources", "server 192.0.2.60\nserver 192.0.2.61");
    d.file("inc/x.conf", "local stratum 3\n");
    d.file("inc/y.conf", "clock software\n");
    let main = d.file(
        "chrony.conf",
        &format!(
            "server 192.0.2.1\nconfdir {} {} {}\nsourcedir {} {}\ninclude {}\n",
            d.path("a"),
            d.path("b"),
            d.path("missing"),
            d.path("s"),
            d.path("nothing-here"),
            d.path("inc/*.conf"),
        ),
    );
    let config = load(&main);
    assert!(config
        .warnings
        .iter()
        .all(|w| !w.message.contains("frobnicate")));
    assert!(served(&config, "192.0.2.7").is_some());
    assert_eq!(served(&config, "198.51.100.7"), None);
    assert!(served(&config, "10.1.0.1").is_some());
    assert_eq!(served(&config, "10.9.0.1"), None);
    let hosts: Vec<&str> = config.servers.iter().map(|s| s.host.as_str()).collect();
    // A sources file's last line without its newline is not read, as in chronyd.
    assert_eq!(
        hosts,
        ["192.0.2.1", "192.0.2.50", "dhcp.example.net", "192.0.2.60"]
    );
    assert_eq!(config.local_stratum, Some(3));
    assert_eq!(config.clock, ClockChoice::Software);
    // Rules from included files keep their own line numbers.
    let rule = config
        .restrict
        .iter()
        .find(|r| r.target.to_string() == "10.9.0.0/16")
        .unwrap();
    assert_eq!(rule.line, 1);
}

#[test]
fn included_lines_are_named_by_their_own_file_and_line() {
    let d = TempDir::new("errors");
    let bad = d.file("conf.d/50-bad.conf", "allow 10/8\n\nfrobnicate 1\n");
    let main = d.file(
        "chrony.conf",
        &format!("server a\nconfdir {}\n", d.path("conf.d")),
    );
    let e = Config::load(&main).unwrap_err();
    assert_eq!((e.source.as_str(), e.line), (bad.to_str().unwrap(), 3));
    assert!(
        e.message.starts_with("unknown directive 'frobnicate'"),
        "{e}"
    );

    let warned = d.file("conf.d/50-bad.conf", "rtcsync\n");
    let config = load(&main);
    let w = &config.warnings[0];
    assert_eq!((w.source.as_str(), w.line), (warned.to_str().unwrap(), 1));

    // Bad lines of a sources file are skipped with a warning, as chronyd skips them.
    d.file(
        "src/x.sources",
        "server 192.0.2.9 nts\nallow\nserver 192.0.2.10\n",
    );
    let main = d.file("chrony.conf", &format!("sourcedir {}\n", d.path("src")));
    let config = load(&main);
    let hosts: Vec<&str> = config.servers.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts, ["192.0.2.10"]);
    let shown = messages(&config);
    assert!(
        shown[0].contains("x.sources:1: server 192.0.2.9: nts"),
        "{shown:?}"
    );
    assert!(shown[0].ends_with("the line is ignored, as chronyd ignores it"));
    assert!(
        shown[1].contains("x.sources:2: a sources file holds only"),
        "{shown:?}"
    );
    // Nothing is allowed by a sources file.
    assert_eq!(served(&config, "192.0.2.1"), None);
}

#[test]
fn include_limits_and_failures() {
    let d = TempDir::new("limits");
    // A file that includes itself ends at the depth limit, at its line.
    let main = d.file("chrony.conf", "server a\n");
    d.file(
        "chrony.conf",
        &format!("server a\ninclude {}\n", main.display()),
    );
    let e = Config::load(&main).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("more than 10 levels deep"), "{e}");
    // A named file must exist; a pattern may match nothing.
    let main = d.file(
        "chrony.conf",
        &format!(
            "server a\ninclude {}\ninclude {}\n",
            d.path("none/*.conf"),
            d.path("absent.conf")
        ),
    );
    let e = Config::load(&main).unwrap_err();
    assert_eq!((e.source.as_str(), e.line), (main.to_str().unwrap(), 3));
    assert!(e.message.contains("absent.conf: cannot read"), "{e}");
    // All files together are held to the size limit.
    let big = "#".repeat(1000) + "\n";
    let chunk = big.repeat((MAX_FILE_BYTES as usize) / big.len() / 4 + 1);
    for i in 0..4 {
        d.file(&format!("big/{i}.conf"), &chunk);
    }
    let main = d.file("chrony.conf", &format!("confdir {}\n", d.path("big")));
    let e = Config::load(&main).unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    assert!(e.message.contains("larger than 16 MiB"), "{e}");
}

#[test]
fn the_dialect_is_chosen_by_name_content_or_override() {
    let d = TempDir::new("dialect");
    let by_content = d.file("site.conf", "# x\nallow 10/8\nserver a\n");
    let config = load(&by_content);
    assert_eq!(config.dialect, Dialect::Chrony);
    assert_eq!(
        config.dialect_reason,
        "its first directive that only chrony has is 'allow', on line 2"
    );
    let ntp = d.file("other.conf", "server a\nrestrict default kod\n");
    assert_eq!(load(&ntp).dialect, Dialect::Ntp);
    // Forced: an ntp.conf read as chrony fails where ntp.conf syntax starts.
    let e = Config::load_with(&ntp, ConfigFormat::Only(Dialect::Chrony)).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("ntp.conf syntax"), "{e}");
    let named = d.file("chrony.conf", "server a\n");
    let config = Config::load_with(&named, ConfigFormat::Only(Dialect::Ntp)).unwrap();
    assert_eq!(
        (config.dialect, config.dialect_reason.as_str()),
        (Dialect::Ntp, "--config-format ntp")
    );
    assert_eq!(
        "chrony".parse::<ConfigFormat>(),
        Ok(ConfigFormat::Only(Dialect::Chrony))
    );
    assert_eq!("auto".parse::<ConfigFormat>(), Ok(ConfigFormat::Auto));
    assert!("xml".parse::<ConfigFormat>().is_err());
    assert_eq!(ConfigFormat::Only(Dialect::Ntp).to_string(), "ntp");
}

#[test]
fn random_chrony_lines_never_panic() {
    const TOKENS: &[&str] = &[
        "server",
        "pool",
        "peer",
        "allow",
        "deny",
        "all",
        "ratelimit",
        "interval",
        "burst",
        "leak",
        "kod",
        "noclientlog",
        "bindaddress",
        "port",
        "local",
        "stratum",
        "orphan",
        "distance",
        "driftfile",
        "makestep",
        "minsources",
        "leapsectz",
        "leapseclist",
        "confdir",
        "sourcedir",
        "include",
        "rtcsync",
        "keyfile",
        "iburst",
        "maxsources",
        "minpoll",
        "maxpoll",
        "nts",
        "offset",
        "xleave",
        "extfield",
        "clock",
        "software",
        "restrict",
        "0",
        "1",
        "-1",
        "3",
        "16",
        "24",
        "-20",
        "0.5",
        "1e400",
        "nan",
        "0/0",
        "::/0",
        "10",
        "192.168",
        "10/8",
        "10/33",
        "1.2.3.4/",
        "2001:db8::/32",
        "::ffff:1.2.3.4/100",
        "::ffff:1.2.3.4/64",
        "127.0.0.1",
        "::1",
        "host.example",
        "right/UTC",
        "/a",
        "#",
        "!",
        "x",
        "é",
        "",
    ];
    // xorshift64*, as in tests.rs.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    };
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..3000 {
        let words: Vec<&str> = (0..1 + next(5))
            .map(|i| {
                if i == 0 {
                    TOKENS[next(39)]
                } else {
                    TOKENS[next(TOKENS.len())]
                }
            })
            .collect();
        let line = words.join(" ");
        match Config::parse_as(&line, "fuzz.conf", Dialect::Chrony) {
            Ok(_) => accepted += 1,
            Err(e) => {
                rejected += 1;
                assert_eq!(e.line, 1, "{line:?}: {e}");
            }
        }
    }
    assert!(accepted > 100 && rejected > 100, "{accepted} {rejected}");
}
