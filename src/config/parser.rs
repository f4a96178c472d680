//! Lines, tokens and directives.

use std::path::PathBuf;

use super::{
    addr, restrict, upstream, ClockChoice, Config, ConfigError, ConfigWarning, IoChoice, SourceKind,
};

const SUPPORTED: &str = "server, pool, driftfile, leapfile, restrict, ratelimit, listen, \
                         workers, io, metrics, clock, local, holdover";

const DIRECTIVES: &[&str] = &[
    "server",
    "pool",
    "driftfile",
    "leapfile",
    "restrict",
    "ratelimit",
    "listen",
    "workers",
    "io",
    "rcvbuf",
    "metrics",
    "clock",
    "local",
    "holdover",
];

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
const UNSUPPORTED: &[&str] = &[
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
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new(source);
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = match raw.split_once('#') {
            Some((before, _comment)) => before,
            None => raw,
        };
        let tokens: Vec<&str> = content.split_whitespace().collect();
        let Some((&name, args)) = tokens.split_first() else {
            continue;
        };
        parser
            .directive(line, name, args)
            .map_err(|message| ConfigError {
                source: source.to_string(),
                line,
                message,
            })?;
    }
    Ok(parser.finish())
}

struct Parser {
    config: Config,
    /// Singleton directives seen, with the line that last set each.
    seen: Vec<(&'static str, usize)>,
}

impl Parser {
    fn new(source: &str) -> Self {
        Parser {
            config: Config {
                source: source.to_string(),
                servers: Vec::new(),
                driftfile: None,
                leapfile: None,
                restrict: Vec::new(),
                listen: Vec::new(),
                workers: None,
                io: IoChoice::Auto,
                metrics: None,
                clock: ClockChoice::Auto,
                local_stratum: None,
                holdover: None,
                ratelimit: super::RateLimitParams::default(),
                rcvbuf: super::DEFAULT_RCVBUF,
                warnings: Vec::new(),
            },
            seen: Vec::new(),
        }
    }

    fn warn(&mut self, line: usize, message: String) {
        self.config.warnings.push(ConfigWarning {
            source: self.config.source.clone(),
            line,
            message,
        });
    }

    /// Records a singleton directive; warns when it was set before.
    fn once(&mut self, name: &'static str, line: usize) {
        match self.seen.iter_mut().find(|(n, _)| *n == name) {
            Some((_, earlier)) => {
                let before = std::mem::replace(earlier, line);
                self.warn(
                    line,
                    format!("{name}: already set on line {before}; the value on this line is used"),
                );
            }
            None => self.seen.push((name, line)),
        }
    }

