//! tachyon's own directives, the same in both dialects: `listen`, `workers`,
//! `io`, `rcvbuf`, `metrics`, `clock`, `xleave`, `txtimestamp` and
//! `holdover`.

use super::addr;
use super::builder::{At, Builder};
use super::model::{
    ClockChoice, IoChoice, XdpConfig, RCVBUF_RANGE, XDP_MAX_COALESCE_US, XDP_MAX_QUEUES,
    XLEAVE_ENTRIES_RANGE,
};
use super::words::{exactly_one, number_in, parse_size, quoted, quoted_all};

/// `listen ADDRESS[:PORT]`.
pub(super) fn listen(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let token = exactly_one("listen", args, "an address such as 192.0.2.1")?;
    let addr = addr::parse_listen(token)?;
    b.add_listen(addr, at);
    Ok(())
}

/// `workers N|auto`.
pub(super) fn workers(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
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
    b.once("workers", at);
    b.config.workers = workers;
    Ok(())
}

/// `io uring|mmsg|auto`, or `io xdp IFACE [queues N] [mode M] [zerocopy Z]`.
pub(super) fn io(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let io = match args.first() {
        Some(&"xdp") => IoChoice::Xdp(xdp(&args[1..])?),
        _ => {
            let token = exactly_one("io", args, "\"uring\", \"mmsg\", \"auto\" or \"xdp IFACE\"")?;
            token.parse::<IoChoice>().map_err(|e| format!("io: {e}"))?
        }
    };
    b.once("io", at);
    b.config.io = io;
    Ok(())
}

/// The arguments of `io xdp`: the interface, then options in any order.
fn xdp(args: &[&str]) -> Result<XdpConfig, String> {
    const USAGE: &str =
        "io xdp IFACE [queues N] [mode native|generic|auto] [zerocopy on|off|auto] [coalesce USEC]";
    let Some((interface, mut rest)) = args.split_first() else {
        return Err(format!("io xdp: expected an interface name ({USAGE})"));
    };
    // Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
    if interface.len() > 15
        || interface.contains(['/', ':'])
        || *interface == "."
        || *interface == ".."
    {
        return Err(format!(
            "io xdp: {} is not an interface name",
            quoted(interface)
        ));
    }
    let mut config = XdpConfig {
        interface: interface.to_string(),
        queues: None,
        native: None,
        zerocopy: None,
        coalesce_us: None,
    };
    while let [option, value, tail @ ..] = rest {
        let bad = || format!("io xdp: {option} {} is not valid ({USAGE})", quoted(value));
        match *option {
            "queues" => {
                let n = value.parse::<u32>().map_err(|_| bad())?;
                if !(1..=XDP_MAX_QUEUES).contains(&n) {
                    return Err(format!(
                        "io xdp: queues takes 1..={XDP_MAX_QUEUES}, got {n}"
                    ));
                }
                config.queues = Some(n);
            }
            "mode" => config.native = tri_state(value, "native", "generic").ok_or_else(bad)?,
            "zerocopy" => config.zerocopy = tri_state(value, "on", "off").ok_or_else(bad)?,
            "coalesce" => {
                let us = value.parse::<u32>().map_err(|_| bad())?;
                if us > XDP_MAX_COALESCE_US {
                    return Err(format!(
                        "io xdp: coalesce takes 0..={XDP_MAX_COALESCE_US} (microseconds), got {us}"
                    ));
                }
                config.coalesce_us = Some(us);
            }
            _ => {
                return Err(format!(
                    "io xdp: unknown option {} ({USAGE})",
                    quoted(option)
                ))
            }
        }
        rest = tail;
    }
    if let [extra] = rest {
        return Err(format!("io xdp: {} needs a value ({USAGE})", quoted(extra)));
    }
    Ok(config)
}

/// `yes` → Some(true), `no` → Some(false), `auto` → None.
fn tri_state(value: &str, yes: &str, no: &str) -> Option<Option<bool>> {
    match value {
        v if v == yes => Some(Some(true)),
        v if v == no => Some(Some(false)),
        "auto" => Some(None),
        _ => None,
    }
}

/// `rcvbuf SIZE`.
pub(super) fn rcvbuf(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    const EXPECTED: &str = "a size 16K..256M (bytes, or with K or M)";
    let token = exactly_one("rcvbuf", args, EXPECTED)?;
    let bytes = parse_size(token)
        .filter(|b| RCVBUF_RANGE.contains(b))
        .ok_or_else(|| format!("rcvbuf: expected {EXPECTED}, got {}", quoted(token)))?;
    b.once("rcvbuf", at);
    b.config.rcvbuf = bytes;
    Ok(())
}

/// `metrics ADDRESS:PORT`.
pub(super) fn metrics(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let token = exactly_one("metrics", args, "ADDRESS:PORT such as 127.0.0.1:9123")?;
    let addr = addr::parse_metrics(token)?;
    b.once("metrics", at);
    b.config.metrics = Some(addr);
    Ok(())
}

/// `clock system|software|auto`.
pub(super) fn clock(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let token = exactly_one("clock", args, "\"system\", \"software\" or \"auto\"")?;
    let clock = token
        .parse::<ClockChoice>()
        .map_err(|e| format!("clock: {e}"))?;
    b.once("clock", at);
    b.config.clock = clock;
    Ok(())
}

/// `on` or `off`.
fn on_off(directive: &str, token: &str) -> Result<bool, String> {
    match token {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!(
            "{directive}: expected \"on\" or \"off\", got {}",
            quoted(other)
        )),
    }
}

/// `xleave on|off [table N]`, or `xleave table N`: the interleaved mode
/// (RFC 9769), and how many pairs its table holds.
pub(super) fn xleave(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    const EXPECTED: &str = "\"on\", \"off\" or \"table N\" (N 1K..1024M pairs)";
    let (enabled, rest) = match args {
        [] => return Err(format!("xleave: expected {EXPECTED}, got nothing")),
        [first, rest @ ..] if *first == "on" || *first == "off" => (on_off("xleave", first)?, rest),
        _ => (true, args),
    };
    let table = match rest {
        [] => None,
        ["table", n] => Some(
            parse_size(n)
                .filter(|n| XLEAVE_ENTRIES_RANGE.contains(n))
                .ok_or_else(|| {
                    format!(
                        "xleave table: expected a number of pairs 1K..1024M, got {}",
                        quoted(n)
                    )
                })?,
        ),
        other => {
            return Err(format!(
                "xleave: expected {EXPECTED}, got {}",
                quoted_all(other)
            ))
        }
    };
    b.once("xleave", at);
    b.config.xleave.enabled = enabled;
    if let Some(entries) = table {
        b.config.xleave.table_entries = entries;
    }
    Ok(())
}

/// `holdover SECONDS`: how long the clock is still served as synchronized
/// with no selectable upstream.
pub(super) fn holdover(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let seconds = exactly_one("holdover", args, "seconds 1..=86400")?;
    let seconds = number_in("holdover", Some(seconds), (1, 86_400))?;
    b.once("holdover", at);
    // 1..=86400 fits u32.
    b.config.holdover = Some(seconds as u32);
    Ok(())
}

/// `txtimestamp on|off`: kernel transmit timestamps on the listening sockets.
pub(super) fn txtimestamp(b: &mut Builder, at: &At<'_>, args: &[&str]) -> Result<(), String> {
    let token = exactly_one("txtimestamp", args, "\"on\" or \"off\"")?;
    let on = on_off("txtimestamp", token)?;
    b.once("txtimestamp", at);
    b.config.tx_timestamps = on;
    Ok(())
}
