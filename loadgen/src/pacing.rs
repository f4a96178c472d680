//! Pacing arithmetic: the step schedule of a run, how many requests are due by a
//! given moment, and the per-client poll schedule. Pure: time is passed in as
//! nanoseconds since the start of the run (or of a step).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::args::Ramp;

/// Spacing of the requests of an iburst, as ntpd and chrony use.
pub const IBURST_SPACING_NS: u64 = 2_000_000_000;

/// One step of a run: a constant offered rate for a span of time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Offered rate, requests per second, all threads together.
    pub rate: f64,
    /// Start, nanoseconds since the start of the run.
    pub start_ns: u64,
    /// Length in nanoseconds.
    pub len_ns: u64,
}

impl Step {
    pub fn end_ns(&self) -> u64 {
        self.start_ns + self.len_ns
    }
}

/// The rates of a ramp: START, START*MULT, ... while the rate is <= STOP.
pub fn ramp_rates(ramp: &Ramp) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut rate = ramp.start;
    // A tiny tolerance so that e.g. 1000*10*10 still reaches a STOP of 100000.
    while rate <= ramp.stop * (1.0 + 1e-9) && rates.len() < 10_000 {
        rates.push(rate.min(ramp.stop));
        rate *= ramp.mult;
    }
    rates
}

/// Lays steps end to end and cuts the schedule at `limit` (a step cut short
/// keeps its rate for the part that remains).
pub fn schedule(rates: &[f64], step_len: Duration, limit: Duration) -> Vec<Step> {
    let step_ns = step_len.as_nanos() as u64;
    let limit_ns = limit.as_nanos() as u64;
    let mut steps = Vec::new();
    let mut start = 0u64;
    for &rate in rates {
        if start >= limit_ns {
            break;
        }
        let len_ns = step_ns.min(limit_ns - start);
        steps.push(Step {
            rate,
            start_ns: start,
            len_ns,
        });
        start += len_ns;
    }
    steps
}

/// Thread `index` of `count`'s share of `total`: the requests dealt round robin,
/// request `k` to thread `k % count`. The shares add up to `total` exactly and
/// never shrink as `total` grows, which the pacer relies on (a proportional
/// split such as floor(total·(i+1)/count) − floor(total·i/count) can go
/// 1, 0, 1 as `total` rises, and did, with five threads or more).
pub fn share(total: u64, index: u32, count: u32) -> u64 {
    let (index, count) = (index as u64, count.max(1) as u64);
    if total <= index {
        return 0;
    }
    (total - index).div_ceil(count)
}

/// Deadline pacing of one thread within one step: the number of requests that
/// should have been sent `elapsed_ns` into the step. The sender compares it with
/// what it has sent and sends the difference in batches, so the pace holds on
/// average whatever the wake-up jitter, without one sleep per packet.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    rate: f64,
    len_ns: u64,
    thread: u32,
    threads: u32,
}

impl Pacer {
    pub fn new(step: &Step, thread: u32, threads: u32) -> Self {
        Pacer {
            rate: step.rate,
            len_ns: step.len_ns,
            thread,
            threads,
        }
    }

    /// Requests due from this thread by `elapsed_ns` into the step. Request `k`
    /// (of all threads, from 0) is due at `k / rate`: the first at the start of
    /// the step, the last one interval before its end.
    pub fn scheduled(&self, elapsed_ns: u64) -> u64 {
        let due = (Self::product(self.rate, elapsed_ns.min(self.len_ns)) + 1)
            .min(self.all_threads_total());
        share(due, self.thread, self.threads)
    }

    /// floor(rate * ns / 1e9), exact for long steps: whole seconds and the
    /// sub-second part are multiplied separately.
    fn product(rate: f64, ns: u64) -> u64 {
        let whole = rate * (ns / 1_000_000_000) as f64;
        let part = rate * (ns % 1_000_000_000) as f64 / 1e9;
        (whole + part).floor() as u64
    }

    fn all_threads_total(&self) -> u64 {
        Self::product(self.rate, self.len_ns)
    }

    /// Requests this thread sends over the whole step.
    pub fn total(&self) -> u64 {
        share(self.all_threads_total(), self.thread, self.threads)
    }

    /// This thread's rate, requests per second.
    pub fn thread_rate(&self) -> f64 {
        self.rate / self.threads as f64
    }