    fn directive(&mut self, line: usize, name: &str, args: &[&str]) -> Result<(), String> {
        match name {
            "server" => self.upstream(SourceKind::Server, line, args),
            "pool" => self.upstream(SourceKind::Pool, line, args),
            "restrict" => self.restrict(line, args),
            "driftfile" => {
                let path = exactly_one("driftfile", args, "a file path")?;
                self.once("driftfile", line);
                self.config.driftfile = Some(PathBuf::from(path));
                Ok(())
            }
            "leapfile" => {
                let path = exactly_one("leapfile", args, "a file path")?;
                self.once("leapfile", line);
                self.config.leapfile = Some(PathBuf::from(path));
                Ok(())
            }
            "listen" => {
                let token = exactly_one("listen", args, "an address such as 192.0.2.1")?;
                let addr = addr::parse_listen(token)?;
                if self.config.listen.contains(&addr) {
                    self.warn(
                        line,
                        format!("listen: {addr} is already listed; this line is ignored"),
                    );
                } else {
                    self.config.listen.push(addr);
                }
                Ok(())
            }
            "workers" => {
                const EXPECTED: &str = "a number 1..=1024 or \"auto\"";
                let token = exactly_one("workers", args, EXPECTED)?;
                let workers = match token {
                    "auto" => None,
                    _ => match token.parse::<usize>() {
                        Ok(n) if (1..=1024).contains(&n) => Some(n),
                        _ => {
                            return Err(format!(
                                "workers: expected {EXPECTED}, got {}",
                                quoted(token)
                            ))
                        }
                    },
                };
                self.once("workers", line);
                self.config.workers = workers;
                Ok(())
            }
            "io" => {
                let token = exactly_one("io", args, "\"uring\", \"mmsg\" or \"auto\"")?;
                let io = token.parse::<IoChoice>().map_err(|e| format!("io: {e}"))?;
                self.once("io", line);
                self.config.io = io;
                Ok(())
            }
            "rcvbuf" => {
                const EXPECTED: &str = "a size 16K..256M (bytes, or with K or M)";
                let token = exactly_one("rcvbuf", args, EXPECTED)?;
                let bytes = parse_size(token)
                    .filter(|b| super::RCVBUF_RANGE.contains(b))
                    .ok_or_else(|| format!("rcvbuf: expected {EXPECTED}, got {}", quoted(token)))?;
                self.once("rcvbuf", line);
                self.config.rcvbuf = bytes;
                Ok(())
            }
            "metrics" => {
                let token = exactly_one("metrics", args, "ADDRESS:PORT such as 127.0.0.1:9123")?;
                let addr = addr::parse_metrics(token)?;
                self.once("metrics", line);
                self.config.metrics = Some(addr);
                Ok(())
            }
            "clock" => {
                let token = exactly_one("clock", args, "\"system\", \"software\" or \"auto\"")?;
                let clock = token
                    .parse::<ClockChoice>()
                    .map_err(|e| format!("clock: {e}"))?;
                self.once("clock", line);
                self.config.clock = clock;
                Ok(())
            }
            "local" => {
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
                self.once("local", line);
                // 1..=15 fits u8.
                self.config.local_stratum = Some(stratum as u8);
                Ok(())
            }
            "holdover" => {
                let seconds = exactly_one("holdover", args, "seconds 1..=86400")?;
                let seconds = number_in("holdover", Some(seconds), (1, 86_400))?;
                self.once("holdover", line);
                // 1..=86400 fits u32.
                self.config.holdover = Some(seconds as u32);
                Ok(())
            }
            "ratelimit" => {
                self.config.ratelimit = ratelimit(args)?;
                self.once("ratelimit", line);
                Ok(())
            }
            _ => self.other(line, name),
        }
    }

    fn upstream(&mut self, kind: SourceKind, line: usize, args: &[&str]) -> Result<(), String> {
        let mut warnings = Vec::new();
        let parsed = upstream::parse(kind, line, args, &mut warnings)?;
        for message in warnings {
            self.warn(line, message);
        }
        let Some(server) = parsed else {
            return Ok(());
        };
        let duplicate = self
            .config
            .servers
            .iter()
            .find(|s| s.kind == server.kind && s.host.eq_ignore_ascii_case(&server.host))
            .map(|s| s.line);
        match duplicate {
            Some(first) => self.warn(
                line,
                format!(
                    "{} {}: already configured on line {first}; this line is ignored",
                    kind.as_str(),
                    server.host
                ),
            ),
            None => self.config.servers.push(server),
        }
        Ok(())
    }

    fn restrict(&mut self, line: usize, args: &[&str]) -> Result<(), String> {
        let mut warnings = Vec::new();
        let parsed = restrict::parse(line, args, &mut warnings)?;
        for message in warnings {
            self.warn(line, message);
        }
        let Some(rule) = parsed else {
            return Ok(());
        };
        match self
            .config
            .restrict
            .iter_mut()
            .find(|r| r.target == rule.target)
        {
            Some(existing) => {
                existing.flags.insert(rule.flags);
                let message = format!(
                    "restrict {}: same address and mask as line {}; the flags are combined \
                     ({}), as ntpd does",
                    rule.target, existing.line, existing.flags
                );
                self.warn(line, message);
            }
            None => self.config.restrict.push(rule),
        }
        Ok(())
    }

    /// Directives tachyon does not act on.
    fn other(&mut self, line: usize, name: &str) -> Result<(), String> {
        if let Some((_, why)) = IGNORED.iter().find(|(n, _)| *n == name) {
            self.warn(line, format!("{name}: ignored by tachyon ({why})"));
            return Ok(());
        }
        if UNSUPPORTED.contains(&name) {
            return Err(format!(
                "'{name}' is not supported by tachyon: it only polls upstreams as a client \
                 ('server' or 'pool') and serves clients"
            ));
        }
        let known: Vec<&str> = DIRECTIVES
            .iter()
            .copied()
            .chain(IGNORED.iter().map(|(n, _)| *n))
            .collect();
        Err(format!(
            "unknown directive '{name}'{}; supported: {SUPPORTED} (see docs/config.md)",
            suggestion(name, &known)
        ))
    }

