//! tachyonctl: show tachyond's sources, status and counters over its local
//! control socket, the way `ntpq -p` and `chronyc sources` do.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tachyon::control::{default_socket_path, request, SourceRow, Stats, Status};

#[derive(Parser, Debug)]
#[command(name = "tachyonctl", version, about = "Show what tachyond is doing")]
struct Args {
    /// tachyond's control socket, as given to tachyond's --control-socket
    /// [default: as tachyond chooses it].
    #[arg(long, global = true, value_name = "PATH", alias = "socket")]
    control_socket: Option<PathBuf>,
    /// Print the daemon's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upstream sources, like `ntpq -p`.
    Sources,
    /// Synchronization state, clock, workers and request rate.
    Status,
    /// Requests by outcome and latency percentiles.
    Stats,
}

fn main() -> ExitCode {
    // The package build's manual page, tachyonctl(8).
    if std::env::args().nth(1).as_deref() == Some("--generate-man") {
        let command = <Args as clap::CommandFactory>::command();
        print!("{}", tachyon::manual::command_page(command, "8"));
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    let path = args.control_socket.unwrap_or_else(default_socket_path);
    let command = match args.command {
        Command::Sources => "sources",
        Command::Status => "status",
        Command::Stats => "stats",
    };
    let answer = match request(&path, command) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tachyonctl: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        print!("{answer}");
        return ExitCode::SUCCESS;
    }
    let printed = match args.command {
        Command::Sources => {
            serde_json::from_str::<Vec<SourceRow>>(&answer).map(|rows| print_sources(&rows))
        }
        Command::Status => serde_json::from_str(&answer).map(|s| print_status(&s)),
        Command::Stats => serde_json::from_str(&answer).map(|s| print_stats(&s)),
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tachyonctl: unexpected answer from tachyond ({e}): {answer}");
            ExitCode::FAILURE
        }
    }
}

fn print_sources(rows: &[SourceRow]) {
    println!(
        "     {:<24} {:<16} {:>2} {:>5} {:>5} {:>4} {:>9} {:>10} {:>8}",
        "remote", "refid", "st", "when", "poll", "reach", "delay", "offset", "jitter"
    );
    println!("{}", "=".repeat(95));
    if rows.is_empty() {
        println!("(no sources: none configured, or the sync thread has not polled any yet)");
    }
    for r in rows {
        let when = r
            .when
            .map(|w| format!("{:.0}", w))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>1}    {:<24} {:<16} {:>2} {:>5} {:>5} {:>4o} {:>9.3} {:>+10.3} {:>8.3}",
            r.mark,
            r.remote,
            r.refid,
            r.stratum,
            when,
            1u64 << r.poll.clamp(0, 17),
            r.reach,
            r.delay_ms,
            r.offset_ms,
            r.jitter_ms
        );
    }
}

fn print_status(s: &Status) {
    let leap = match s.leap {
        0 => "none",
        1 => "insert second",
        2 => "delete second",
        _ => "unsynchronized",
    };
    println!(
        "synchronized   {}",
        if s.synchronized { "yes" } else { "no" }
    );
    println!("stratum        {}", s.stratum);
    println!("reference ID   {}", s.refid);
    match s.reference_age_seconds {
        Some(age) => println!("last update    {age:.1} s ago"),
        None => println!("last update    never"),
    }
    println!("clock          {}", s.clock);
    println!(
        "offset         {:+.9} s (software correction)",
        s.offset_seconds
    );
    println!("frequency      {:+.3} ppm", s.frequency_ppm);
    println!(
        "root distance  {:.6} s (delay {:.6} s, dispersion {:.6} s)",
        s.root_distance_seconds, s.root_delay_seconds, s.root_dispersion_seconds
    );
    println!("leap           {leap}");
    println!("precision      2^{} s", s.precision_log2);
    println!("uptime         {:.0} s", s.uptime_seconds);
    println!("workers        {} ({})", s.workers, s.backend);
    println!("requests/s     {:.1}", s.requests_per_second);
    println!(
        "requests       {} received: {} answered, {} KoD, {} dropped",
        s.received, s.answered, s.kod, s.dropped
    );
    println!("version        {}", s.version);
}

fn micros(v: Option<f64>) -> String {
    v.map(|s| format!("{:.1} us", s * 1e6))
        .unwrap_or_else(|| "-".into())
}

fn print_stats(s: &Stats) {
    println!("requests by outcome");
    for (label, n) in &s.outcomes {
        println!("  {label:<18} {n}");
    }
    println!("  {:<18} {}", "leaked (answered)", s.rate_limit_leaked);
    println!("  {:<18} {}", "kernel queue full", s.socket_drops);
    println!("errors");
    println!("  {:<18} {}", "receive", s.receive_errors);
    println!("  {:<18} {}", "send", s.send_errors);
    println!("  {:<18} {}", "no kernel stamp", s.rx_timestamp_missing);
    let r = &s.response_time;
    println!(
        "server time T3-T2 ({} replies): p50 {}  p99 {}  p99.9 {}",
        r.count,
        micros(r.p50),
        micros(r.p99),
        micros(r.p999)
    );
    let b = &s.batch_size;
    let n = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    println!(
        "batch size ({} wake-ups): p50 {}  p99 {}  p99.9 {}",
        b.count,
        n(b.p50),
        n(b.p99),
        n(b.p999)
    );
    let t = &s.t3_error;
    println!(
        "T3 error, kernel stamp - T3 sent ({} basic replies): mean {}  p1 {}  p50 {}  p99 {}  p99.9 {}",
        t.count,
        micros(t.mean),
        micros(t.p1),
        micros(t.p50),
        micros(t.p99),
        micros(t.p999)
    );
    let x = &s.tx_stamps;
    println!(
        "transmit stamps  kernel {}  hardware {}  none {}",
        x.kernel, x.hardware, x.none
    );
    let x = &s.xleave;
    if x.enabled {
        println!(
            "interleaved      replies {}  basic to asking clients {}  pairs held {} of {}",
            x.interleaved, x.missed, x.held, x.capacity
        );
        println!(
            "  pairs          kept {}  replaced {}  not kept {}  removed {}",
            x.kept, x.replaced, x.not_kept, x.removed
        );
    } else {
        println!("interleaved      off");
    }
    let workers: Vec<String> = s.per_worker.iter().map(|n| n.to_string()).collect();
    println!("per worker     {}", workers.join(" "));
}
