//! One sending thread: its clients (sockets), its share of the rate, its ring
//! of outstanding requests, and the loop that paces, sends, receives, checks
//! and counts.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result};
use socket2::Socket;
use tachyon::proto::{Header, LeapIndicator, Mode, NtpTimestamp, HEADER_LEN};

use crate::args::Pattern;
use crate::net::{self, Epoll, RecvBatch, SendBatch};
use crate::pacing::{share, Pacer, PollSchedule, Step};
use crate::stats::Stats;
use crate::tracker::{Entry, Tracker, INTERLEAVED_NONCE};
use crate::validate::{classify, Expect, Invalid, Outcome, Verdict};

/// Length of the live reporting interval.
pub const INTERVAL_NS: u64 = 1_000_000_000;
/// How long the longest sleep between checks of the clock and the stop flag is.
const MAX_SLEEP_NS: u64 = 50_000_000;
/// Slack after a step's timeout before its counts are final.
const FINAL_MARGIN_NS: u64 = 20_000_000;
/// A kernel TX stamp must fall this close to the sendmmsg call it belongs to.
const TX_STAMP_SLACK_NS: i64 = 2_000_000;
/// Most TX stamps awaited per client before the oldest are given up.
const MAX_TX_PENDING: usize = 1 << 14;

/// Everything the threads share about a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: SocketAddr,
    pub steps: Vec<Step>,
    pub pattern: Pattern,
    pub threads: u32,
    pub clients: u32,
    pub sources: Option<Vec<IpAddr>>,
    pub batch: usize,
    pub timeout_ns: u64,
    pub expect: Expect,
    pub tx_kernel: bool,
    pub max_requests: u64,
}

impl RunConfig {
    pub fn end_ns(&self) -> u64 {
        self.steps.last().map_or(0, |s| s.end_ns())
    }

    /// Global indices of the clients thread `thread` owns.
    pub fn clients_of(&self, thread: u32) -> Vec<u32> {
        (thread..self.clients)
            .step_by(self.threads as usize)
            .collect()
    }

    /// The NTP request every client sends (its transmit timestamp is replaced
    /// by a nonce per request).
    pub fn request_template(&self) -> [u8; HEADER_LEN] {
        let poll = match self.pattern {
            Pattern::Flood => 6,
            Pattern::Poll { interval, .. } => interval
                .as_secs_f64()
                .max(1.0)
                .log2()
                .round()
                .clamp(0.0, 17.0) as i8,
        };
        Header {
            leap: LeapIndicator::NoWarning,
            version: self.expect.version,
            mode: Mode::Client,
            poll,
            precision: -20,
            ..Header::default()
        }
        .to_bytes()
    }
}

/// Messages from the threads to the reporter.
pub enum Msg {
    /// Sockets are open (or not), before the start.
    Ready { thread: u32, error: Option<String> },
    /// Event-time counts of one second of the run.
    Interval { index: u64, stats: Box<Stats> },
    /// Final counts of one step (every request sent in it answered or timed out).
    StepDone {
        step: usize,
        stats: Box<Stats>,
        sending_ns: u64,
    },
    /// The thread has finished.
    Done,
}

/// Shared start line: the reporter sets the start instant, then everyone goes.
pub struct StartGate {
    pub barrier: Barrier,
    pub start: OnceLock<Instant>,
}

/// A request sent with kernel TX stamps on, waiting for its stamp.
#[derive(Clone, Copy)]
struct TxPending {
    key: u32,
    slot: u32,
    nonce: u64,
    t_pre: i64,
    t_post: i64,
}

/// A client's last good exchange: its next request names it (the
/// interleaved mode, RFC 9769), and the exact T3 of its reply arrives with
/// the reply to that request.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    t1_ns: i64,
    t2: NtpTimestamp,
    t4_ns: i64,
}

struct Client {
    sock: Socket,
    fd: RawFd,
    /// With --interleaved: the last good exchange.
    last: Option<Exchange>,
    /// Kernel TX stamp bookkeeping: the OPT_ID of the next datagram, and the
    /// datagrams still waiting for theirs.
    next_key: u32,
    tx_pending: VecDeque<TxPending>,
    /// Last SO_RXQ_OVFL drop count seen on the socket.
    drops: u32,
}

