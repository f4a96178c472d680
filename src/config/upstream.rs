//! `server` and `pool` lines.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::words::{clip, number_in, quoted, suggestion};

/// Poll interval bounds, as log2 seconds.
pub(super) const DEFAULT_MINPOLL: i8 = 6;
pub(super) const DEFAULT_MAXPOLL: i8 = 10;
pub(super) const POLL_RANGE: (i64, i64) = (3, 17);
/// Addresses taken from one pool name, as the sync thread does.
pub(super) const DEFAULT_MAX_SOURCES: u8 = 4;

const OPTIONS: &str = "iburst, burst, prefer, noselect, minpoll N, maxpoll N \
                       (accepted and ignored: version N, key N, xleave, true, autokey)";
const OPTION_NAMES: &[&str] = &[
    "iburst", "burst", "prefer", "noselect", "minpoll", "maxpoll", "version", "key", "xleave",
    "true", "autokey",
];

/// Whether a line names one server or a pool of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// `server HOST`: one association, with the first address the name
    /// resolves to.
    Server,
    /// `pool HOST`: several associations, one per address the name yields.
    Pool,
}

impl SourceKind {
    /// The directive name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Server => "server",
            SourceKind::Pool => "pool",
        }
    }
}

/// One `server` or `pool` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub kind: SourceKind,
    /// A host name, or an IP address in text form (IPv6 without brackets).
    /// Never resolved by the parser.
    pub host: String,
    /// Send a burst of packets at start and while unreachable.
    pub iburst: bool,
    /// Send a burst of packets at every poll.
    pub burst: bool,
    pub prefer: bool,
    /// Poll, but never select this source.
    pub noselect: bool,
    /// Smallest poll interval, log2 seconds (3..=17, default 6).
    pub minpoll: i8,
    /// Largest poll interval, log2 seconds (3..=17, default 10).
    pub maxpoll: i8,
    /// For a pool: the most addresses to take from it (chrony's
    /// `maxsources`, 1..=16, default 4).
    pub max_sources: u8,
    /// The line of the configuration file.
    pub line: usize,
}

impl ServerConfig {
    /// An upstream of `kind` on `line` with every option at its default.
    pub(super) fn new(kind: SourceKind, host: String, line: usize) -> ServerConfig {
        ServerConfig {
            kind,
            host,
            iburst: false,
            burst: false,
            prefer: false,
            noselect: false,
            minpoll: DEFAULT_MINPOLL,
            maxpoll: DEFAULT_MAXPOLL,
            max_sources: DEFAULT_MAX_SOURCES,
            line,
        }
    }
}

/// Parses the arguments of a `server`/`pool` line. Returns `None` for a
/// line that is accepted with a warning but configures nothing (an ntpd
/// reference clock address).
pub(super) fn parse(
    kind: SourceKind,
    line: usize,
    args: &[&str],
    warnings: &mut Vec<String>,
) -> Result<Option<ServerConfig>, String> {
    let directive = kind.as_str();
    let mut args = args.iter().copied();
    let mut family = None;
    let mut host_token = args.next();
    if let Some(flag @ ("-4" | "-6")) = host_token {
        family = Some(flag);
        host_token = args.next();
    }
    let Some(host_token) = host_token else {
        return Err(format!(
            "{directive}: expected a host name or IP address, got nothing"
        ));
    };
    if OPTION_NAMES.contains(&host_token) {
        return Err(format!(
            "{directive}: expected a host name or IP address before the options, got {}",
            quoted(host_token)
        ));
    }
    let (host, ip) = parse_host(directive, host_token)?;
    match (family, ip) {
        (Some("-4"), Some(IpAddr::V6(_))) | (Some("-6"), Some(IpAddr::V4(_))) => {
            return Err(format!(
                "{directive}: {} does not match the address family of {}",
                family.unwrap_or_default(),
                clip(&host)
            ));
        }
        (Some(flag), _) => warnings.push(format!(
            "{directive} {}: \"{flag}\" is ignored by tachyon (the address family \
             follows what the name resolves to)",
            clip(&host)
        )),
        (None, _) => {}
    }

    let mut config = ServerConfig::new(kind, host, line);
    let mut minpoll = None;
    let mut maxpoll = None;
    let mut ignored = Vec::new();
    let what = format!("{directive} {}", clip(&config.host));
    while let Some(option) = args.next() {
        match option {
            "iburst" => config.iburst = true,
            "burst" => config.burst = true,
            "prefer" => config.prefer = true,
            "noselect" => config.noselect = true,
            "minpoll" | "maxpoll" => {
                let value = number_in(&format!("{what}: {option}"), args.next(), POLL_RANGE)?;
                // POLL_RANGE fits i8.
                let value = value as i8;
                if option == "minpoll" {
                    minpoll = Some(value);
                } else {
                    maxpoll = Some(value);
                }
            }
            "version" => {
                let v = number_in(&format!("{what}: version"), args.next(), (1, 4))?;
                ignored.push((
                    format!("version {v}"),
                    "tachyon's client always sends NTPv4",
                ));
            }
            "key" => {
                let k = number_in(&format!("{what}: key"), args.next(), (1, 65535))?;
                ignored.push((
                    format!("key {k}"),
                    "symmetric-key authentication to upstreams is not supported",
                ));
            }
            "autokey" => ignored.push((
                option.to_string(),
                "Autokey authentication is not supported",
            )),
            "xleave" => ignored.push((
                option.to_string(),
                "upstream servers are polled in the basic mode (tachyond serves its own clients in the interleaved mode: see the xleave directive)",
            )),
            "true" => ignored.push((
                option.to_string(),
                "a source is never forced to be a truechimer; selection decides",
            )),
            // NTPsec's: refused rather than ignored, since polling without it
            // would silently drop the source's authentication.
            "nts" => {
                return Err(format!(
                    "{what}: nts: tachyon does not support NTS; polling this source without it \
                     would drop its authentication. Remove 'nts' to poll it unauthenticated"
                ))
            }
            _ => {
                return Err(format!(
                    "{what}: unknown option {}{}; allowed: {OPTIONS}",
                    quoted(option),
                    suggestion(option, OPTION_NAMES)
                ))
            }
        }
    }
    for (option, why) in ignored {
        warnings.push(format!(
            "{what}: option \"{option}\" is ignored by tachyon ({why})"
        ));
    }

    (config.minpoll, config.maxpoll) = poll_bounds(&what, minpoll, maxpoll)?;

    if let Some(IpAddr::V4(v4)) = ip {
        if v4.octets()[..2] == [127, 127] {
            warnings.push(format!(
                "{what}: ntpd reference clock addresses (127.127.t.u) are not supported; \
                 the line is ignored (use 'local stratum N' to serve without upstreams)"
            ));
            return Ok(None);
        }
    }
    Ok(Some(config))
}

