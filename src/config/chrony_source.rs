//! chrony's `server` and `pool` lines (in chrony.conf and in `sourcedir`
//! files): the options tachyon acts on, those it accepts with a warning, and
//! those it refuses because ignoring them would change what is served.

use super::upstream::{self, ServerConfig, SourceKind, POLL_RANGE};
use super::words::{clip, number_in, quoted, suggestion};

/// Options whose value is ignored, with the kind of value and why.
const IGNORED_WITH_VALUE: &[(&str, Value, &str)] = &[
    ("key", Value::Int(1, u32::MAX as i64), "symmetric-key authentication to upstreams is not supported; the source is polled without it"),
    ("version", Value::Int(1, 4), "tachyon's client always sends NTPv4"),
    ("minstratum", Value::Int(0, 16), "selection uses the sources' own strata"),
    ("polltarget", Value::Int(1, i64::MAX), "the poll adapts to the measured wander instead"),
    ("maxdelay", Value::Float, "the clock filter weighs samples by delay instead of cutting them off"),
    ("maxdelayratio", Value::Float, "the clock filter weighs samples by delay instead of cutting them off"),
    ("maxdelaydevratio", Value::Float, "the clock filter weighs samples by delay instead of cutting them off"),
    ("maxdelayquant", Value::Float, "the clock filter weighs samples by delay instead of cutting them off"),
    ("mindelay", Value::Float, "the measured delay is used as it is"),
    ("asymmetry", Value::Float, "the path is taken as symmetric, as RFC 5905 does"),
    ("filter", Value::Int(0, i64::MAX), "the RFC 5905 clock filter is built in"),
    ("minsamples", Value::Int(0, i64::MAX), "the estimator chooses how many samples it keeps"),
    ("maxsamples", Value::Int(0, i64::MAX), "the estimator chooses how many samples it keeps"),
    ("maxunreach", Value::Int(0, i64::MAX), "a source is unreachable after three unanswered polls"),
    ("presend", Value::Int(-32, 32), "requests are not preceded by an extra packet"),
    ("certset", Value::Int(0, u32::MAX as i64), "NTS is not supported"),
    ("ntsport", Value::Int(0, 65535), "NTS is not supported"),
    ("extfield", Value::Hex, "NTP extension fields are not sent"),
];

/// Options without a value that are ignored, and why.
const IGNORED_FLAGS: &[(&str, &str)] = &[
    ("xleave", "upstream servers are polled in the basic mode (tachyond serves its own clients in the interleaved mode: see the xleave directive)"),
    (
        "copy",
        "there is no copy mode; the source's reference ID is not taken",
    ),
    (
        "offline",
        "the source is polled from the start; there is no chronyc online",
    ),
    (
        "auto_offline",
        "the source is polled whatever the send errors",
    ),
    ("require", "selection does not require particular sources"),
    (
        "trust",
        "a source is never forced to count as a truechimer; selection decides",
    ),
    (
        "ipv4",
        "the address family follows what the name resolves to",
    ),
    (
        "ipv6",
        "the address family follows what the name resolves to",
    ),
];

/// What follows an option.
#[derive(Clone, Copy)]
enum Value {
    Int(i64, i64),
    Float,
    Hex,
}

/// Every option name, for suggestions.
fn option_names() -> Vec<&'static str> {
    let acted = [
        "iburst",
        "burst",
        "prefer",
        "noselect",
        "minpoll",
        "maxpoll",
        "maxsources",
        "port",
        "offset",
        "nts",
    ];
    acted
        .into_iter()
        .chain(IGNORED_WITH_VALUE.iter().map(|(n, _, _)| *n))
        .chain(IGNORED_FLAGS.iter().map(|(n, _)| *n))
        .collect()
}