pub struct Worker {
    cfg: Arc<RunConfig>,
    thread: u32,
    clients: Vec<Client>,
    tracker: Tracker,
    send: SendBatch,
    recv: RecvBatch,
    epoll: Epoll,
    ready: Vec<(u32, u32)>,
    slots: Vec<(usize, u64)>,
    /// With --interleaved, per tracker slot: the exchange its request named.
    named: Vec<Option<Exchange>>,
    /// Per step, the counts of the requests sent in it (created on first use).
    steps: Vec<Option<Box<Stats>>>,
    finalized: Vec<bool>,
    sending_ns: Vec<u64>,
    interval: Box<Stats>,
    interval_index: u64,
    cur_step: usize,
    /// Next step whose counts will be final.
    next_final: usize,
    rr: usize,
    sent_total: u64,
    cap: u64,
    tx: Sender<Msg>,
}

impl Worker {
    /// Opens this thread's sockets.
    pub fn new(cfg: Arc<RunConfig>, thread: u32, tx: Sender<Msg>) -> Result<Self> {
        let mine = cfg.clients_of(thread);
        let mut clients = Vec::with_capacity(mine.len());
        let mut epoll = Epoll::new(mine.len().min(1024)).context("epoll_create")?;
        for (local, &global) in mine.iter().enumerate() {
            let source = cfg.sources.as_ref().map(|s| s[global as usize % s.len()]);
            let sock =
                net::open_client(source, cfg.target, cfg.tx_kernel).with_context(
                    || match source {
                        Some(ip) => format!(
                            "client {global}: cannot open a UDP socket from {ip} to {}",
                            cfg.target
                        ),
                        None => format!(
                            "client {global}: cannot open a UDP socket to {}",
                            cfg.target
                        ),
                    },
                )?;
            let fd = sock.as_raw_fd();
            epoll.add(fd, local as u64).context("epoll_ctl")?;
            clients.push(Client {
                sock,
                fd,
                last: None,
                next_key: 0,
                tx_pending: VecDeque::new(),
                drops: 0,
            });
        }
        // Room for every request of 4 timeouts (at least 4 s) at the peak rate,
        // so a slot is reused long after its request has timed out.
        let peak = cfg.steps.iter().map(|s| s.rate).fold(0.0, f64::max) / cfg.threads as f64;
        let peak = match cfg.pattern {
            Pattern::Flood => peak,
            // Poll: each client once per iburst spacing or per interval.
            Pattern::Poll { interval, .. } => {
                mine.len() as f64 * (1.0 / interval.as_secs_f64()).max(0.5)
            }
        };
        let window = (4.0 * cfg.timeout_ns as f64 / 1e9).max(4.0);
        let tracker = Tracker::new(
            Tracker::slots_for(peak, window),
            crate::tracker::Rng::seed_from_entropy(thread as u64),
        );
        let mut send = SendBatch::new(cfg.batch, HEADER_LEN);
        let template = cfg.request_template();
        for i in 0..send.capacity() {
            send.buf(i).copy_from_slice(&template);
        }
        let n_steps = cfg.steps.len();
        let cap = share(cfg.max_requests, thread, cfg.threads);
        let named = if cfg.expect.interleaved {
            vec![None; tracker.capacity()]
        } else {
            Vec::new()
        };
        Ok(Worker {
            thread,
            clients,
            tracker,
            send,
            recv: RecvBatch::new(cfg.batch),
            epoll,
            ready: Vec::new(),
            slots: vec![(0, 0); cfg.batch],
            named,
            steps: (0..n_steps).map(|_| None).collect(),
            finalized: vec![false; n_steps],
            sending_ns: vec![0; n_steps],
            interval: Box::default(),
            interval_index: 0,
            cur_step: 0,
            next_final: 0,
            rr: 0,
            sent_total: 0,
            cap,
            tx,
            cfg,
        })
    }

    fn step_stats(&mut self, step: usize) -> &mut Stats {
        // Events for a step already reported go to the current one.
        let step = if self.finalized.get(step).copied().unwrap_or(true) {
            self.cur_step.min(self.steps.len() - 1)
        } else {
            step
        };
        self.steps[step].get_or_insert_with(Box::default)
    }

