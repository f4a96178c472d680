//! ntp-blast: an open-loop NTP load generator that checks every answer.
//!
//! Layout: `args` (command line), `pacing` (schedule arithmetic), `tracker`
//! (outstanding requests and nonces), `validate` (reply checks), `stats` and
//! `report` (counting and output), `net` (sockets and syscalls, all the unsafe
//! code), `worker` (the per-thread send/receive loop).

mod args;
mod net;
mod pacing;
mod report;
mod stats;
mod tracker;
mod validate;
mod worker;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use tachyon::proto::HEADER_LEN;

use crate::args::{Args, Pattern, TxStamp};
use crate::pacing::{PollSchedule, Step};
use crate::report::{Live, Reporter, SecondRow, StepRow};
use crate::stats::{errno_name, Summary};
use crate::validate::Expect;
use crate::worker::{Msg, RunConfig, StartGate, Worker};

const DEFAULT_DURATION: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    // The package build's manual page, ntp-blast(1).
    if std::env::args().nth(1).as_deref() == Some("--generate-man") {
        let command = <Args as clap::CommandFactory>::command();
        print!("{}", tachyon::manual::command_page(command, "1"));
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ntp-blast: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The run's settings as echoed in the JSON output.
#[derive(Serialize)]
struct ConfigOut {
    target: String,
    pattern: String,
    rate: Option<f64>,
    ramp: Option<String>,
    duration_s: f64,
    clients: u32,
    sources: usize,
    threads: u32,
    batch: u32,
    timeout_s: f64,
    ntp_version: u8,
    tx_timestamp: String,
    allow_unsync: bool,
    interleaved: bool,
    max_requests: u64,
}

#[derive(Serialize)]
struct ResultOut {
    pass: bool,
    failures: Vec<String>,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    config: ConfigOut,
    elapsed_s: f64,
    interrupted: bool,
    timestamps: TimestampsOut,
    steps: &'a [StepRow],
    seconds: &'a [SecondRow],
    totals: Summary,
    result: ResultOut,
}

#[derive(Serialize)]
struct TimestampsOut {
    t1: &'static str,
    t4: &'static str,
}

fn build_steps(args: &Args) -> Vec<Step> {
    if let Some(ramp) = &args.ramp {
        let limit = args.duration.unwrap_or(args::MAX_RUN);
        return pacing::schedule(&pacing::ramp_rates(ramp), ramp.step, limit);
    }
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let rate = match args.pattern {
        Pattern::Flood => args.rate,
        Pattern::Poll { interval, .. } => PollSchedule::steady_rate(interval, args.clients),
    };
    vec![Step {
        rate,
        start_ns: 0,
        len_ns: duration.as_nanos() as u64,
    }]
}

fn run(args: &Args) -> Result<ExitCode> {
    let target: SocketAddr = args::resolve_target(&args.target)?;
    check_args(args, target)?;
    let steps = build_steps(args);
    if steps.is_empty() {
        bail!("nothing to send: the schedule is empty");
    }
    let needed = args.clients as u64 + 2 * args.threads as u64 + 64;
    let limit = net::raise_nofile(needed);
    if limit < needed {
        bail!(
            "--clients {} needs about {needed} open files but the limit is {limit} (raise it with ulimit -n)",
            args.clients
        );
    }
    let cfg = Arc::new(RunConfig {
        target,
        steps: steps.clone(),
        pattern: args.pattern,
        threads: args.threads,
        clients: args.clients,
        sources: args.sources.as_ref().map(|s| s.0.clone()),
        batch: args.batch as usize,
        timeout_ns: args.timeout.as_nanos() as u64,
        expect: Expect {
            version: args.ntp_version,
            request_len: HEADER_LEN,
            allow_unsync: args.allow_unsync,
            interleaved: args.interleaved,
        },
        tx_kernel: args.tx_timestamp == TxStamp::Kernel,
        max_requests: args.max_requests,
    });

    net::catch_interrupts();
    let threads = Threads::start(&cfg)?;
    let start = match threads.release() {
        Ok(start) => start,
        Err(e) => {
            threads.join();
            return Err(e);
        }
    };
    if !args.quiet {
        announce(args, &cfg, &steps);
    }
    let live = if args.ramp.is_some() {
        Live::Steps
    } else {
        Live::Seconds
    };
    let mut rep = Reporter::new(live, args.quiet, args.threads, args.clients, steps.clone());
    let interrupted = threads.collect(args, &mut rep);
    rep.flush_partial();
    let elapsed_s = start.elapsed().as_secs_f64();

    let sending_s = rep.step_rows.iter().map(|r| r.sending_s).sum::<f64>();
    let totals = rep.totals.summary(sending_s);
    let how_t1 = if cfg.tx_kernel {
        "kernel software TX stamp (SO_TIMESTAMPING, error queue)"
    } else {
        "user-space CLOCK_REALTIME read just before the sendmmsg call (RTT is an upper bound)"
    };
    let failures = verdict(args, target, &totals);
    eprint!(
        "{}",
        report::summary_text(&target.to_string(), elapsed_s, &totals, how_t1)
    );
    warn_about_the_generator(&totals);

    let mut out = std::io::stdout().lock();
    if args.json {
        let json = JsonOut {
            config: config_out(args, &cfg, &steps),
            elapsed_s,
            interrupted,
            timestamps: TimestampsOut {
                t1: how_t1,
                t4: "kernel software RX stamp (SO_TIMESTAMPING)",
            },
            steps: &rep.step_rows,
            seconds: &rep.second_rows,
            totals: totals.clone(),
            result: ResultOut {
                pass: failures.is_empty(),
                failures: failures.clone(),
            },
        };
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else if args.csv {
        write!(out, "{}", report::csv(&rep.step_rows))?;
    }
    out.flush()?;

    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("ntp-blast: FAIL: {f}");
        }
        Ok(ExitCode::from(1))
    }
}