/// The arguments of a chrony `server` or `pool` line. Options are matched
/// without ASCII case, as chronyd does.
pub(super) fn parse(
    kind: SourceKind,
    line: usize,
    args: &[&str],
    warnings: &mut Vec<String>,
) -> Result<ServerConfig, String> {
    let directive = kind.as_str();
    let Some((&host_token, options)) = args.split_first() else {
        return Err(format!(
            "{directive}: expected a host name or IP address, got nothing"
        ));
    };
    let (host, _) = upstream::parse_host(directive, host_token)?;
    let what = format!("{directive} {}", clip(&host));
    let mut config = ServerConfig::new(kind, host, line);
    let (mut minpoll, mut maxpoll) = (None, None);
    let mut rest = options;
    while let [option, tail @ ..] = rest {
        let name = option.to_ascii_lowercase();
        let value = tail.first().copied();
        rest = tail;
        match name.as_str() {
            "iburst" => config.iburst = true,
            "burst" => config.burst = true,
            "prefer" => config.prefer = true,
            "noselect" => config.noselect = true,
            "minpoll" | "maxpoll" => {
                let poll = poll(&what, &name, value, warnings)?;
                if name == "minpoll" {
                    minpoll = Some(poll);
                } else {
                    maxpoll = Some(poll);
                }
                rest = &tail[1..];
            }
            "maxsources" => {
                let n = number_in(&format!("{what}: maxsources"), value, (1, 16))?;
                // 1..=16 fits u8.
                config.max_sources = n as u8;
                rest = &tail[1..];
            }
            "port" => {
                let port = number_in(&format!("{what}: port"), value, (0, 65535))?;
                if port != 123 {
                    return Err(format!(
                        "{what}: port {port}: tachyon polls upstream servers on port 123 only"
                    ));
                }
                rest = &tail[1..];
            }
            "offset" => {
                let offset = float(&format!("{what}: offset"), value)?;
                if offset != 0.0 {
                    return Err(format!(
                        "{what}: offset {offset}: tachyon cannot correct a source by a fixed \
                         offset, and ignoring it would shift the served time"
                    ));
                }
                rest = &tail[1..];
            }
            "nts" => {
                return Err(format!(
                    "{what}: nts: tachyon does not support NTS; polling this source without it \
                     would drop its authentication. Remove 'nts' to poll it unauthenticated"
                ))
            }
            _ => rest = ignored(&what, &name, option, tail, warnings)?,
        }
    }
    (config.minpoll, config.maxpoll) = upstream::poll_bounds(&what, minpoll, maxpoll)?;
    Ok(config)
}

/// A minpoll or maxpoll value: chrony allows -7..=24; tachyon polls within
/// 3..=17, so a value outside is moved to the nearer bound, with a warning.
fn poll(
    what: &str,
    name: &str,
    value: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<i8, String> {
    let n = number_in(&format!("{what}: {name}"), value, (-7, 24))?;
    let (lo, hi) = POLL_RANGE;
    let used = n.clamp(lo, hi);
    if used != n {
        warnings.push(format!(
            "{what}: {name} {n} is outside tachyon's {lo}..={hi}; {used} is used"
        ));
    }
    // POLL_RANGE fits i8.
    Ok(used as i8)
}

/// An option accepted with a warning; returns the arguments after it.
fn ignored<'a, 'b>(
    what: &str,
    name: &str,
    option: &str,
    tail: &'a [&'b str],
    warnings: &mut Vec<String>,
) -> Result<&'a [&'b str], String> {
    if let Some((_, why)) = IGNORED_FLAGS.iter().find(|(n, _)| *n == name) {
        warnings.push(format!(
            "{what}: option \"{name}\" is ignored by tachyon ({why})"
        ));
        return Ok(tail);
    }
    let Some((_, kind, why)) = IGNORED_WITH_VALUE.iter().find(|(n, _, _)| *n == name) else {
        return Err(format!(
            "{what}: unknown option {}{} (see docs/config.md, \"chrony.conf\")",
            quoted(option),
            suggestion(name, &option_names())
        ));
    };
    let value = tail.first().copied();
    let label = format!("{what}: {name}");
    let shown = match *kind {
        Value::Int(lo, hi) => number_in(&label, value, (lo, hi))?.to_string(),
        Value::Float => float(&label, value)?.to_string(),
        Value::Hex => hex(&label, value)?,
    };
    warnings.push(format!(
        "{what}: option \"{name} {shown}\" is ignored by tachyon ({why})"
    ));
    Ok(&tail[1..])
}