    fn finish(mut self) -> Config {
        if self.config.servers.is_empty() && self.config.local_stratum.is_none() {
            self.warn(
                0,
                "no 'server' or 'pool' line: the server will stay unsynchronized \
                 unless 'local stratum N' is set"
                    .to_string(),
            );
        }
        self.config
    }
}

/// The single argument of a directive.
/// A byte count: digits, optionally followed by K or M (powers of 1024, either
/// case). `None` for anything else or an overflow.
fn parse_size(token: &str) -> Option<usize> {
    let (digits, unit) = match token.char_indices().last()? {
        (i, 'k' | 'K') => (&token[..i], 1usize << 10),
        (i, 'm' | 'M') => (&token[..i], 1 << 20),
        _ => (token, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

fn exactly_one<'t>(directive: &str, args: &[&'t str], expected: &str) -> Result<&'t str, String> {
    match args {
        [one] => Ok(one),
        [] => Err(format!("{directive}: expected {expected}, got nothing")),
        [_, extra @ ..] => Err(format!(
            "{directive}: expected only {expected}, got extra {}",
            quoted_all(extra)
        )),
    }
}

/// `ratelimit [interval I] [burst B] [leak L] [table N] [ipv6prefix P]`, in any
/// order; what is not given keeps its default.
fn ratelimit(args: &[&str]) -> Result<super::RateLimitParams, String> {
    const OPTIONS: &str = "interval -4..=12, burst 1..=255, leak 0..=8, \
                           table 1024..=16777216, ipv6prefix 24..=128";
    let mut p = super::RateLimitParams::default();
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
            "leak" => p.leak = number_in("ratelimit leak", value, (0, 8))? as u8,
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

/// A decimal number in `lo..=hi`, for messages prefixed with `what`.
pub(super) fn number_in(
    what: &str,
    token: Option<&str>,
    (lo, hi): (i64, i64),
) -> Result<i64, String> {
    let Some(token) = token else {
        return Err(format!(
            "{what}: expected a number {lo}..={hi}, got nothing"
        ));
    };
    match token.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!(
            "{what}: expected a number {lo}..={hi}, got {}",
            quoted(token)
        )),
    }
}

/// A token in double quotes, control characters escaped.
pub(super) fn quoted(token: &str) -> String {
    format!("{token:?}")
}

fn quoted_all(tokens: &[&str]) -> String {
    if tokens.is_empty() {
        return "nothing".to_string();
    }
    tokens
        .iter()
        .map(|t| quoted(t))
        .collect::<Vec<_>>()
        .join(" ")
}

/// ` (did you mean "X"?)` when a candidate is a near miss, else nothing.
pub(super) fn suggestion(word: &str, candidates: &[&str]) -> String {
    let best = candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d > 0 && d <= 2 && d < c.len() => format!(" (did you mean \"{c}\"?)"),
        _ => String::new(),
    }
}

/// Levenshtein distance over characters (ASCII case counts as a change).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ibrust", "iburst"), 2);
        assert_eq!(edit_distance("Server", "server"), 1);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggestion("sever", DIRECTIVES),
            " (did you mean \"server\"?)"
        );
        assert_eq!(suggestion("xyzzy", DIRECTIVES), "");
        // Exact matches and two-letter words that share nothing suggest nothing.
        assert_eq!(suggestion("server", DIRECTIVES), "");
        assert_eq!(suggestion("zz", DIRECTIVES), "");
    }

    #[test]
    fn argument_helpers() {
        assert_eq!(exactly_one("x", &["a"], "A"), Ok("a"));
        assert_eq!(
            exactly_one("x", &[], "A").unwrap_err(),
            "x: expected A, got nothing"
        );
        assert_eq!(
            exactly_one("x", &["a", "b", "c"], "A").unwrap_err(),
            "x: expected only A, got extra \"b\" \"c\""
        );
        assert_eq!(number_in("n", Some("5"), (1, 9)), Ok(5));
        assert!(number_in("n", Some("0"), (1, 9)).is_err());
        assert!(number_in("n", Some("x"), (1, 9)).is_err());
        assert!(number_in("n", None, (1, 9)).is_err());
        assert_eq!(quoted("a\tb"), "\"a\\tb\"");
    }
}