/// Refuses what ntp-blast will not do, before any thread starts.
fn check_args(args: &Args, target: SocketAddr) -> Result<()> {
    if !args::is_loopback(target.ip()) && !args.allow_remote {
        bail!(
            "target {target} is not a loopback address; ntp-blast sends to other hosts only \
             with --allow-remote (load only servers you operate)"
        );
    }
    if let Some(src) = &args.sources {
        if let Some(bad) = src.0.iter().find(|ip| ip.is_ipv4() != target.is_ipv4()) {
            bail!("source {bad} and target {target} are not of the same IP version");
        }
    }
    if args.timeout > MAX_TIMEOUT {
        bail!("--timeout is at most {} s", MAX_TIMEOUT.as_secs());
    }
    if args.threads > args.clients {
        bail!(
            "--threads {} is more than --clients {}: each thread needs a client",
            args.threads,
            args.clients
        );
    }
    if matches!(args.pattern, Pattern::Poll { .. }) && args.ramp.is_some() {
        bail!("--ramp applies to --pattern flood only");
    }
    if args.interleaved && args.ntp_version != 4 {
        bail!("--interleaved: the interleaved mode is NTPv4's (--ntp-version 4)");
    }
    Ok(())
}

/// The worker threads and what ties them to the main thread.
struct Threads {
    handles: Vec<std::thread::JoinHandle<()>>,
    messages: mpsc::Receiver<Msg>,
    stop: Arc<AtomicBool>,
    gate: Arc<StartGate>,
    count: u32,
}

impl Threads {
    /// Starts one worker per thread; each opens its sockets and waits at
    /// the gate.
    fn start(cfg: &Arc<RunConfig>) -> Result<Threads> {
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(StartGate {
            barrier: Barrier::new(cfg.threads as usize + 1),
            start: OnceLock::new(),
        });
        let (tx, messages) = mpsc::channel::<Msg>();
        let mut handles = Vec::new();
        for thread in 0..cfg.threads {
            let (cfg, gate, stop, tx) = (cfg.clone(), gate.clone(), stop.clone(), tx.clone());
            let h = std::thread::Builder::new()
                .name(format!("blast-{thread}"))
                .spawn(move || match Worker::new(cfg, thread, tx.clone()) {
                    Ok(w) => w.run(&gate, &stop),
                    Err(e) => {
                        let _ = tx.send(Msg::Ready {
                            thread,
                            error: Some(format!("{e:#}")),
                        });
                        gate.barrier.wait();
                        let _ = tx.send(Msg::Done);
                    }
                })
                .context("cannot start a thread")?;
            handles.push(h);
        }
        Ok(Threads {
            handles,
            messages,
            stop,
            gate,
            count: cfg.threads,
        })
    }

