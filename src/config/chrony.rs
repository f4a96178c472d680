//! The chrony.conf dialect: every directive of chronyd 4.x is acted on,
//! accepted with a warning that says what is ignored, or refused with a
//! reason. The lines come from [`super::lines::Line`]s, which the loader
//! gathers from the file and the files it includes (`confdir`, `sourcedir`,
//! `include`); this module only reads them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::builder::{At, Builder};
use super::chrony_access::{Access, Permission};
use super::chrony_source::{self, float};
use super::lines::{self, Line, LineKind};
use super::model::{Config, ConfigError, Dialect, MakeStep, RateLimitParams};
use super::ntp;
use super::own;
use super::restrict::RestrictFlags;
use super::upstream::SourceKind;
use super::words::{clip, exactly_one, number_in, quoted, quoted_all, suggestion};

/// Where tzdata keeps the leap-second list that `leapsectz` stands for.
pub(super) const TZDATA_LEAP_SECONDS: &str = "/usr/share/zoneinfo/leap-seconds.list";

/// The most directories one `confdir` or `sourcedir` line may name, as in
/// chronyd.
pub(super) const MAX_DIRS: usize = 10;

/// What a directive does to the configuration under construction.
pub(super) type Handler = fn(&mut Chrony, &At<'_>, &[&str]) -> Result<(), String>;

/// Every chrony directive tachyon acts on, and tachyon's own that a
/// chrony.conf may hold, with their handlers.
pub(super) const DIRECTIVES: &[(&str, Handler)] = &[
    ("server", |c, at, args| {
        c.source(at, SourceKind::Server, args)
    }),
    ("pool", |c, at, args| c.source(at, SourceKind::Pool, args)),
    ("allow", |c, at, args| c.access(at, Permission::Allow, args)),
    ("deny", |c, at, args| c.access(at, Permission::Deny, args)),
    ("ratelimit", Chrony::ratelimit),
    ("noclientlog", Chrony::noclientlog),
    ("bindaddress", Chrony::bindaddress),
    ("port", Chrony::port),
    ("local", Chrony::local),
    ("driftfile", Chrony::driftfile),
    ("makestep", Chrony::makestep),
    ("minsources", Chrony::minsources),
    ("leapsectz", Chrony::leapsectz),
    ("leapseclist", Chrony::leapseclist),
    ("confdir", |_, _, args| {
        directories("confdir", args).map(drop)
    }),
    ("sourcedir", |_, _, args| {
        directories("sourcedir", args).map(drop)
    }),
    ("include", |_, _, args| {
        exactly_one("include", args, "a file or pattern").map(drop)
    }),
    ("workers", |c, at, args| own::workers(&mut c.b, at, args)),
    ("io", |c, at, args| own::io(&mut c.b, at, args)),
    ("rcvbuf", |c, at, args| own::rcvbuf(&mut c.b, at, args)),
    ("metrics", |c, at, args| own::metrics(&mut c.b, at, args)),
    ("clock", |c, at, args| own::clock(&mut c.b, at, args)),
    ("xleave", |c, at, args| own::xleave(&mut c.b, at, args)),
    ("txtimestamp", |c, at, args| {
        own::txtimestamp(&mut c.b, at, args)
    }),
    ("holdover", |c, at, args| own::holdover(&mut c.b, at, args)),
];

/// chronyd directives accepted with a warning, and why they do nothing.
pub(super) const IGNORED: &[(&str, &str)] = &[
    ("keyfile", "symmetric-key authentication is not supported"),
    ("ntsdumpdir", "NTS is not supported"),
    ("ntscachedir", "NTS is not supported"),
    ("ntsservercert", "NTS is not supported: clients are served plain NTP only"),
    ("ntsserverkey", "NTS is not supported: clients are served plain NTP only"),
    ("ntsport", "NTS is not supported"),
    ("ntsprocesses", "NTS is not supported"),
    ("maxntsconnections", "NTS is not supported"),
    ("ntsratelimit", "NTS is not supported"),
    ("ntsntpserver", "NTS is not supported"),
    ("ntsrotate", "NTS is not supported"),
    ("ntsrefresh", "NTS is not supported"),
    ("ntstrustedcerts", "NTS is not supported"),
    ("ntsaeads", "NTS is not supported"),
    ("nosystemcert", "NTS is not supported"),
    ("nocerttimecheck", "NTS is not supported"),
    ("authselectmode", "sources are never authenticated (no keys, no NTS)"),
    ("logdir", "no log files are written; messages go to standard error (the journal under systemd) and figures to the metrics endpoint"),
    ("log", "no log files are written; use the metrics endpoint and tachyonctl"),
    ("logbanner", "no log files are written"),
    ("logchange", "clock changes are logged on their own terms"),
    ("mailonchange", "no mail is sent"),
    ("rtcsync", "the real-time clock is not managed by tachyon"),
    ("rtcfile", "the real-time clock is not managed by tachyon"),
    ("rtcdevice", "the real-time clock is not managed by tachyon"),
    ("rtconutc", "the real-time clock is not managed by tachyon"),
    ("rtcautotrim", "the real-time clock is not managed by tachyon"),
    ("hwclockfile", "the real-time clock is not managed by tachyon"),
    ("maxupdateskew", "the estimator weighs each source by its measured uncertainty; there is no skew cut-off"),
    ("maxdistance", "selection parameters are built in"),
    ("maxjitter", "selection parameters are built in"),
    ("maxstratum", "selection parameters are built in"),
    ("minstratum", "selection parameters are built in"),
    ("reselectdist", "selection parameters are built in"),
    ("stratumweight", "selection parameters are built in"),
    ("combinelimit", "selection parameters are built in"),
    ("minsamples", "the estimator chooses how many samples it keeps"),
    ("maxsamples", "the estimator chooses how many samples it keeps"),
    ("maxdrift", "clock discipline parameters are built in (frequency within 500 ppm)"),
    ("maxslewrate", "clock discipline parameters are built in"),
    ("maxchange", "clock discipline parameters are built in"),
    ("maxclockerror", "clock discipline parameters are built in"),
    ("corrtimeratio", "clock discipline parameters are built in"),
    ("clockprecision", "the precision is measured at start"),
    ("fallbackdrift", "the frequency is kept when no source is usable"),
    ("tempcomp", "temperature compensation is not supported"),
    ("initstepslew", "tachyon steps only at its first clock update, when the offset is over 0.128 s, and slews otherwise"),
    ("leapsecmode", "a leap second is inserted or deleted by the kernel (clock system)"),
    ("smoothtime", "a public server must not smooth or smear time (RFC 8633)"),
    ("manual", "there is no manual time input"),
    ("hwtimestamp", "hardware timestamps are not used; the kernel's software receive timestamp is"),
    ("hwtstimeout", "hardware timestamps are not used"),
    ("maxtxbuffers", "hardware timestamps are not used"),
    ("clientloglimit", "the rate limiter's table is sized by 'ratelimit table N' (1048576 clients by default), the interleaved mode's by 'xleave table N' (16777216 pairs)"),
    ("acquisitionport", "each poll goes out from a fresh random port (RFC 9109)"),
    ("bindacqaddress", "upstream polls use the address the kernel chooses"),
    ("bindacqdevice", "upstream polls use the interface the kernel chooses"),
    ("cmdallow", "control is over tachyonctl's local socket only"),
    ("cmddeny", "control is over tachyonctl's local socket only"),
    ("cmdport", "control is over tachyonctl's local socket only"),
    ("cmdratelimit", "control is over tachyonctl's local socket only"),
    ("bindcmdaddress", "control is over tachyonctl's local socket only (--control-socket)"),
    ("bindcmddevice", "control is over tachyonctl's local socket only"),
    ("opencommands", "control is over tachyonctl's local socket only"),
    ("dscp", "packets are sent with the default DSCP"),
    ("dumpdir", "measurements are not saved across restarts"),
    ("dumponexit", "measurements are not saved across restarts"),
    ("lock_all", "memory is not locked"),
    ("pidfile", "no PID file is written; run tachyond under a service manager"),
    ("sched_priority", "the scheduling policy is not changed"),
    ("user", "tachyond runs as the user given with --user"),
    ("ntpsigndsocket", "Samba's signing socket is not supported"),
    ("ptpport", "NTP over PTP is not supported"),
    ("ptpdomain", "NTP over PTP is not supported"),
    ("refresh", "pool names are looked up again when a pool is short of members"),
    ("commandkey", "chronyd no longer supports it either"),
    ("generatecommandkey", "chronyd no longer supports it either"),
    ("linux_freq_scale", "chronyd no longer supports it either"),
    ("linux_hz", "chronyd no longer supports it either"),
];

/// chronyd directives that are errors, and why: they ask for something
/// tachyon cannot do, and ignoring them would serve differently.
const REFUSED: &[(&str, &str)] = &[
    ("peer", "tachyon has no symmetric associations: it polls upstreams as a client ('server' or 'pool') and serves clients"),
    ("refclock", "reference clocks are not supported"),
    ("broadcast", "broadcast mode is not supported"),
    ("binddevice", "sockets cannot be bound to a device, and ignoring it would serve on every interface: use 'bindaddress' with the interface's address"),
    ("listen", "a chrony.conf gives the addresses with 'bindaddress' and 'port'"),
];

/// The chrony directive names tachyon knows, in table order.
pub(super) fn known_names() -> impl Iterator<Item = &'static str> {
    DIRECTIVES
        .iter()
        .map(|(n, _)| *n)
        .chain(IGNORED.iter().map(|(n, _)| *n))
        .chain(REFUSED.iter().map(|(n, _)| *n))
}

