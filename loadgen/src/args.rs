//! Command-line arguments and the small parsers behind them (durations, ramps,
//! address ranges, traffic patterns, targets).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};

/// Absolute upper bound on one run's length, whatever the arguments say.
pub const MAX_RUN: Duration = Duration::from_secs(24 * 3600);
/// Default bound on the total number of requests of one run.
pub const DEFAULT_MAX_REQUESTS: u64 = 1_000_000_000;
/// Most source addresses a range may expand to.
const MAX_SOURCES: u128 = 65_536;

/// Open-loop NTP load generator that checks every answer.
///
/// Sends NTP client requests (mode 3) to TARGET at a fixed rate or a ramp of
/// rates, from many simulated clients, and reports answers, losses, invalid
/// replies, Kiss-o'-Death codes, round-trip time and server processing time.
/// Every run is bounded in time and in number of requests and stops by itself.
#[derive(Parser, Debug, Clone)]
#[command(name = "ntp-blast", version, about, long_about)]
pub struct Args {
    /// Server to load: HOST, HOST:PORT, IPv6 literal, or [IPv6]:PORT (default port 123).
    pub target: String,

    /// Requests per second offered in total (open loop: sent on schedule
    /// whether or not answers come).
    #[arg(short, long, default_value_t = 1000.0, value_parser = parse_rate,
          conflicts_with = "ramp")]
    pub rate: f64,

    /// Ramp of rates: START,MULT,STEP_SECS,STOP, e.g. 10000,1.5,5,200000 offers
    /// 10000/s for 5 s, then 15000/s for 5 s, ... while the rate is <= STOP.
    #[arg(long, value_parser = parse_ramp, value_name = "START,MULT,STEP_SECS,STOP")]
    pub ramp: Option<Ramp>,

    /// How long to send (e.g. 10s, 500ms, 2m). Default 10 s; with --ramp the
    /// ramp's own length (then --duration only shortens it). At most 24 h.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Hard cap on the total number of requests sent.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUESTS)]
    pub max_requests: u64,

    /// Number of simulated clients: distinct UDP sockets (source ports).
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub clients: u32,

    /// Source addresses to bind the clients to, spread round-robin: a
    /// comma-separated list of addresses and ranges, e.g. 127.0.0.1-127.0.0.50,127.1.0.1.
    #[arg(long, value_parser = parse_sources, value_name = "LIST")]
    pub sources: Option<Sources>,

    /// Traffic pattern: `flood` (round-robin over the clients at the offered
    /// rate) or `poll:SECS[,iburst:N]` (each client sends N requests 2 s apart,
    /// then one every SECS seconds; --rate and --ramp do not apply).
    #[arg(long, default_value = "flood", value_parser = parse_pattern)]
    pub pattern: Pattern,

    /// Sending threads; each owns a share of the clients and of the rate.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,

    /// Datagrams per sendmmsg/recvmmsg call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,

    /// A request not answered within this time is counted lost (e.g. 1s, 200ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// NTP version number put in the requests (1-4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub ntp_version: u8,

    /// Where the send time T1 comes from: `user` (the clock read just before
    /// each sendmmsg: the RTT is an upper bound, by up to the time the call
    /// takes) or `kernel` (SO_TIMESTAMPING software TX stamps read back from
    /// the error queue: exact, costs an extra syscall per batch).
    #[arg(long, value_enum, default_value_t = TxStamp::User)]
    pub tx_timestamp: TxStamp,

    /// Clients follow RFC 9769's interleaved mode: each request names the
    /// receive timestamp of its client's last reply as its origin, so a
    /// server that supports the mode answers with the exact transmit
    /// timestamp of that reply. Reports basic, interleaved and invalid
    /// replies and the offset each mode gives (NTPv4 only). Use enough
    /// clients that each has its reply before its next request.
    #[arg(long)]
    pub interleaved: bool,

    /// Accept unsynchronized replies (LI 3, or stratum 0 that is not a
    /// RATE/DENY/RSTR kiss, or stratum 16) as answers; counted separately.
    #[arg(long)]
    pub allow_unsync: bool,

    /// Exit with status 1 when the loss exceeds PCT percent of the requests sent.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub max_loss: Option<f64>,

    /// Exit with status 1 when any invalid reply was seen.
    #[arg(long)]
    pub fail_on_invalid: bool,

    /// With --ramp: stop the ramp once a step's loss exceeds PCT percent (known
    /// one --timeout after the step ends, while the next step runs).
    #[arg(long, value_name = "PCT", value_parser = parse_percent, requires = "ramp")]
    pub stop_on_loss: Option<f64>,

    /// Print one JSON object with every step, every second and the totals to stdout.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print one CSV row per step (and a header) to stdout.
    #[arg(long)]
    pub csv: bool,

    /// No live table on stderr (the final summary is still printed).
    #[arg(short, long)]
    pub quiet: bool,

    /// Allow a target outside the loopback range. Only load servers you operate.
    #[arg(long)]
    pub allow_remote: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TxStamp {
    User,
    Kernel,
}

