//! The ntp.conf dialect: lines, tokens and the table of directives.

use std::path::PathBuf;

use super::builder::{At, Builder};
use super::lines;
use super::model::{Config, ConfigError, RateLimitParams};
use super::own;
use super::restrict;
use super::upstream::{self, SourceKind};
use super::words::{clip, exactly_one, number_in, quoted, quoted_all, suggestion};

/// What a directive does to the configuration under construction.
pub(super) type Handler = fn(&mut Builder, &At<'_>, &[&str]) -> Result<(), String>;

/// Every directive tachyon acts on, and its handler: the one list that both
/// the parser and its messages use.
pub(super) const DIRECTIVES: &[(&str, Handler)] = &[
    ("server", |b, at, args| {
        source(b, at, SourceKind::Server, args)
    }),
    ("pool", |b, at, args| source(b, at, SourceKind::Pool, args)),
    ("driftfile", driftfile),
    ("leapfile", leapfile),
    ("restrict", restrict_line),
    ("ratelimit", ratelimit_line),
    ("listen", own::listen),
    ("workers", own::workers),
    ("io", own::io),
    ("rcvbuf", own::rcvbuf),
    ("metrics", own::metrics),
    ("clock", own::clock),
    ("xleave", own::xleave),
    ("txtimestamp", own::txtimestamp),
    ("holdover", own::holdover),
    ("local", local),
];

/// The names in [`DIRECTIVES`], in order.
pub(super) fn directive_names() -> impl Iterator<Item = &'static str> {
    DIRECTIVES.iter().map(|(name, _)| *name)
}

/// Every ntp.conf directive name tachyon knows: acted on, ignored or refused.
pub(super) fn known_names() -> impl Iterator<Item = &'static str> {
    directive_names()
        .chain(IGNORED.iter().map(|(n, _)| *n))
        .chain(UNSUPPORTED.iter().copied())
}

/// ntpd/NTPsec directives accepted with a warning, and why they do nothing.
pub(super) const IGNORED: &[(&str, &str)] = &[
    (
        "statistics",
        "statistics files are not written; use the metrics endpoint",
    ),
    (
        "statsdir",
        "statistics files are not written; use the metrics endpoint",
    ),
    (
        "filegen",
        "statistics files are not written; use the metrics endpoint",
    ),
    (
        "logfile",
        "messages go to standard error (the journal under systemd)",
    ),
    (
        "logconfig",
        "messages go to standard error (the journal under systemd)",
    ),
    ("enable", "ntpd's system options have no counterpart here"),
    ("disable", "ntpd's system options have no counterpart here"),
    ("tos", "selection and clustering parameters are built in"),
    ("tinker", "clock discipline parameters are built in"),
    ("keys", "symmetric-key authentication is not supported"),
    (
        "trustedkey",
        "symmetric-key authentication is not supported",
    ),
    (
        "requestkey",
        "remote configuration (mode 7) is not supported",
    ),
    (
        "controlkey",
        "remote configuration (mode 6) is not supported",
    ),
    ("crypto", "Autokey is not supported"),
    ("revoke", "Autokey is not supported"),
    ("interface", "use 'listen ADDRESS' to choose addresses"),
    ("nic", "use 'listen ADDRESS' to choose addresses"),
    ("broadcastdelay", "broadcast mode is not supported"),
    ("discard", "rate limiting parameters are built in"),
    ("mru", "the rate limiter's table is sized by tachyon"),
    (
        "includefile",
        "included files are not read; copy the directives you need into this file",
    ),
    (
        "leapsmearinterval",
        "a public server must not smear leap seconds (RFC 8633)",
    ),
    ("setvar", "there are no mode 6 variables"),
    ("phone", "reference clocks are not supported"),
    ("fudge", "reference clocks are not supported"),
    ("rlimit", "ntpd's resource limits do not apply"),
    (
        "saveconfigdir",
        "the configuration is never saved at run time",
    ),
];

/// Association types of ntpd that tachyon does not have: an error, since
/// the operator expects them to do something.
pub(super) const UNSUPPORTED: &[&str] = &[
    "peer",
    "unpeer",
    "broadcast",
    "broadcastclient",
    "manycastclient",
    "manycastserver",
    "multicastclient",
    "refclock",
];

pub(super) fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let mut builder = Builder::new(source);
    for numbered in lines::numbered(text, source) {
        let (line, raw) = numbered?;
        let tokens = lines::ntp_words(raw);
        let Some((&name, args)) = tokens.split_first() else {
            continue;
        };
        let at = At { source, line };
        directive(&mut builder, &at, name, args).map_err(|message| ConfigError {
            source: source.to_string(),
            line,
            message,
        })?;
    }
    Ok(builder.finish())
}