    /// Nanoseconds into the step at which `count` requests are due (an estimate
    /// used only to choose how long to sleep; `scheduled` is the authority).
    pub fn time_of(&self, count: u64) -> u64 {
        let r = self.thread_rate();
        if r <= 0.0 {
            return u64::MAX;
        }
        ((count.saturating_sub(1) as f64 / r) * 1e9)
            .ceil()
            .min(u64::MAX as f64 / 2.0) as u64
    }
}

/// Per-client schedule of the `poll:` pattern: an iburst of `iburst` requests
/// 2 s apart, then one request every `interval`. Client start times are spread
/// evenly over one iburst spacing (or over one poll interval without iburst) so
/// the clients do not all fire at once.
pub struct PollSchedule {
    interval_ns: u64,
    iburst: u32,
    /// (next send, local client index)
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// Requests sent by each local client so far.
    sent: Vec<u32>,
}

impl PollSchedule {
    /// `clients`: global indices of the clients this thread owns; `total`: all clients.
    pub fn new(interval: Duration, iburst: u32, clients: &[u32], total: u32) -> Self {
        let interval_ns = interval.as_nanos() as u64;
        let spread = if iburst > 1 {
            IBURST_SPACING_NS
        } else {
            interval_ns
        };
        let heap = clients
            .iter()
            .enumerate()
            .map(|(local, &global)| {
                let offset = (spread as u128 * global as u128 / total.max(1) as u128) as u64;
                Reverse((offset, local as u32))
            })
            .collect();
        PollSchedule {
            interval_ns,
            iburst: iburst.max(1),
            heap,
            sent: vec![0; clients.len()],
        }
    }