/// The poll bounds of a line from the `minpoll`/`maxpoll` it gives: one
/// bound given alone moves the other default out of its way.
pub(super) fn poll_bounds(
    what: &str,
    minpoll: Option<i8>,
    maxpoll: Option<i8>,
) -> Result<(i8, i8), String> {
    match (minpoll, maxpoll) {
        (Some(min), Some(max)) if min > max => Err(format!(
            "{what}: minpoll {min} is greater than maxpoll {max}"
        )),
        _ => {
            let min = minpoll.unwrap_or(DEFAULT_MINPOLL.min(maxpoll.unwrap_or(i8::MAX)));
            Ok((min, maxpoll.unwrap_or(DEFAULT_MAXPOLL.max(min))))
        }
    }
}

/// Checks a host token and returns it in stored form, with its address if
/// it is a literal.
pub(super) fn parse_host(directive: &str, token: &str) -> Result<(String, Option<IpAddr>), String> {
    if let Some(inner) = token.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(v6)) => Ok((inner[..inner.len() - 1].to_string(), Some(IpAddr::V6(v6)))),
            _ => Err(format!(
                "{directive}: {} is not a valid bracketed IPv6 address",
                quoted(token)
            )),
        };
    }
    if let Ok(ip) = token.parse::<IpAddr>() {
        return Ok((token.to_string(), Some(ip)));
    }
    if is_host_name(token) {
        return Ok((token.to_string(), None));
    }
    if token.contains(':') || looks_numeric(token) {
        return Err(format!(
            "{directive}: {} is not a valid IP address",
            quoted(token)
        ));
    }
    Err(format!(
        "{directive}: {} is not a valid host name or IP address",
        quoted(token)
    ))
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1 to 63
/// characters, at most 253 in all, an optional final dot. Underscores are
/// allowed because operators' files use names such as `ntp_server_1`.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 || looks_numeric(name) {
        return false;
    }
    name.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Digits and dots only, with an all-digit last label: meant as an IPv4
/// address (no top-level domain is all digits).
fn looks_numeric(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && name.parse::<Ipv4Addr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<(Option<ServerConfig>, Vec<String>), String> {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let mut warnings = Vec::new();
        parse(SourceKind::Server, 1, &tokens, &mut warnings).map(|s| (s, warnings))
    }

    #[test]
    fn host_forms() {
        for (token, stored) in [
            ("ntp_server_1", "ntp_server_1"),
            ("time.example.org.", "time.example.org."),
            ("192.0.2.1", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
        ] {
            let (s, w) = one(token).unwrap();
            assert_eq!(s.unwrap().host, stored);
            assert!(w.is_empty());
        }
        for bad in [
            "[2001:db8::1",
            "[192.0.2.1]",
            "1.2.3.999",
            "a..b",
            "-x",
            "ho$t",
            "::g",
        ] {
            assert!(one(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn poll_defaults_follow_a_lone_bound() {
        let (s, _) = one("h minpoll 12").unwrap();
        let s = s.unwrap();
        assert_eq!((s.minpoll, s.maxpoll), (12, 12));
        let (s, _) = one("h maxpoll 4").unwrap();
        let s = s.unwrap();
        assert_eq!((s.minpoll, s.maxpoll), (4, 4));
        let (s, _) = one("h minpoll 3 maxpoll 17").unwrap();
        let s = s.unwrap();
        assert_eq!((s.minpoll, s.maxpoll), (3, 17));
    }

    #[test]
    fn family_flag_and_refclock() {
        let (s, w) = one("-4 192.0.2.1").unwrap();
        assert!(s.is_some());
        assert_eq!(w.len(), 1);
        assert!(one("-4 2001:db8::1").is_err());
        assert!(one("-6 192.0.2.1").is_err());
        let (s, w) = one("127.127.1.0").unwrap();
        assert!(s.is_none());
        assert!(w[0].contains("reference clock"), "{w:?}");
    }

    #[test]
    fn ntpsec_nts_is_refused_with_the_reason() {
        let e = one("time.example.org iburst nts").unwrap_err();
        assert!(e.contains("does not support NTS"), "{e}");
    }

    #[test]
    fn option_names_are_not_hosts() {
        let e = one("iburst").unwrap_err();
        assert!(e.contains("before the options"), "{e}");
    }
}