/// `--ramp START,MULT,STEP_SECS,STOP`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ramp {
    pub start: f64,
    pub mult: f64,
    pub step: Duration,
    pub stop: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    /// Round-robin over the clients at the offered rate.
    Flood,
    /// Each client: `iburst` requests 2 s apart, then one every `interval`.
    Poll { interval: Duration, iburst: u32 },
}

/// Source addresses, in order; client `i` binds `addrs[i % len]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sources(pub Vec<IpAddr>);

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = parse_number(s)?;
    if !(r > 0.0 && r <= 100_000_000.0) {
        return Err("rate must be > 0 and <= 100000000 requests/s".into());
    }
    Ok(r)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("not a percentage: {s:?}"))?;
    if !(0.0..=100.0).contains(&p) {
        return Err("percentage must be within 0..100".into());
    }
    Ok(p)
}

/// Numbers may use `k`/`M` suffixes and `_` separators: 50k, 1.5M, 200_000.
fn parse_number(s: &str) -> Result<f64, String> {
    let t = s.trim().replace('_', "");
    let (num, mult) = if let Some(n) = t.strip_suffix(['k', 'K']) {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('M') {
        (n, 1e6)
    } else {
        (t.as_str(), 1.0)
    };
    let v: f64 = num.parse().map_err(|_| format!("not a number: {s:?}"))?;
    if !v.is_finite() {
        return Err(format!("not a finite number: {s:?}"));
    }
    Ok(v * mult)
}

/// Durations: `10s`, `500ms`, `250us`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s, 500ms, 2m)"))?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown duration unit {unit:?} in {s:?}")),
    };
    let secs = v * scale;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("duration must be positive: {s:?}"));
    }
    if secs > MAX_RUN.as_secs_f64() {
        return Err(format!("duration {s:?} is longer than 24 h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_ramp(s: &str) -> Result<Ramp, String> {
    let parts: Vec<&str> = s.split(',').collect();
    if parts.len() != 4 {
        return Err("expected START,MULT,STEP_SECS,STOP, e.g. 10000,1.5,5,200000".into());
    }
    let start = parse_rate(parts[0])?;
    let mult = parse_number(parts[1])?;
    let step = parse_duration(parts[2])?;
    let stop = parse_rate(parts[3])?;
    if mult <= 1.0 {
        return Err("MULT must be greater than 1".into());
    }
    if stop < start {
        return Err("STOP must be at least START".into());
    }
    Ok(Ramp {
        start,
        mult,
        step,
        stop,
    })
}

pub fn parse_pattern(s: &str) -> Result<Pattern, String> {
    if s == "flood" {
        return Ok(Pattern::Flood);
    }
    let mut interval = None;
    let mut iburst = 1;
    for part in s.split(',') {
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| format!("expected flood or poll:SECS[,iburst:N], got {s:?}"))?;
        match key {
            "poll" => interval = Some(parse_duration(value)?),
            "iburst" => {
                iburst = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("iburst must be 1..64, got {value:?}"))?;
            }
            _ => {
                return Err(format!(
                    "unknown pattern part {key:?} (flood, poll:, iburst:)"
                ))
            }
        }
    }
    let interval = interval.ok_or("poll:SECS is required with iburst")?;
    if interval < Duration::from_millis(1) {
        return Err("poll interval must be at least 1ms".into());
    }
    Ok(Pattern::Poll { interval, iburst })
}