/// The chrony.conf under construction.
pub(super) struct Chrony {
    b: Builder,
    access: Access,
    /// `ratelimit`: the parameters and chrony's `kod` rate.
    ratelimit: Option<(RateLimitParams, u8)>,
    noclientlog: Option<(String, usize)>,
    bind4: Option<Ipv4Addr>,
    bind6: Option<Ipv6Addr>,
    port: Option<u16>,
    /// `leapsectz ZONE`, where it was given.
    leapsectz: Option<(String, String, usize)>,
}

/// Parses chrony.conf text without following its includes (only
/// [`super::Config::load`] reads files).
pub(super) fn parse_text(text: &str, source: &str) -> Result<Config, ConfigError> {
    let shared: std::sync::Arc<str> = source.into();
    let mut all = Vec::new();
    for numbered in lines::numbered(text, source) {
        let (number, line) = numbered?;
        all.push(Line {
            source: shared.clone(),
            number,
            text: line.to_string(),
            kind: LineKind::Config,
        });
    }
    parse(&all, source)
}

/// Parses the lines of a chrony.conf and the files it includes; `source` is
/// the main file.
pub(super) fn parse(all: &[Line], source: &str) -> Result<Config, ConfigError> {
    let mut chrony = Chrony {
        b: Builder::new(source),
        access: Access::default(),
        ratelimit: None,
        noclientlog: None,
        bind4: None,
        bind6: None,
        port: None,
        leapsectz: None,
    };
    for line in all {
        let words = lines::chrony_words(&line.text);
        let Some((name, args)) = words.split_first() else {
            continue;
        };
        let at = At {
            source: &line.source,
            line: line.number,
        };
        let located = |message: String| ConfigError {
            source: line.source.to_string(),
            line: line.number,
            message,
        };
        let name = name.to_ascii_lowercase();
        match line.kind {
            LineKind::Config => chrony.directive(&at, &name, args).map_err(located)?,
            LineKind::Sources => chrony.sources_line(&at, &name, args),
        }
    }
    chrony.finish()
}