fn directive(b: &mut Builder, at: &At<'_>, name: &str, args: &[&str]) -> Result<(), String> {
    if let Some((_, handler)) = DIRECTIVES.iter().find(|(n, _)| *n == name) {
        return handler(b, at, args);
    }
    if let Some((_, why)) = IGNORED.iter().find(|(n, _)| *n == name) {
        b.warn(at, format!("{name}: ignored by tachyon ({why})"));
        return Ok(());
    }
    if UNSUPPORTED.contains(&name) {
        return Err(format!(
            "'{name}' is not supported by tachyon: it only polls upstreams as a client \
             ('server' or 'pool') and serves clients"
        ));
    }
    let known: Vec<&str> = directive_names()
        .chain(IGNORED.iter().map(|(n, _)| *n))
        .collect();
    Err(format!(
        "unknown directive '{}'{}; supported: {} (see docs/config.md)",
        clip(name),
        suggestion(name, &known),
        directive_names().collect::<Vec<_>>().join(", ")
    ))
}

/// `server` and `pool`.
fn source(b: &mut Builder, at: &At<'_>, kind: SourceKind, args: &[&str]) -> Result<(), String> {
    let mut warnings = Vec::new();
    let parsed = upstream::parse(kind, at.line, args, &mut warnings)?;
    for message in warnings {
        b.warn(at, message);
    }
    if let Some(server) = parsed {
        b.add_server(server, at);
    }
    Ok(())
}

fn restrict_line(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let mut warnings = Vec::new();
    let parsed = restrict::parse(at.line, args, &mut warnings)?;
    for message in warnings {
        b.warn(at, message);
    }
    if let Some(rule) = parsed {
        b.add_rule(rule, at);
    }
    Ok(())
}

fn driftfile(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let path = exactly_one("driftfile", args, "a file path")?;
    b.once("driftfile", at);
    b.config.driftfile = Some(PathBuf::from(path));
    Ok(())
}

fn leapfile(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let path = exactly_one("leapfile", args, "a file path")?;
    b.once("leapfile", at);
    b.config.leapfile = Some(PathBuf::from(path));
    Ok(())
}

/// `local stratum N`.
fn local(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let stratum = match args {
        ["stratum", rest @ ..] => {
            let n = exactly_one("local stratum", rest, "a number 1..=15")?;
            number_in("local stratum", Some(n), (1, 15))?
        }
        _ => {
            return Err(format!(
                "local: expected \"stratum N\" with N 1..=15, got {}",
                quoted_all(args)
            ))
        }
    };
    b.once("local", at);
    // 1..=15 fits u8.
    b.config.local_stratum = Some(stratum as u8);
    Ok(())
}

fn ratelimit_line(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    b.config.ratelimit = ratelimit(args)?;
    b.once("ratelimit", at);
    Ok(())
}

/// `ratelimit [interval I] [burst B] [leak L] [table N] [ipv6prefix P]`, in any
/// order; what is not given keeps its default.
fn ratelimit(args: &[&str]) -> Result<RateLimitParams, String> {
    const OPTIONS: &str = "interval -4..=12, burst 1..=255, leak 1..=8, \
                           table 1024..=16777216, ipv6prefix 24..=128";
    let mut p = RateLimitParams::default();
    if args.is_empty() {
        return Err(format!(
            "ratelimit: expected options ({OPTIONS}), got nothing"
        ));
    }
    let mut rest = args;
    while let [name, tail @ ..] = rest {
        let value = tail.first().copied();
        match *name {
            "interval" => p.interval = number_in("ratelimit interval", value, (-4, 12))? as i8,
            "burst" => p.burst = number_in("ratelimit burst", value, (1, 255))? as u8,
            // leak 0 would answer every limited request, i.e. not limit at all.
            "leak" => p.leak = number_in("ratelimit leak", value, (1, 8))? as u8,
            "table" => {
                p.table_entries = number_in("ratelimit table", value, (1024, 1 << 24))? as usize
            }
            "ipv6prefix" => {
                p.ipv6_prefix = number_in("ratelimit ipv6prefix", value, (24, 128))? as u8
            }
            other => {
                return Err(format!(
                    "ratelimit: unknown option {}; expected {OPTIONS}",
                    quoted(other)
                ))
            }
        }
        rest = &tail[1..];
    }
    Ok(p)
}