/// A finite decimal number.
pub(super) fn float(what: &str, token: Option<&str>) -> Result<f64, String> {
    let Some(token) = token else {
        return Err(format!("{what}: expected a number, got nothing"));
    };
    match token.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{what}: expected a number, got {}", quoted(token))),
    }
}

/// A hexadecimal number (chrony's extension field types), as written.
fn hex(what: &str, token: Option<&str>) -> Result<String, String> {
    let Some(token) = token else {
        return Err(format!(
            "{what}: expected a hexadecimal number, got nothing"
        ));
    };
    let digits = token.strip_prefix("0x").unwrap_or(token);
    if !digits.is_empty() && digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(token.to_string())
    } else {
        Err(format!(
            "{what}: expected a hexadecimal number, got {}",
            quoted(token)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: SourceKind, line: &str) -> Result<(ServerConfig, Vec<String>), String> {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let mut warnings = Vec::new();
        parse(kind, 1, &tokens, &mut warnings).map(|s| (s, warnings))
    }

    #[test]
    fn acted_on_options() {
        let (s, w) = one(
            SourceKind::Server,
            "192.0.2.1 iburst burst prefer minpoll 4 maxpoll 8 port 123 offset 0.0",
        )
        .unwrap();
        assert!(s.iburst && s.burst && s.prefer && !s.noselect);
        assert_eq!((s.minpoll, s.maxpoll), (4, 8));
        assert!(w.is_empty(), "{w:?}");
        let (s, w) = one(
            SourceKind::Pool,
            "pool.example.org IBurst noselect maxsources 4",
        )
        .unwrap();
        assert!(s.iburst && s.noselect);
        assert_eq!(s.max_sources, 4);
        assert!(w.is_empty(), "{w:?}");
        let (s, w) = one(
            SourceKind::Pool,
            "2.ubuntu.pool.ntp.org iburst maxsources 2",
        )
        .unwrap();
        assert_eq!(s.max_sources, 2);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn polls_outside_tachyons_range_are_moved_to_it() {
        let (s, w) = one(SourceKind::Server, "a minpoll -2 maxpoll 24").unwrap();
        assert_eq!((s.minpoll, s.maxpoll), (3, 17));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("minpoll -2 is outside tachyon's 3..=17; 3 is used"));
        assert!(one(SourceKind::Server, "a minpoll 25").is_err());
        assert!(one(SourceKind::Server, "a minpoll 10 maxpoll 8").is_err());
    }

    #[test]
    fn ignored_options_warn_with_their_values() {
        let (s, w) = one(
            SourceKind::Server,
            "a iburst xleave key 5 minstratum 2 maxdelay 0.3 extfield F323 ipv4 trust",
        )
        .unwrap();
        assert!(s.iburst);
        assert_eq!(w.len(), 7, "{w:?}");
        assert!(w[1].contains("\"key 5\""), "{w:?}");
        assert!(w[3].contains("\"maxdelay 0.3\""), "{w:?}");
        assert!(w[4].contains("\"extfield F323\""), "{w:?}");
    }

    #[test]
    fn refused_options_and_bad_values() {
        for (line, needle) in [
            ("a nts", "does not support NTS"),
            ("a port 11123", "port 123 only"),
            ("a offset 0.5", "fixed offset"),
            ("a maxdelay x", "expected a number, got \"x\""),
            ("a key", "got nothing"),
            ("a extfield zz", "hexadecimal"),
            ("a maxsources 17", "1..=16"),
            ("a ibrust", "did you mean \"iburst\""),
            ("", "got nothing"),
            ("ho$t", "not a valid host name"),
        ] {
            let e = one(SourceKind::Server, line).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