impl Chrony {
    fn directive(&mut self, at: &At<'_>, name: &str, args: &[&str]) -> Result<(), String> {
        if let Some((_, handler)) = DIRECTIVES.iter().find(|(n, _)| *n == name) {
            return handler(self, at, args);
        }
        if let Some((_, why)) = IGNORED.iter().find(|(n, _)| *n == name) {
            self.b
                .warn(at, format!("{name}: ignored by tachyon ({why})"));
            return Ok(());
        }
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
            return Err(format!("'{name}' is not supported by tachyon: {why}"));
        }
        if ntp::directive_names().any(|n| n == name) || ntp::IGNORED.iter().any(|(n, _)| *n == name)
        {
            let instead = if name == "restrict" {
                " (in a chrony.conf, 'allow' and 'deny' say who is served)"
            } else {
                ""
            };
            return Err(format!(
                "'{name}' is ntp.conf syntax, and this file is read as chrony.conf{instead}; \
                 tachyond --config-format ntp reads a file as ntp.conf"
            ));
        }
        let known: Vec<&str> = known_names().collect();
        Err(format!(
            "unknown directive '{}'{}; supported in a chrony.conf: {} (see docs/config.md, \
             \"chrony.conf\")",
            clip(name),
            suggestion(name, &known),
            DIRECTIVES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// A line of a `sourcedir` file: chronyd reads only `server`, `pool` and
    /// `peer` there and skips a line it cannot use; so does tachyon, with a
    /// warning.
    fn sources_line(&mut self, at: &At<'_>, name: &str, args: &[&str]) {
        let result = match name {
            "server" => self.source(at, SourceKind::Server, args),
            "pool" => self.source(at, SourceKind::Pool, args),
            "peer" => Err("'peer' is not supported by tachyon".to_string()),
            _ => Err(format!(
                "a sources file holds only server, pool or peer lines, got {}",
                quoted(name)
            )),
        };
        if let Err(message) = result {
            self.b.warn(
                at,
                format!("{message}; the line is ignored, as chronyd ignores it"),
            );
        }
    }

    fn source(&mut self, at: &At<'_>, kind: SourceKind, args: &[&str]) -> Result<(), String> {
        let mut warnings = Vec::new();
        let server = chrony_source::parse(kind, at.line, args, &mut warnings)?;
        for message in warnings {
            self.b.warn(at, message);
        }
        self.b.add_server(server, at);
        Ok(())
    }

    fn access(&mut self, at: &At<'_>, permission: Permission, args: &[&str]) -> Result<(), String> {
        self.access.apply(permission, args, at.line)
    }

    /// `ratelimit [interval I] [burst B] [leak L] [kod K]`, with chrony's
    /// defaults (3, 8, 2, 0) for what is not given, and tachyon's own
    /// `table N` and `ipv6prefix P`.
    fn ratelimit(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        const OPTIONS: &str = "interval -4..=12, burst 1..=255, leak 1..=4, kod 0..=4 \
                               (and tachyon's table 1024..=16777216, ipv6prefix 24..=128)";
        let mut p = RateLimitParams {
            interval: 3,
            burst: 8,
            leak: 2,
            ..RateLimitParams::default()
        };
        let mut kod = 0;
        let mut rest = args;
        while let [option, tail @ ..] = rest {
            let value = tail.first().copied();
            let name = option.to_ascii_lowercase();
            let what = format!("ratelimit {name}");
            match name.as_str() {
                // tachyon's limiter counts intervals down to 2^-4 s.
                "interval" => p.interval = number_in(&what, value, (-4, 12))? as i8,
                "burst" => p.burst = number_in(&what, value, (1, 255))? as u8,
                "leak" => p.leak = number_in(&what, value, (1, 4))? as u8,
                "kod" => kod = number_in(&what, value, (0, 4))? as u8,
                "table" => p.table_entries = number_in(&what, value, (1024, 1 << 24))? as usize,
                "ipv6prefix" => p.ipv6_prefix = number_in(&what, value, (24, 128))? as u8,
                _ => {
                    return Err(format!(
                        "ratelimit: unknown option {}; expected {OPTIONS}",
                        quoted(option)
                    ))
                }
            }
            rest = &tail[1..];
        }
        self.b.once("ratelimit", at);
        self.ratelimit = Some((p, kod));
        Ok(())
    }

    fn noclientlog(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        no_arguments("noclientlog", args)?;
        self.noclientlog = Some((at.source.to_string(), at.line));
        Ok(())
    }

    fn bindaddress(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        let token = exactly_one("bindaddress", args, "an IP address")?;
        match token.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => {
                self.b.once("bindaddress (IPv4)", at);
                self.bind4 = Some(a);
            }
            Ok(IpAddr::V6(a)) => {
                self.b.once("bindaddress (IPv6)", at);
                self.bind6 = Some(a);
            }
            Err(_) => {
                return Err(format!(
                    "bindaddress: expected an IP address, got {} (names are not resolved)",
                    quoted(token)
                ))
            }
        }
        Ok(())
    }

    fn port(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        let token = exactly_one("port", args, "a port 1..=65535")?;
        let port = number_in("port", Some(token), (0, 65535))? as u16;
        if port == 0 {
            return Err(
                "port 0 makes chronyd a client only; tachyon always serves: remove \
                        the line (without 'allow', no client is answered)"
                    .to_string(),
            );
        }
        self.b.once("port", at);
        self.port = Some(port);
        Ok(())
    }

    /// `local [stratum N] [orphan] [distance D] [activate D] [waitsynced S]
    /// [waitunsynced S]`: the stratum is used (10 when not given).
    fn local(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        let mut stratum = 10;
        let mut rest = args;
        while let [option, tail @ ..] = rest {
            let name = option.to_ascii_lowercase();
            let value = tail.first().copied();
            rest = tail;
            match name.as_str() {
                "stratum" => {
                    stratum = number_in("local stratum", value, (1, 15))?;
                    rest = &tail[1..];
                }
                "orphan" => self.b.warn(
                    at,
                    "local: option \"orphan\" is ignored by tachyon (with 'local' the host \
                     clock is served and no source is polled)"
                        .to_string(),
                ),
                "distance" | "activate" | "waitsynced" | "waitunsynced" => {
                    let x = float(&format!("local {name}"), value)?;
                    self.b.warn(
                        at,
                        format!(
                            "local: option \"{name} {x}\" is ignored by tachyon (with 'local' \
                             the host clock is served from the start and no source is polled)"
                        ),
                    );
                    rest = &tail[1..];
                }
                _ => {
                    return Err(format!(
                        "local: unknown option {}; expected stratum N, orphan, distance D, \
                         activate D, waitsynced S, waitunsynced S",
                        quoted(option)
                    ))
                }
            }
        }
        self.b.once("local", at);
        // 1..=15 fits u8.
        self.b.config.local_stratum = Some(stratum as u8);
        Ok(())
    }

    /// `driftfile FILE [interval N]`: chrony's own format, kept apart from
    /// an ntpd driftfile.
    fn driftfile(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        let path = match args {
            [path] => path,
            [path, interval, n] if interval.eq_ignore_ascii_case("interval") => {
                number_in("driftfile interval", Some(n), (0, i64::from(i32::MAX)))?;
                path
            }
            _ => {
                return Err(format!(
                    "driftfile: expected FILE [interval N], got {}",
                    quoted_all(args)
                ))
            }
        };
        self.b.once("driftfile", at);
        self.b.config.chrony_driftfile = Some(PathBuf::from(path));
        Ok(())
    }

    /// `makestep THRESHOLD LIMIT`.
    fn makestep(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        let [threshold, limit] = args else {
            return Err(format!(
                "makestep: expected THRESHOLD LIMIT (seconds and a count), got {}",
                quoted_all(args)
            ));
        };
        let seconds = float("makestep threshold", Some(threshold))?;
        if !(0.0..=1e9).contains(&seconds) {
            return Err(format!(
                "makestep: the threshold must be 0 to 1e9 seconds, got {}",
                quoted(threshold)
            ));
        }
        let limit = number_in(
            "makestep limit",
            Some(limit),
            (i64::from(i32::MIN), i64::from(i32::MAX)),
        )?;
        self.b.once("makestep", at);
        self.b.config.makestep = Some(MakeStep {
            threshold: Duration::from_secs_f64(seconds),
            // chronyd: a negative limit steps at any update.
            limit: u32::try_from(limit).ok(),
        });
        Ok(())
    }

    fn minsources(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        let token = exactly_one("minsources", args, "a number 1..=64")?;
        let n = number_in("minsources", Some(token), (1, 64))?;
        self.b.once("minsources", at);
        self.b.config.min_sources = Some(n as u32);
        Ok(())
    }

    fn leapsectz(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        let zone = exactly_one("leapsectz", args, "a time zone such as right/UTC")?;
        self.b.once("leapsectz", at);
        self.leapsectz = Some((zone.to_string(), at.source.to_string(), at.line));
        Ok(())
    }

    fn leapseclist(&mut self, at: &At<'_>, args: &[&str]) -> Result<(), String> {
        let path = exactly_one("leapseclist", args, "a leap-seconds.list file")?;
        self.b.once("leapseclist", at);
        self.b.config.leapfile = Some(PathBuf::from(path));
        Ok(())
    }

    /// The directives whose effect depends on others, and what concerns the
    /// file as a whole.
    fn finish(mut self) -> Result<Config, ConfigError> {
        let mut allowed = RestrictFlags::empty();
        if let Some((params, kod)) = self.ratelimit {
            if let Some((source, line)) = &self.noclientlog {
                return Err(ConfigError {
                    source: source.clone(),
                    line: *line,
                    message: "noclientlog: chronyd refuses it together with ratelimit (rate \
                              limiting needs the client log); remove one of the two"
                        .to_string(),
                });
            }
            self.b.config.ratelimit = params;
            allowed = RestrictFlags::LIMITED;
            if kod > 0 {
                allowed.insert(RestrictFlags::KOD);
            }
        } else if let Some((source, line)) = self.noclientlog.take() {
            let at = At {
                source: &source,
                line,
            };
            self.b.warn(
                &at,
                "noclientlog: ignored by tachyon (it keeps no client log; the rate limiter's \
                 table exists only with 'ratelimit')"
                    .to_string(),
            );
        }
        self.listen_addresses();
        self.leap_seconds();
        // chronyd answers no mode 6 (ntpq) queries at all; neither does a
        // tachyond on a chrony.conf, so none of its rules allow them.
        allowed.insert(RestrictFlags::NOQUERY);
        self.b.config.restrict = self.access.rules(allowed);
        if !self.access.any_allow {
            self.b.warn_file(
                "no 'allow' directive: as chronyd does, tachyon answers no NTP client, the \
                 local host included; add 'allow' (everybody) or 'allow SUBNET' to serve"
                    .to_string(),
            );
        }
        let mut config = self.b.finish();
        config.dialect = Dialect::Chrony;
        Ok(config)
    }

    /// `bindaddress` and `port`: without either, the daemon's defaults
    /// (every address, port 123); else one address per family, the
    /// unspecified one where no `bindaddress` gives it, as chronyd binds.
    fn listen_addresses(&mut self) {
        if self.bind4.is_none() && self.bind6.is_none() && self.port.is_none() {
            return;
        }
        let port = self.port.unwrap_or(123);
        self.b.config.listen = vec![
            SocketAddr::new(
                IpAddr::V4(self.bind4.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                port,
            ),
            SocketAddr::new(
                IpAddr::V6(self.bind6.unwrap_or(Ipv6Addr::UNSPECIFIED)),
                port,
            ),
        ];
    }

    /// `leapsectz` stands for tzdata's leap-second list, unless
    /// `leapseclist` names one.
    fn leap_seconds(&mut self) {
        let Some((zone, source, line)) = self.leapsectz.take() else {
            return;
        };
        let at = At {
            source: &source,
            line,
        };
        let message = match &self.b.config.leapfile {
            Some(list) => format!(
                "leapsectz {}: ignored by tachyon: the leap seconds come from 'leapseclist \
                 {}'",
                clip(&zone),
                list.display()
            ),
            None => {
                self.b.config.leapfile = Some(PathBuf::from(TZDATA_LEAP_SECONDS));
                format!(
                    "leapsectz {}: tachyon reads the leap seconds from {TZDATA_LEAP_SECONDS} \
                     (tzdata's list of the same leap seconds), not from the time zone",
                    clip(&zone)
                )
            }
        };
        self.b.warn(&at, message);
    }
}

/// The directories of a `confdir` or `sourcedir` line (followed by the
/// loader, which reads the files).
pub(super) fn directories<'a>(directive: &str, args: &[&'a str]) -> Result<Vec<&'a str>, String> {
    match args.len() {
        0 => Err(format!(
            "{directive}: expected one or more directories, got nothing"
        )),
        1..=MAX_DIRS => Ok(args.to_vec()),
        n => Err(format!(
            "{directive}: at most {MAX_DIRS} directories, got {n}"
        )),
    }
}

fn no_arguments(directive: &str, args: &[&str]) -> Result<(), String> {
    match args {
        [] => Ok(()),
        _ => Err(format!(
            "{directive}: takes no arguments, got {}",
            quoted_all(args)
        )),
    }
}