    /// Runs the whole schedule, then waits for the last answers.
    pub fn run(mut self, gate: &StartGate, stop: &AtomicBool) {
        let _ = self.tx.send(Msg::Ready {
            thread: self.thread,
            error: None,
        });
        gate.barrier.wait();
        let start = *gate.start.get().expect("start set before the barrier");
        if !stop.load(Ordering::Relaxed) && !self.clients.is_empty() {
            match self.cfg.pattern {
                Pattern::Flood => self.run_flood(start, stop),
                Pattern::Poll { interval, iburst } => {
                    let mine = self.cfg.clients_of(self.thread);
                    let sched = PollSchedule::new(interval, iburst, &mine, self.cfg.clients);
                    self.run_poll(start, stop, sched)
                }
            }
            self.drain(start);
        }
        self.finish(start);
    }

    fn elapsed_ns(start: Instant) -> u64 {
        start.elapsed().as_nanos() as u64
    }

    fn run_flood(&mut self, start: Instant, stop: &AtomicBool) {
        let steps = self.cfg.steps.clone();
        let (thread, threads) = (self.thread, self.cfg.threads);
        let batch = self.cfg.batch as u64;
        let mut idx = 0;
        let mut pacer = Pacer::new(&steps[0], thread, threads);
        // Requests of the current step already accounted (sent, failed or skipped).
        let mut done = 0u64;
        loop {
            let el = Self::elapsed_ns(start);
            if stop.load(Ordering::Relaxed) {
                self.sending_ns[idx] = el.saturating_sub(steps[idx].start_ns);
                break;
            }
            // Finish the steps whose time is up: send what they still owe.
            while idx < steps.len() && el >= steps[idx].end_ns() {
                let owed = pacer.total().saturating_sub(done);
                self.offer(owed, &pacer, batch);
                self.sending_ns[idx] = steps[idx].len_ns;
                idx += 1;
                done = 0;
                if idx < steps.len() {
                    pacer = Pacer::new(&steps[idx], thread, threads);
                    self.cur_step = idx;
                }
            }
            if idx >= steps.len() || self.sent_total >= self.cap {
                if idx < steps.len() {
                    self.sending_ns[idx] = el.saturating_sub(steps[idx].start_ns);
                }
                break;
            }
            let into = el - steps[idx].start_ns;
            let due = pacer.scheduled(into).saturating_sub(done);
            done += due;
            self.offer(due, &pacer, batch);

            // Sleep until a useful amount is due: about 200 µs worth, at
            // least one request, at most a batch.
            let want = ((pacer.thread_rate() * 200e-6) as u64).clamp(1, batch);
            let next_at = steps[idx].start_ns + pacer.time_of(done + want).min(steps[idx].len_ns);
            let now = Self::elapsed_ns(start);
            let wait = next_at.saturating_sub(now).min(MAX_SLEEP_NS);
            self.poll_io(wait);
            self.housekeeping(Self::elapsed_ns(start));
        }
    }

    /// Offers `due` requests: sends them, or skips what is beyond the backlog
    /// a stalled generator may catch up on (about 20 ms worth).
    fn offer(&mut self, due: u64, pacer: &Pacer, batch: u64) {
        if due == 0 {
            return;
        }
        let step = self.cur_step;
        self.step_stats(step).offered += due;
        self.interval.offered += due;
        let backlog = ((pacer.thread_rate() * 0.02) as u64).max(4 * batch);
        let mut due = due;
        if due > backlog {
            let skipped = due - backlog;
            self.step_stats(step).skipped += skipped;
            self.interval.skipped += skipped;
            due = backlog;
        }
        let n_clients = self.clients.len() as u64;
        while due > 0 && self.sent_total < self.cap {
            // Spread over the clients when there is enough for each, else
            // whole chunks in turn: sendmmsg takes one socket at a time.
            let chunk = due.div_ceil(n_clients).clamp(1, batch).min(due);
            let chunk = chunk.min(self.cap - self.sent_total) as usize;
            let client = self.rr;
            self.rr = (self.rr + 1) % self.clients.len();
            self.send_batch(client, chunk, step);
            due -= chunk as u64;
        }
    }

    fn run_poll(&mut self, start: Instant, stop: &AtomicBool, mut sched: PollSchedule) {
        let step = self.cfg.steps[0];
        loop {
            let el = Self::elapsed_ns(start);
            if stop.load(Ordering::Relaxed) || self.sent_total >= self.cap {
                self.sending_ns[0] = el.min(step.end_ns());
                break;
            }
            // Everything due before the end is sent, even if we woke late.
            let now = el.min(step.end_ns() - 1);
            while self.sent_total < self.cap {
                let Some(c) = sched.pop_due(now) else {
                    break;
                };
                self.step_stats(0).offered += 1;
                self.interval.offered += 1;
                self.send_batch(c as usize, 1, 0);
            }
            if el >= step.end_ns() {
                self.sending_ns[0] = step.end_ns();
                break;
            }
            let next = sched.next_due().unwrap_or(u64::MAX).min(step.end_ns());
            let wait = next
                .saturating_sub(Self::elapsed_ns(start))
                .min(MAX_SLEEP_NS);
            self.poll_io(wait);
            self.housekeeping(Self::elapsed_ns(start));
        }
    }