pub fn parse_sources(s: &str) -> Result<Sources, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('-') {
            None => out.push(
                item.parse::<IpAddr>()
                    .map_err(|_| format!("not an IP address: {item:?}"))?,
            ),
            Some((a, b)) => {
                let a: IpAddr = a.parse().map_err(|_| format!("not an IP address: {a:?}"))?;
                let b: IpAddr = b.parse().map_err(|_| format!("not an IP address: {b:?}"))?;
                let (lo, hi, v4) = match (a, b) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => {
                        (u32::from(a) as u128, u32::from(b) as u128, true)
                    }
                    (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), false),
                    _ => return Err(format!("range {item:?} mixes IPv4 and IPv6")),
                };
                if hi < lo {
                    return Err(format!("range {item:?} runs backwards"));
                }
                if hi - lo + 1 + out.len() as u128 > MAX_SOURCES {
                    return Err(format!("more than {MAX_SOURCES} source addresses"));
                }
                for v in lo..=hi {
                    out.push(if v4 {
                        IpAddr::V4((v as u32).into())
                    } else {
                        IpAddr::V6(v.into())
                    });
                }
            }
        }
        if out.len() as u128 > MAX_SOURCES {
            return Err(format!("more than {MAX_SOURCES} source addresses"));
        }
    }
    if out.is_empty() {
        return Err("empty source list".into());
    }
    Ok(Sources(out))
}

/// Resolves `TARGET[:PORT]` (default port 123).
pub fn resolve_target(s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    // A bare IPv6 literal has several colons and no brackets.
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 123));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: IpAddr = inner
            .parse()
            .with_context(|| format!("bad IPv6 address in target {s:?}"))?;
        return Ok(SocketAddr::new(ip, 123));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port: u16 = p
                .parse()
                .map_err(|_| anyhow!("bad port {p:?} in target {s:?}"))?;
            (h, port)
        }
        _ => (s, 123),
    };
    if host.is_empty() {
        bail!("empty host in target {s:?}");
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve target {host:?}"))?;
    addrs
        .next()
        .ok_or_else(|| anyhow!("target {host:?} has no address"))
}

pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("25h").is_err());
    }

    #[test]
    fn ramps() {
        let r = parse_ramp("10000,1.5,5,200000").unwrap();
        assert_eq!(r.start, 10000.0);
        assert_eq!(r.mult, 1.5);
        assert_eq!(r.step, Duration::from_secs(5));
        assert_eq!(r.stop, 200000.0);
        assert_eq!(parse_ramp("10k,2,500ms,80k").unwrap().stop, 80000.0);
        assert!(parse_ramp("10000,1,5,20000").is_err());
        assert!(parse_ramp("10000,2,5,100").is_err());
        assert!(parse_ramp("10000,2,5").is_err());
    }

    #[test]
    fn patterns() {
        assert_eq!(parse_pattern("flood").unwrap(), Pattern::Flood);
        assert_eq!(
            parse_pattern("poll:64,iburst:8").unwrap(),
            Pattern::Poll {
                interval: Duration::from_secs(64),
                iburst: 8
            }
        );
        assert_eq!(
            parse_pattern("poll:16").unwrap(),
            Pattern::Poll {
                interval: Duration::from_secs(16),
                iburst: 1
            }
        );
        assert!(parse_pattern("iburst:8").is_err());
        assert!(parse_pattern("poll:64,iburst:0").is_err());
        assert!(parse_pattern("storm").is_err());
    }

    #[test]
    fn sources() {
        let s = parse_sources("127.0.0.1-127.0.0.3,127.1.0.1").unwrap();
        assert_eq!(s.0.len(), 4);
        assert_eq!(s.0[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(s.0[3], "127.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(parse_sources("::1").unwrap().0.len(), 1);
        assert!(parse_sources("127.0.0.5-127.0.0.1").is_err());
        assert!(parse_sources("127.0.0.1-::1").is_err());
        assert!(parse_sources("10.0.0.0-10.255.255.255").is_err());
    }

    #[test]
    fn targets() {
        let t = resolve_target("127.0.0.1").unwrap();
        assert_eq!(t, "127.0.0.1:123".parse().unwrap());
        assert_eq!(
            resolve_target("127.0.0.1:12300").unwrap(),
            "127.0.0.1:12300".parse().unwrap()
        );
        assert_eq!(
            resolve_target("[::1]:12300").unwrap(),
            "[::1]:12300".parse().unwrap()
        );
        assert_eq!(resolve_target("::1").unwrap(), "[::1]:123".parse().unwrap());
        assert_eq!(
            resolve_target("[::1]").unwrap(),
            "[::1]:123".parse().unwrap()
        );
        assert!(resolve_target("127.0.0.1:notaport").is_err());
        assert!(is_loopback("127.5.6.7".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_rate("50k").unwrap(), 50_000.0);
        assert_eq!(parse_rate("1.5M").unwrap(), 1_500_000.0);
        assert_eq!(parse_rate("200_000").unwrap(), 200_000.0);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