    /// The next client due at or before `now_ns`, if any; its next send is
    /// scheduled as a side effect.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<u32> {
        let &Reverse((at, client)) = self.heap.peek()?;
        if at > now_ns {
            return None;
        }
        self.heap.pop();
        let n = &mut self.sent[client as usize];
        *n += 1;
        let gap = if *n < self.iburst {
            IBURST_SPACING_NS
        } else {
            self.interval_ns
        };
        self.heap.push(Reverse((at + gap, client)));
        Some(client)
    }

    /// When the next request of any client is due.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Requests all `total` clients send in `[0, until_ns)`.
    #[cfg(test)]
    pub fn count_until(interval: Duration, iburst: u32, total: u32, until_ns: u64) -> u64 {
        let mut s = PollSchedule::new(interval, iburst, &(0..total).collect::<Vec<_>>(), total);
        let mut n = 0;
        while let Some(at) = s.next_due() {
            if at >= until_ns {
                break;
            }
            s.pop_due(at);
            n += 1;
        }
        n
    }

    /// Nominal steady-state rate of `clients` polling every `interval`.
    pub fn steady_rate(interval: Duration, clients: u32) -> f64 {
        clients as f64 / interval.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, secs: f64) -> Step {
        Step {
            rate,
            start_ns: 0,
            len_ns: (secs * 1e9) as u64,
        }
    }

    #[test]
    fn one_simulated_second_sends_the_rate() {
        for rate in [1.0, 999.0, 2000.0, 50_000.0, 123_457.0, 200_000.0] {
            let p = Pacer::new(&step(rate, 1.0), 0, 1);
            // Wake up at irregular moments, send what is due each time.
            let mut sent = 0u64;
            let mut t = 0u64;
            let mut wakeups = 0;
            while t < 1_000_000_000 {
                t += 37_000 + (wakeups % 7) * 91_000;
                wakeups += 1;
                let due = p.scheduled(t) - sent;
                sent += due;
            }
            assert_eq!(sent, rate as u64, "rate {rate}");
            assert_eq!(
                p.scheduled(999_999_999),
                rate as u64,
                "all sent within the second"
            );
            assert_eq!(p.total(), rate as u64);
        }
    }

    #[test]
    fn pace_is_even_within_the_second() {
        let p = Pacer::new(&step(10_000.0, 1.0), 0, 1);
        // Request k is due at k/rate: the first at once, the last at 0.9999 s.
        assert_eq!(p.scheduled(0), 1);
        assert_eq!(p.scheduled(99_999), 1);
        assert_eq!(p.scheduled(100_000), 2);
        assert_eq!(p.scheduled(100_000_000), 1001);
        assert_eq!(p.scheduled(500_000_000), 5001);
        assert_eq!(p.scheduled(999_900_000), 10_000);
        assert_eq!(p.scheduled(2_000_000_000), 10_000); // capped at the step's end
        assert_eq!(p.time_of(5001), 500_000_000);
        assert_eq!(p.time_of(1), 0);
    }

    #[test]
    fn a_threads_share_never_shrinks_as_the_total_grows() {
        for threads in 1..=32u32 {
            for t in 0..threads {
                let mut last = 0;
                for total in 0..2_000u64 {
                    let now = share(total, t, threads);
                    assert!(now >= last, "threads {threads} thread {t} total {total}");
                    assert!(now - last <= 1);
                    last = now;
                }
            }
            for total in [0u64, 1, 17, 1_000_003, u64::MAX / 2] {
                let sum: u64 = (0..threads).map(|t| share(total, t, threads)).sum();
                assert_eq!(sum, total, "threads {threads}");
            }
        }
    }

    #[test]
    fn threads_share_the_rate_exactly() {
        for threads in 1..=16u32 {
            let st = step(100_003.0, 2.5);
            let sum: u64 = (0..threads)
                .map(|t| Pacer::new(&st, t, threads).total())
                .sum();
            assert_eq!(sum, 250_007, "threads {threads}");
            for t in 0..threads {
                let mine = Pacer::new(&st, t, threads).total();
                assert!(mine.abs_diff(250_007 / threads as u64) <= 1);
            }
        }
        assert_eq!(
            (0..3).map(|i| share(10, i, 3)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
    }

    #[test]
    fn long_steps_stay_exact() {
        let p = Pacer::new(&step(33_333.0, 3600.0), 0, 1);
        assert_eq!(p.total(), 33_333 * 3600);
    }

    #[test]
    fn ramp_steps() {
        let ramp = Ramp {
            start: 10_000.0,
            mult: 1.5,
            step: Duration::from_secs(5),
            stop: 200_000.0,
        };
        let rates = ramp_rates(&ramp);
        let expect = [
            10_000.0,
            15_000.0,
            22_500.0,
            33_750.0,
            50_625.0,
            75_937.5,
            113_906.25,
            170_859.375,
        ];
        assert_eq!(rates, expect);
        let steps = schedule(&rates, ramp.step, Duration::from_secs(3600));
        assert_eq!(steps.len(), 8);
        assert_eq!(steps[3].start_ns, 15_000_000_000);
        assert_eq!(steps[7].end_ns(), 40_000_000_000);
        // --duration cuts the ramp, the last step short.
        let cut = schedule(&rates, ramp.step, Duration::from_secs(12));
        assert_eq!(cut.len(), 3);
        assert_eq!(cut[2].len_ns, 2_000_000_000);
        // An exact power lands on STOP.
        let exact = Ramp {
            start: 1000.0,
            mult: 10.0,
            step: Duration::from_secs(1),
            stop: 100_000.0,
        };
        assert_eq!(ramp_rates(&exact), [1000.0, 10_000.0, 100_000.0]);
    }

    #[test]
    fn poll_schedule_iburst_then_interval() {
        // One client: sends at 0, 2, 4, 6 (iburst 4), then 6+64, 6+128.
        let mut s = PollSchedule::new(Duration::from_secs(64), 4, &[0], 1);
        let mut times = Vec::new();
        while let Some(at) = s.next_due() {
            if at > 200_000_000_000 {
                break;
            }
            assert_eq!(s.pop_due(at), Some(0));
            times.push(at / 1_000_000_000);
        }
        assert_eq!(times, [0, 2, 4, 6, 70, 134, 198]);
        assert_eq!(s.pop_due(0), None);
    }

    #[test]
    fn poll_schedule_spreads_clients() {
        // 100 clients, iburst 8, poll 64: 100 requests in each of the first
        // eight 2-second windows, and then nothing until 14 + 64 s.
        let n = PollSchedule::count_until(Duration::from_secs(64), 8, 100, 2_000_000_000);
        assert_eq!(n, 100);
        let n = PollSchedule::count_until(Duration::from_secs(64), 8, 100, 60_000_000_000);
        assert_eq!(n, 800);
        // Without iburst, starts spread over the poll interval.
        let n = PollSchedule::count_until(Duration::from_secs(10), 1, 100, 5_000_000_000);
        assert_eq!(n, 50);
        assert_eq!(
            PollSchedule::steady_rate(Duration::from_secs(64), 640),
            10.0
        );
    }
}