    /// Builds `n` requests for `client` and sends them with sendmmsg.
    fn send_batch(&mut self, client: usize, n: usize, step: usize) {
        for i in 0..n {
            let (slot, nonce, evicted) = self.tracker.alloc(client as u32, step as u16);
            if let Some(e) = evicted {
                self.count_lost(&e);
            }
            self.send.buf(i)[40..48].copy_from_slice(&nonce.to_be_bytes());
            self.slots[i] = (slot, nonce);
            if self.cfg.expect.interleaved {
                // Origin: the server's receive timestamp of the last reply;
                // receive: the nonce again, changed, for the interleaved
                // reply to echo (it must differ from the transmit).
                let last = self.clients[client].last;
                let origin = last.map_or(0, |x| x.t2.to_bits());
                let buf = self.send.buf(i);
                buf[24..32].copy_from_slice(&origin.to_be_bytes());
                buf[32..40].copy_from_slice(&(nonce ^ INTERLEAVED_NONCE).to_be_bytes());
                self.named[slot] = last;
            }
        }
        let fd = self.clients[client].fd;
        let kernel = self.cfg.tx_kernel;
        let mut i = 0;
        while i < n {
            let t_pre = net::realtime_ns();
            match self.send.send(fd, i, n) {
                Ok(k) => {
                    let t_post = if kernel { net::realtime_ns() } else { t_pre };
                    for j in i..i + k {
                        let (slot, nonce) = self.slots[j];
                        // The start of the call: no datagram left before it,
                        // so the user-space RTT is an upper bound.
                        self.tracker.commit(slot, t_pre);
                        if kernel {
                            let c = &mut self.clients[client];
                            c.tx_pending.push_back(TxPending {
                                key: c.next_key,
                                slot: slot as u32,
                                nonce,
                                t_pre,
                                t_post,
                            });
                            c.next_key = c.next_key.wrapping_add(1);
                            if c.tx_pending.len() > MAX_TX_PENDING {
                                c.tx_pending.pop_front();
                            }
                        }
                    }
                    self.sent_total += k as u64;
                    self.step_stats(step).sent += k as u64;
                    self.interval.sent += k as u64;
                    i += k;
                    if k == 0 {
                        break;
                    }
                }
                Err(e) => {
                    // The datagram at `i` failed. It took no TX stamp id
                    // (Linux 6.2 and later roll the count back; seen on 6.18
                    // for EMSGSIZE and EINVAL); where an older kernel took
                    // one, the time window catches the mismatch.
                    let give_up = e == libc::EAGAIN || e == libc::ENOBUFS;
                    let failed = if give_up { n - i } else { 1 };
                    for j in i..i + failed {
                        self.tracker.cancel(self.slots[j].0);
                    }
                    *self.step_stats(step).send_errors.entry(e).or_insert(0) += failed as u64;
                    *self.interval.send_errors.entry(e).or_insert(0) += failed as u64;
                    i += failed;
                }
            }
        }
    }

    /// Waits up to `wait_ns` for answers (and TX stamps) and handles them.
    fn poll_io(&mut self, wait_ns: u64) {
        let events = match self.epoll.wait(wait_ns) {
            Ok(ev) => ev,
            Err(_) => return,
        };
        self.ready.clear();
        for ev in events {
            let (token, bits) = (ev.u64, ev.events);
            self.ready.push((token as u32, bits));
        }
        for k in 0..self.ready.len() {
            let (client, bits) = self.ready[k];
            if self.cfg.tx_kernel && bits & libc::EPOLLERR as u32 != 0 {
                self.read_tx_stamps(client as usize);
            }
            self.read_answers(client as usize);
        }
    }

