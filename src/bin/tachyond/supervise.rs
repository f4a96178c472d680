//! The main thread's watch while the workers serve: signals, the health of
//! the workers and of the sync thread, the request rate, and a periodic
//! word about rate limiting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use tachyon::server::stats::{self, Outcome, WorkerStats};
use tachyon::server::Server;

/// Seconds of history behind the requests/s figure.
const RATE_WINDOW: usize = 10;
/// At most one line about rate limiting this often, never one per packet.
const LIMIT_REPORT: Duration = Duration::from_secs(300);

/// What the main thread watches and drives while the workers serve.
pub struct Supervision<'a> {
    pub signal_fd: &'a SignalFd,
    pub server: &'a Server,
    pub request_rate: &'a AtomicU64,
    pub sync_alive: &'a dyn Fn() -> bool,
    pub reload: &'a mut dyn FnMut(),
}

/// Waits for SIGTERM or SIGINT (Ok), reloading on SIGHUP; a worker or the
/// sync thread that stopped is an error, so a service manager restarts us.
pub fn supervise(s: Supervision<'_>) -> anyhow::Result<()> {
    // (when, datagrams received so far), one per second, for requests/s.
    let mut history: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut limit_report = (Instant::now(), 0u64, 0u64);
    loop {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(s.signal_fd),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                if let Some(info) = s.signal_fd.read_signal()? {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGHUP) => (s.reload)(),
                        Ok(sig) => {
                            log::info!("{sig} received");
                            return Ok(());
                        }
                        Err(_) => {}
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        if !s.server.healthy() {
            anyhow::bail!("a worker stopped; exiting so the service manager can restart tachyond");
        }
        if !(s.sync_alive)() {
            // Serving the last published state forever would be serving wrong time.
            anyhow::bail!(
                "the sync thread stopped; exiting so the service manager can restart tachyond"
            );
        }
        measure_rate(s.server, &mut history, s.request_rate);
        report_limiting(s.server, &mut limit_report);
    }
}

/// Requests per second over the last [`RATE_WINDOW`] seconds.
fn measure_rate(server: &Server, history: &mut VecDeque<(Instant, u64)>, rate: &AtomicU64) {
    let received = stats::sum(server.stats(), WorkerStats::received);
    history.push_back((Instant::now(), received));
    if history.len() > RATE_WINDOW {
        history.pop_front();
    }
    if let (Some(first), Some(last)) = (history.front(), history.back()) {
        let dt = last.0.duration_since(first.0).as_secs_f64();
        let per_second = if dt > 0.0 {
            last.1.saturating_sub(first.1) as f64 / dt
        } else {
            0.0
        };
        rate.store(per_second.to_bits(), Ordering::Relaxed);
    }
}

/// A summary of rate limiting every few minutes while it is active.
fn report_limiting(server: &Server, last: &mut (Instant, u64, u64)) {
    if last.0.elapsed() < LIMIT_REPORT {
        return;
    }
    let limited = stats::total(server.stats(), Outcome::RateLimited);
    let kods = stats::total(server.stats(), Outcome::Kod);
    if limited > last.1 || kods > last.2 {
        log::info!(
            "rate limiting: {} requests dropped and {} KoDs sent in the last {} s",
            limited - last.1,
            kods - last.2,
            LIMIT_REPORT.as_secs()
        );
    }
    *last = (Instant::now(), limited, kods);
}