    /// Waits until every thread has its sockets, then starts them together;
    /// the first set-up error stops them all.
    fn release(&self) -> Result<Instant> {
        let mut setup_error = None;
        for _ in 0..self.count {
            match self.messages.recv() {
                Ok(Msg::Ready {
                    thread,
                    error: Some(e),
                }) => {
                    setup_error.get_or_insert(format!("thread {thread}: {e}"));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if setup_error.is_some() {
            self.stop.store(true, Ordering::Relaxed);
        }
        let start = Instant::now();
        let _ = self.gate.start.set(start);
        self.gate.barrier.wait();
        match setup_error {
            Some(e) => bail!("{e}"),
            None => Ok(start),
        }
    }

    /// Feeds the threads' reports to `rep` until they are all done; stops
    /// them on Ctrl-C or, with --stop-on-loss, on a lossy step. Returns
    /// whether the run was interrupted.
    fn collect(self, args: &Args, rep: &mut Reporter) -> bool {
        let mut done = 0;
        let mut interrupted = false;
        while done < self.count {
            if net::interrupted() && !interrupted {
                interrupted = true;
                self.stop.store(true, Ordering::Relaxed);
                eprintln!("ntp-blast: interrupted: stopping, waiting for the last answers (Ctrl-C again to quit now)");
            }
            match self.messages.recv_timeout(Duration::from_millis(50)) {
                Ok(Msg::Interval { index, stats }) => rep.on_interval(index, &stats),
                Ok(Msg::StepDone {
                    step,
                    stats,
                    sending_ns,
                }) => {
                    if let Some(row) = rep.on_step(step, &stats, sending_ns) {
                        self.stop_on_loss(args, step, row.rate, row.summary.lost_pct);
                    }
                }
                Ok(Msg::Done) => done += 1,
                Ok(Msg::Ready { .. }) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.join();
        interrupted
    }

    fn join(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }

    /// --stop-on-loss: ends a ramp at its first step over the limit.
    fn stop_on_loss(&self, args: &Args, step: usize, rate: f64, lost_pct: f64) {
        let Some(limit) = args.stop_on_loss else {
            return;
        };
        if lost_pct > limit && !self.stop.load(Ordering::Relaxed) {
            self.stop.store(true, Ordering::Relaxed);
            if !args.quiet {
                eprintln!(
                    "ntp-blast: step #{step} ({rate} /s) lost {lost_pct:.3}% > {limit}%: stopping the ramp"
                );
            }
        }
    }
}

/// One line on what is about to be sent.
fn announce(args: &Args, cfg: &RunConfig, steps: &[Step]) {
    let what = match (&args.ramp, args.pattern) {
        (Some(r), _) => format!(
            "ramp {} -> {} x{} every {:?} ({} steps)",
            r.start,
            r.stop,
            r.mult,
            r.step,
            steps.len()
        ),
        (None, Pattern::Flood) => format!("{} requests/s", args.rate),
        (None, Pattern::Poll { interval, iburst }) => format!(
            "poll every {:?}, iburst {iburst}, {} clients",
            interval, args.clients
        ),
    };
    eprintln!(
        "ntp-blast: {}: {what} for {:.1} s, {} clients, {} thread(s), timeout {:?}",
        cfg.target,
        cfg.end_ns() as f64 / 1e9,
        args.clients,
        args.threads,
        args.timeout
    );
}

/// Why the run fails, if it does: nothing sent or answered, more loss than
/// --max-loss, invalid answers with --fail-on-invalid.
fn verdict(args: &Args, target: SocketAddr, totals: &Summary) -> Vec<String> {
    let mut failures = Vec::new();
    if totals.sent == 0 {
        let why = if totals.send_errors > 0 {
            format!(": send errors {:?}", totals.send_errors_by_errno)
        } else {
            String::new()
        };
        failures.push(format!("nothing was sent to {target}{why}"));
    } else if totals.answered == 0 {
        let refused = totals
            .recv_errors_by_errno
            .contains_key(&errno_name(libc::ECONNREFUSED))
            || totals
                .send_errors_by_errno
                .contains_key(&errno_name(libc::ECONNREFUSED));
        let hint = if refused {
            " (connection refused: ICMP port unreachable, nothing listens on that port)"
        } else {
            ""
        };
        failures.push(format!(
            "no answers from {target}: is the server running?{hint}"
        ));
    }
    if let Some(max) = args.max_loss {
        if totals.sent > 0 && totals.lost_pct > max {
            failures.push(format!(
                "loss {:.3}% exceeds --max-loss {max}%",
                totals.lost_pct
            ));
        }
    }
    if args.fail_on_invalid && totals.invalid > 0 {
        failures.push(format!(
            "{} invalid replies ({:.3}%) with --fail-on-invalid: {:?}",
            totals.invalid, totals.invalid_pct, totals.invalid_by_reason
        ));
    }
    failures
}

/// Says when the figures include the generator's own limits.
fn warn_about_the_generator(totals: &Summary) {
    if totals.sent > 0 && (totals.sent as f64) < 0.99 * totals.offered as f64 {
        eprintln!(
            "ntp-blast: warning: sent {} of {} offered: the generator could not keep the pace \
             (more --threads, a bigger --batch, or a lower rate)",
            totals.sent, totals.offered
        );
    }
    if totals.local_drops > 0 {
        eprintln!(
            "ntp-blast: warning: {} answers were dropped at ntp-blast's own sockets: the loss \
             figures include the generator's own limit (more --threads or --clients)",
            totals.local_drops
        );
    }
}

/// The run's settings, for the JSON output.
fn config_out(args: &Args, cfg: &RunConfig, steps: &[Step]) -> ConfigOut {
    ConfigOut {
        target: cfg.target.to_string(),
        pattern: match args.pattern {
            Pattern::Flood => "flood".into(),
            Pattern::Poll { interval, iburst } => {
                format!("poll:{},iburst:{iburst}", interval.as_secs_f64())
            }
        },
        rate: args.ramp.is_none().then_some(steps[0].rate),
        ramp: args
            .ramp
            .map(|r| format!("{},{},{},{}", r.start, r.mult, r.step.as_secs_f64(), r.stop)),
        duration_s: cfg.end_ns() as f64 / 1e9,
        clients: args.clients,
        sources: args.sources.as_ref().map_or(0, |s| s.0.len()),
        threads: args.threads,
        batch: args.batch,
        timeout_s: args.timeout.as_secs_f64(),
        ntp_version: args.ntp_version,
        tx_timestamp: if cfg.tx_kernel { "kernel" } else { "user" }.into(),
        allow_unsync: args.allow_unsync,
        interleaved: args.interleaved,
        max_requests: args.max_requests,
    }
}