    fn read_answers(&mut self, client: usize) {
        let fd = self.clients[client].fd;
        // A few batches at most, so sending keeps its pace under a flood.
        for _ in 0..8 {
            let n = match self.recv.recv(fd, 0) {
                Ok(n) => n,
                Err(e) => {
                    // ECONNREFUSED: an ICMP port unreachable came back.
                    let step = self.cur_step;
                    *self.step_stats(step).recv_errors.entry(e).or_insert(0) += 1;
                    *self.interval.recv_errors.entry(e).or_insert(0) += 1;
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            // When the answers were read: how long they had waited in the
            // socket since the kernel stamped their arrival.
            let mut user_now = net::realtime_ns();
            for i in 0..n {
                let stamp = self.recv.stamp(i);
                let t4 = if stamp.ns != 0 {
                    let waited = user_now - stamp.ns;
                    self.interval
                        .read_delay
                        .saturating_record(waited.max(0) as u64);
                    let step = self.cur_step;
                    self.step_stats(step)
                        .read_delay
                        .saturating_record(waited.max(0) as u64);
                    stamp.ns
                } else {
                    user_now = net::realtime_ns();
                    self.interval.no_rx_stamp += 1;
                    let step = self.cur_step;
                    self.step_stats(step).no_rx_stamp += 1;
                    user_now
                };
                if let Some(d) = stamp.drops {
                    let c = &mut self.clients[client];
                    let new = d.wrapping_sub(c.drops) as u64;
                    if new > 0 && new < u32::MAX as u64 / 2 {
                        c.drops = d;
                        self.interval.local_drops += new;
                        let step = self.cur_step;
                        self.step_stats(step).local_drops += new;
                    }
                }
                let source_ok = self.recv.source_is(i, &self.cfg.target);
                let (data, _truncated) = self.recv.data(i);
                let outcome = classify(
                    data,
                    source_ok,
                    client as u32,
                    &mut self.tracker,
                    &self.cfg.expect,
                );
                self.count(outcome, t4);
            }
            if n < self.recv_capacity() {
                break;
            }
        }
    }

    fn recv_capacity(&self) -> usize {
        self.cfg.batch
    }

    fn read_tx_stamps(&mut self, client: usize) {
        let fd = self.clients[client].fd;
        // A bounded number of batches: the stamps keep coming while we send.
        for _ in 0..16 {
            let n = match self.recv.recv(fd, libc::MSG_ERRQUEUE) {
                Ok(n) => n,
                Err(_) => break,
            };
            for i in 0..n {
                let st = self.recv.stamp(i);
                let (Some(id), true) = (st.id, st.ns != 0) else {
                    continue;
                };
                let c = &mut self.clients[client];
                // Stamps come in send order; skip requests whose stamp never came.
                while let Some(p) = c.tx_pending.front() {
                    if (p.key.wrapping_sub(id) as i32) < 0 {
                        c.tx_pending.pop_front();
                    } else {
                        break;
                    }
                }
                if let Some(p) = c.tx_pending.front().copied() {
                    if p.key == id {
                        c.tx_pending.pop_front();
                        let plausible = st.ns >= p.t_pre - TX_STAMP_SLACK_NS
                            && st.ns <= p.t_post + TX_STAMP_SLACK_NS;
                        if plausible {
                            self.tracker.set_kernel_t1(p.slot as usize, p.nonce, st.ns);
                        }
                    }
                }
            }
            if n < self.cfg.batch {
                break;
            }
        }
    }

    /// Counts one received datagram.
    fn count(&mut self, outcome: Outcome, t4_ns: i64) {
        match outcome {
            Outcome::Answer {
                slot,
                verdict,
                interleaved,
            } => {
                let e = *self.tracker.entry(slot);
                let fallback = self.cfg.tx_kernel && !e.kernel_t1;
                let (verdict, sample) = self.sample(slot, &e, verdict, interleaved, t4_ns);
                let apply = |s: &mut Stats| {
                    s.answered += 1;
                    match verdict {
                        Verdict::Ok { .. } => s.ok += 1,
                        Verdict::Unsync { .. } => s.unsync += 1,
                        Verdict::Kod(code) => s.add_kod(code),
                        Verdict::Invalid(r) => s.add_invalid(r),
                    }
                    match sample {
                        Some(Sample::Basic(rtt, server, err, after_t3)) => {
                            s.record_times(rtt, server, err);
                            s.reply_after_t3.record(after_t3);
                        }
                        Some(Sample::Interleaved(rtt, err)) => s.record_interleaved(rtt, err),
                        None => return,
                    }
                    if fallback {
                        s.t1_fallback += 1;
                    }
                };
                apply(self.step_stats(e.step as usize));
                apply(&mut self.interval);
            }
            other => {
                let apply = |s: &mut Stats| match other {
                    Outcome::Duplicate => s.duplicate += 1,
                    Outcome::Late => s.late += 1,
                    Outcome::Invalid(r) => s.add_invalid(r),
                    Outcome::Answer { .. } => {}
                };
                let step = self.cur_step;
                apply(self.step_stats(step));
                apply(&mut self.interval);
            }
        }
    }

    /// The timings an answer gives, and its verdict: an interleaved answer
    /// whose exact T3 does not fit the exchange its request named is
    /// invalid. With --interleaved, a good answer becomes its client's last
    /// exchange.
    fn sample(
        &mut self,
        slot: usize,
        e: &Entry,
        verdict: Verdict,
        interleaved: bool,
        t4_ns: i64,
    ) -> (Verdict, Option<Sample>) {
        let (Verdict::Ok { t2, t3 } | Verdict::Unsync { t2, t3 }) = verdict else {
            return (verdict, None);
        };
        let sample = if interleaved {
            let Some(err) = interleaved_offset(self.named[slot], t2, t3) else {
                return (Verdict::Invalid(Invalid::Interleaved), None);
            };
            Sample::Interleaved(t4_ns - e.t1_ns, err)
        } else {
            let (rtt, server, err) = timings(e.t1_ns, t2, t3, t4_ns);
            let t3_ns = ntp_ns_near(t3, t4_ns);
            Sample::Basic(rtt, server, err, t4_ns - t3_ns)
        };
        if self.cfg.expect.interleaved {
            self.clients[e.client as usize].last = Some(Exchange {
                t1_ns: e.t1_ns,
                t2,
                t4_ns,
            });
        }
        (verdict, Some(sample))
    }

    fn count_lost(&mut self, e: &Entry) {
        self.step_stats(e.step as usize).lost += 1;
        self.interval.lost += 1;
    }

    /// Expires timed-out requests, reports finished seconds and steps.
    fn housekeeping(&mut self, el: u64) {
        let deadline = net::realtime_ns() - self.cfg.timeout_ns as i64;
        let mut lost = Vec::new();
        self.tracker.expire(deadline, |e| lost.push(*e));
        for e in &lost {
            self.count_lost(e);
        }
        while el >= (self.interval_index + 1) * INTERVAL_NS {
            self.flush_interval();
        }
        // A step's counts are final once its last request has timed out.
        while self.next_final < self.cur_step
            && el
                >= self.cfg.steps[self.next_final].end_ns() + self.cfg.timeout_ns + FINAL_MARGIN_NS
        {
            self.finalize_step(self.next_final);
            self.next_final += 1;
        }
    }

    fn flush_interval(&mut self) {
        let stats = std::mem::take(&mut self.interval);
        let _ = self.tx.send(Msg::Interval {
            index: self.interval_index,
            stats,
        });
        self.interval_index += 1;
    }

    fn finalize_step(&mut self, k: usize) {
        let stats = self.steps[k].take().unwrap_or_default();
        self.finalized[k] = true;
        let _ = self.tx.send(Msg::StepDone {
            step: k,
            stats,
            sending_ns: self.sending_ns[k],
        });
    }

    /// After the last request: wait for the answers, at most one timeout.
    fn drain(&mut self, start: Instant) {
        let until = Self::elapsed_ns(start) + self.cfg.timeout_ns + FINAL_MARGIN_NS;
        loop {
            let el = Self::elapsed_ns(start);
            if self.tracker.outstanding() == 0 || el >= until {
                break;
            }
            self.poll_io((until - el).min(MAX_SLEEP_NS));
            self.housekeeping(Self::elapsed_ns(start));
        }
        // Answers that are already queued still count.
        for c in 0..self.clients.len() {
            self.read_answers(c);
        }
    }

    fn finish(mut self, start: Instant) {
        let mut lost = Vec::new();
        self.tracker.expire_all(|e| lost.push(*e));
        for e in &lost {
            self.count_lost(e);
        }
        let el = Self::elapsed_ns(start);
        while el >= (self.interval_index + 1) * INTERVAL_NS {
            self.flush_interval();
        }
        self.flush_interval(); // the last, partial second
                               // Steps never reached (the run was stopped) have no row.
        for k in self.next_final..=self.cur_step {
            self.finalize_step(k);
        }
        let _ = self.tx.send(Msg::Done);
        drop(self.clients.drain(..).map(|c| c.sock).collect::<Vec<_>>());
    }
}

/// What one answer measured, in ns.
#[derive(Clone, Copy, Debug)]
enum Sample {
    /// Round trip, server time T3 - T2, offset, T4 - T3.
    Basic(i64, i64, i64, i64),
    /// Round trip, and the offset of the exchange the answer completes.
    Interleaved(i64, i64),
}

/// The offset of the exchange `named` that an interleaved answer completes
/// (its T2 this answer's receive timestamp, its T3 the exact departure it
/// carries), in ns. `None` when no exchange was named, or when T3 is not
/// between the named exchange's T2 and this answer's: the reply it stamps
/// left after its request arrived and before the next request did.
fn interleaved_offset(named: Option<Exchange>, t2: NtpTimestamp, t3: NtpTimestamp) -> Option<i64> {
    let x = named?;
    if t3.seconds_since(x.t2) < 0.0 || t2.seconds_since(t3) < 0.0 {
        return None;
    }
    Some(timings(x.t1_ns, x.t2, t3, x.t4_ns).2)
}

/// An NTP timestamp as Unix ns, in the era nearest `near_ns`.
fn ntp_ns_near(t: NtpTimestamp, near_ns: i64) -> i64 {
    let (secs, nanos) = t.to_unix_near(near_ns.div_euclid(1_000_000_000));
    secs * 1_000_000_000 + nanos as i64
}

/// RTT T4 - T1, server time T3 - T2 and the offset ((T2 - T1) + (T3 - T4)) / 2,
/// all in ns, from the client's realtime stamps and the server's NTP stamps.
pub fn timings(t1_ns: i64, t2: NtpTimestamp, t3: NtpTimestamp, t4_ns: i64) -> (i64, i64, i64) {
    let ntp = |ns: i64| {
        NtpTimestamp::from_unix(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    };
    let (t1, t4) = (ntp(t1_ns), ntp(t4_ns));
    let rtt = t4_ns - t1_ns;
    let server = (t3.seconds_since(t2) * 1e9).round() as i64;
    let offset = ((t2.seconds_since(t1) + t3.seconds_since(t4)) / 2.0 * 1e9).round() as i64;
    (rtt, server, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interleaved_answer_completes_the_exchange_before() {
        let t1 = 1_700_000_000_000_000_000i64;
        let ntp =
            |ns: i64| NtpTimestamp::from_unix(ns / 1_000_000_000, (ns % 1_000_000_000) as u32);
        // The exchange before: sent at t1, received by the server 5 µs
        // later, its reply left 10 µs after that (the exact T3, known only
        // now) and arrived 5 µs later: offset zero on a shared clock.
        let before = Exchange {
            t1_ns: t1,
            t2: ntp(t1 + 5_000),
            t4_ns: t1 + 20_000,
        };
        let this_t2 = ntp(t1 + 1_000_000);
        let exact_t3 = ntp(t1 + 15_000);
        let err = interleaved_offset(Some(before), this_t2, exact_t3).unwrap();
        assert!(err.abs() <= 1, "{err}");
        // A T3 before the named request arrived, or after this one did, or
        // no exchange named: not a valid interleaved answer.
        assert_eq!(
            interleaved_offset(Some(before), this_t2, ntp(t1 + 4_000)),
            None
        );
        assert_eq!(
            interleaved_offset(Some(before), this_t2, ntp(t1 + 2_000_000)),
            None
        );
        assert_eq!(interleaved_offset(None, this_t2, exact_t3), None);
    }

    #[test]
    fn timings_from_stamps() {
        let t1 = 1_700_000_000_000_000_000i64;
        // Server 3 µs late on the way out, 10 µs to process, 3 µs back; its
        // clock 1 µs ahead.
        let t2 = NtpTimestamp::from_unix(1_700_000_000, 4_000);
        let t3 = NtpTimestamp::from_unix(1_700_000_000, 14_000);
        let t4 = t1 + 16_000;
        let (rtt, server, offset) = timings(t1, t2, t3, t4);
        assert_eq!(rtt, 16_000);
        assert!((server - 10_000).abs() <= 1);
        assert!((offset - 1_000).abs() <= 1, "{offset}");
    }
}
