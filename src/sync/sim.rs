//! A deterministic simulation of the sync engine, in the spirit of chrony's
//! clknetsim: no real time passes and every random draw comes from a seeded
//! generator, so a scenario gives the same figures on every run.
//!
//! - **Oscillator**: true time `t`; the free-running system clock starts
//!   `initial_offset` off and runs `freq` fast, the frequency doing a random
//!   walk (`wander`, s^-1/2). The engine's monotonic time is that oscillator.
//! - **Clock**: the real [`SoftwareClock`] over the simulated system time;
//!   served time = system time + the engine's correction.
//! - **Network**: per server, base delay each way, exponential jitter each
//!   way, loss each way.
//! - **Servers**: a clock `offset + freq·t` off true time plus Gaussian
//!   timestamp noise; they can die, or answer with a Kiss-o'-Death. Replies
//!   are real 48-byte packets built from the engine's real requests, so the
//!   whole wire path is exercised.
//!
//! Event driven: it jumps to the next poll, reply or measurement tick.

use std::cell::Cell;
use std::rc::Rc;

use super::discipline::ClockUpdate;
use super::engine::{Engine, EngineConfig, SourceId};
use super::select::Mark;
use super::source::SourceOptions;
use crate::clock::{ClockControl, ClockError, ClockStatus, SoftwareClock, SystemTime};
use crate::proto::{Header, LeapIndicator, Mode, NtpShort, NtpTimestamp, HEADER_LEN};

/// When the start-up transient is over, for [`Report::max_settled`], s.
pub const SETTLED: f64 = 600.0;

/// The simulation's epoch: true time 0 is this Unix time (mid 2025).
pub const BASE_UNIX: i64 = 1_750_000_000;
const BASE_UNIX_NS: i64 = BASE_UNIX * 1_000_000_000;

/// splitmix64 with Box–Muller normals.
pub struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed,
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let phi = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare = Some(r * phi.sin());
        r * phi.cos()
    }

    pub fn exponential(&mut self, mean: f64) -> f64 {
        if mean <= 0.0 {
            0.0
        } else {
            -mean * self.uniform().ln()
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.uniform() < p
    }
}

/// The simulated system clock, shared with the [`SoftwareClock`].
#[derive(Clone)]
pub struct SimTime(Rc<Cell<i64>>);

impl SystemTime for SimTime {
    fn unix_ns(&self) -> i64 {
        self.0.get()
    }
}

/// One direction's delay is `base + Exp(jitter)`; each direction loses
/// packets with probability `loss`.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    pub base_up: f64,
    pub base_down: f64,
    pub jitter: f64,
    pub loss: f64,
}

impl Path {
    pub fn symmetric(base: f64, jitter: f64) -> Self {
        Path {
            base_up: base,
            base_down: base,
            jitter,
            loss: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kiss {
    /// A rate limiter: a request less than `min_interval` after the previous
    /// one gets a RATE kiss with this poll in the packet (0: none).
    Rate { min_interval: f64, poll: i8 },
    /// Every request gets DENY.
    Deny,
}

/// One simulated upstream.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub addr: std::net::IpAddr,
    /// Server clock minus true time at t = 0, s.
    pub offset: f64,
    /// Server clock frequency error (dimensionless).
    pub freq: f64,
    /// Timestamp noise, standard deviation, s.
    pub noise: f64,
    pub stratum: u8,
    pub root_delay: f64,
    pub root_dispersion: f64,
    pub leap: LeapIndicator,
    pub path: Path,
    /// Server time between receive and transmit, s.
    pub processing: f64,
    /// Stops answering at this true time.
    pub dies_at: Option<f64>,
    /// Answers with a kiss from this true time on.
    pub kiss: Option<(f64, Kiss)>,
    pub options: SourceOptions,
    /// When the last request arrived (for the rate limiter).
    last_request: Option<f64>,
}

impl ServerSpec {
    /// An honest stratum 1 server: 100 µs each way plus 100 µs mean
    /// exponential jitter each way, 1 µs timestamp noise, `iburst`.
    pub fn honest(n: u8) -> Self {
        ServerSpec {
            addr: std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n)),
            offset: 0.0,
            freq: 0.0,
            noise: 1e-6,
            stratum: 1,
            root_delay: 0.0,
            root_dispersion: 1e-5,
            leap: LeapIndicator::NoWarning,
            path: Path::symmetric(100e-6, 100e-6),
            processing: 20e-6,
            dies_at: None,
            kiss: None,
            options: SourceOptions {
                iburst: true,
                ..SourceOptions::default()
            },
            last_request: None,
        }
    }

    pub fn with_offset(mut self, offset: f64) -> Self {
        self.offset = offset;
        self
    }

    pub fn with_freq_ppm(mut self, ppm: f64) -> Self {
        self.freq = ppm * 1e-6;
        self
    }

    pub fn dying_at(mut self, t: f64) -> Self {
        self.dies_at = Some(t);
        self
    }

    pub fn kissing(mut self, from: f64, kiss: Kiss) -> Self {
        self.kiss = Some((from, kiss));
        self
    }

    /// The server's clock at true time `t`, relative to the epoch, s.
    fn clock(&self, t: f64, rng: &mut Rng) -> f64 {
        t + self.offset + self.freq * t + self.noise * rng.normal()
    }

    fn reply(&mut self, request: &[u8], t_receive: f64, rng: &mut Rng) -> [u8; HEADER_LEN] {
        let previous = self.last_request.replace(t_receive);
        let req = Header::parse(request).expect("engine requests are 48 bytes");
        assert_eq!(req.mode, Mode::Client);
        let epoch = NtpTimestamp::from_unix(BASE_UNIX, 0);
        let t2 = self.clock(t_receive, rng);
        let t3 = self.clock(t_receive + self.processing, rng).max(t2);
        let mut h = Header {
            leap: self.leap,
            version: req.version,
            mode: Mode::Server,
            stratum: self.stratum,
            poll: req.poll,
            precision: -22,
            root_delay: NtpShort::from_seconds(self.root_delay),
            root_dispersion: NtpShort::from_seconds(self.root_dispersion),
            reference_id: *b"GPS\0",
            reference_ts: epoch.add_seconds(t2 - 8.0),
            origin_ts: req.transmit_ts,
            receive_ts: epoch.add_seconds(t2),
            transmit_ts: epoch.add_seconds(t3),
        };
        if let Some((from, kiss)) = self.kiss {
            let code = match kiss {
                _ if t_receive < from => None,
                Kiss::Rate { min_interval, poll } => previous
                    .is_some_and(|p| t_receive - p < min_interval)
                    .then(|| {
                        h.poll = req.poll.max(poll);
                        *b"RATE"
                    }),
                Kiss::Deny => Some(*b"DENY"),
            };
            if let Some(code) = code {
                h.leap = LeapIndicator::Unknown;
                h.stratum = 0;
                h.reference_id = code;
            }
        }
        h.to_bytes()
    }
}

/// A simulation setup.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub seed: u64,
    /// True seconds to run.
    pub duration: f64,
    /// Local clock minus true time at start, s.
    pub initial_offset: f64,
    /// Local oscillator frequency error, ppm.
    pub freq_ppm: f64,
    /// Frequency random walk, s^-1/2 (the frequency's standard deviation
    /// grows as wander × √t).
    pub wander: f64,
    pub servers: Vec<ServerSpec>,
    pub engine: EngineConfig,
    /// Seconds between error measurements.
    pub tick: f64,
}

impl Scenario {
    /// chrony's reference case: 100 ppm, 0.1 s, 100 µs jitter, four honest
    /// sources, a little wander.
    pub fn baseline(name: &'static str, seed: u64) -> Self {
        Scenario {
            name,
            seed,
            duration: 4.0 * 3600.0,
            initial_offset: 0.1,
            freq_ppm: 100.0,
            wander: 1e-9,
            servers: (1..=4).map(ServerSpec::honest).collect(),
            engine: EngineConfig::default(),
            tick: 1.0,
        }
    }
}

struct Flight {
    arrive: f64,
    source: SourceId,
    bytes: [u8; HEADER_LEN],
    t1: NtpTimestamp,
}

/// A running simulation and what it observed.
pub struct Sim {
    pub scenario: Scenario,
    rng: Rng,
    /// True time, s.
    pub t: f64,
    /// The oscillator's reading since start (the engine's monotonic time), s.
    pub mono: f64,
    pub osc_freq: f64,
    time: SimTime,
    pub clock: SoftwareClock<SimTime>,
    pub engine: Engine,
    pub ids: Vec<SourceId>,
    flights: Vec<Flight>,
    next_tick: f64,
    /// (true time, served − true) at every tick.
    pub errors: Vec<(f64, f64)>,
    /// (true time, residual frequency error) at every tick.
    pub freq_errors: Vec<(f64, f64)>,
    /// True times of the requests sent to each source.
    pub requests: Vec<Vec<f64>>,
    /// Last true time each source was selected (system peer or survivor).
    pub last_selected: Vec<Option<f64>>,
    /// First true time each source was selected.
    pub first_selected: Vec<Option<f64>>,
    /// (true time, synchronized) whenever the engine's state changed.
    pub sync_changes: Vec<(f64, bool)>,
    /// (true time, offset) of every step.
    pub steps: Vec<(f64, f64)>,
    /// (true time, status handed to the clock, root distance replies serve then).
    pub statuses: Vec<(f64, ClockStatus, f64)>,
    pub replies: u64,
    pub rejected: u64,
}

/// Figures from one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub name: &'static str,
    /// From the start until |error| stays below the threshold, s.
    pub time_to_sync: f64,
    /// After the sync time, s.
    pub rms_error: f64,
    pub max_error: f64,
    /// Largest |error| from 10 minutes on (after the start-up transient).
    pub max_settled: f64,
    pub mean_error: f64,
    /// Residual frequency error at the end and RMS after sync, ppm.
    pub final_freq_ppm: f64,
    pub rms_freq_ppm: f64,
    pub steps: usize,
}

impl Report {
    pub fn line(&self) -> String {
        format!(
            "{:<36} sync {:>4.0} s | RMS {:>5.1} µs | max {:>5.1} µs, from 10 min {:>5.1} µs | \
             mean {:>+6.1} µs | freq end {:>+7.4} ppm, RMS {:>6.4} ppm | steps {}",
            self.name,
            self.time_to_sync,
            self.rms_error * 1e6,
            self.max_error * 1e6,
            self.max_settled * 1e6,
            self.mean_error * 1e6,
            self.final_freq_ppm,
            self.rms_freq_ppm,
            self.steps
        )
    }
}

/// The simulation's clock as the engine's `update` sees it, keeping what it
/// hands to `set_status` (a kernel clock's `STA_UNSYNC`, leap bits, errors).
struct StatusLog<'a> {
    clock: &'a mut SoftwareClock<SimTime>,
    statuses: &'a mut Vec<ClockStatus>,
}

impl ClockControl for StatusLog<'_> {
    fn now(&self) -> NtpTimestamp {
        self.clock.now()
    }
    fn frequency_ppm(&self) -> f64 {
        self.clock.frequency_ppm()
    }
    fn set_frequency(&mut self, ppm: f64) -> Result<(), ClockError> {
        self.clock.set_frequency(ppm)
    }
    fn step(&mut self, seconds: f64) -> Result<(), ClockError> {
        self.clock.step(seconds)
    }
    fn max_frequency_ppm(&self) -> f64 {
        self.clock.max_frequency_ppm()
    }
    fn set_status(&mut self, status: &ClockStatus) -> Result<(), ClockError> {
        self.statuses.push(*status);
        Ok(())
    }
}

impl Sim {
    pub fn new(scenario: Scenario) -> Self {
        let time = SimTime(Rc::new(Cell::new(0)));
        let mut clock = SoftwareClock::with_source(time.clone());
        time.0
            .set(BASE_UNIX_NS + (scenario.initial_offset * 1e9).round() as i64);
        let mut engine = Engine::new(scenario.engine, 0.0, &mut clock).expect("software clock");
        let ids = scenario
            .servers
            .iter()
            .map(|s| engine.add_source(s.addr, s.options, 0.0))
            .collect();
        let n = scenario.servers.len();
        Sim {
            rng: Rng::new(scenario.seed),
            t: 0.0,
            mono: 0.0,
            osc_freq: scenario.freq_ppm * 1e-6,
            time,
            clock,
            engine,
            ids,
            flights: Vec::new(),
            next_tick: 0.0,
            errors: Vec::new(),
            freq_errors: Vec::new(),
            requests: vec![Vec::new(); n],
            last_selected: vec![None; n],
            first_selected: vec![None; n],
            sync_changes: Vec::new(),
            steps: Vec::new(),
            statuses: Vec::new(),
            replies: 0,
            rejected: 0,
            scenario,
        }
    }

    /// Runs the whole scenario and returns its figures.
    pub fn run(scenario: Scenario) -> (Sim, Report) {
        let mut sim = Sim::new(scenario);
        let end = sim.scenario.duration;
        sim.run_until(end);
        let report = sim.report(1e-3);
        eprintln!("{}", report.line());
        (sim, report)
    }

    fn system_ns(&self) -> i64 {
        BASE_UNIX_NS + ((self.scenario.initial_offset + self.mono) * 1e9).round() as i64
    }

    /// Served time minus true time now, s.
    pub fn error(&self) -> f64 {
        let served = self.clock.correction().apply(self.system_ns());
        let truth = BASE_UNIX_NS + (self.t * 1e9).round() as i64;
        (served - truth) as f64 * 1e-9
    }

    /// The served clock's frequency error without the slew in progress.
    pub fn freq_error(&self) -> f64 {
        (1.0 + self.osc_freq) * (1.0 + self.engine.frequency_ppm() * 1e-6) - 1.0
    }

    fn advance(&mut self, t: f64) {
        let dt = t - self.t;
        if dt <= 0.0 {
            return;
        }
        self.mono += dt * (1.0 + self.osc_freq);
        self.t = t;
        if self.scenario.wander > 0.0 {
            self.osc_freq += self.scenario.wander * dt.sqrt() * self.rng.normal();
        }
        self.time.0.set(self.system_ns());
    }

    /// Runs until true time `end`.
    pub fn run_until(&mut self, end: f64) {
        let mut idle_loops = 0u32;
        while self.t < end {
            let wake = self.engine.next_wakeup();
            let t_wake = if wake.is_finite() {
                self.t + (wake - self.mono).max(0.0) / (1.0 + self.osc_freq) + 1e-9
            } else {
                f64::INFINITY
            };
            let t_flight = self
                .flights
                .iter()
                .map(|f| f.arrive)
                .fold(f64::INFINITY, f64::min);
            let t_next = t_wake.min(t_flight).min(self.next_tick).min(end);
            if t_next <= self.t {
                idle_loops += 1;
                assert!(idle_loops < 1000, "simulation stuck at t = {}", self.t);
            } else {
                idle_loops = 0;
            }
            self.advance(t_next);
            let mut engine_event = false;
            while let Some(i) = self.flights.iter().position(|f| f.arrive <= self.t) {
                let f = self.flights.swap_remove(i);
                let t4 = self.clock.now();
                match self
                    .engine
                    .on_reply(f.source, &f.bytes, f.t1, t4, self.mono)
                {
                    Ok(_) => self.replies += 1,
                    Err(_) => self.rejected += 1,
                }
                engine_event = true;
            }
            if self.mono >= wake {
                self.send_requests();
                engine_event = true;
            }
            if engine_event {
                self.engine_update();
            }
            if self.t >= self.next_tick {
                self.errors.push((self.t, self.error()));
                self.freq_errors.push((self.t, self.freq_error()));
                self.next_tick += self.scenario.tick;
            }
        }
    }

    fn send_requests(&mut self) {
        let rng = &mut self.rng;
        let requests = self.engine.poll(self.mono, || NtpTimestamp(rng.next_u64()));
        for r in requests {
            let i = self
                .ids
                .iter()
                .position(|&id| id == r.source)
                .expect("known source");
            self.requests[i].push(self.t);
            let t1 = self.clock.now();
            let server = &mut self.scenario.servers[i];
            if server.dies_at.is_some_and(|d| self.t >= d) {
                continue;
            }
            let path = server.path;
            if self.rng.chance(path.loss) {
                continue;
            }
            let at_server = self.t + path.base_up + self.rng.exponential(path.jitter);
            let bytes = server.reply(&r.packet, at_server, &mut self.rng);
            if self.rng.chance(path.loss) {
                continue;
            }
            let arrive =
                at_server + server.processing + path.base_down + self.rng.exponential(path.jitter);
            self.flights.push(Flight {
                arrive,
                source: r.source,
                bytes,
                t1,
            });
        }
    }

    fn engine_update(&mut self) {
        let mut sent = Vec::new();
        let mut clock = StatusLog {
            clock: &mut self.clock,
            statuses: &mut sent,
        };
        match self.engine.update(self.mono, &mut clock) {
            Ok(Some(ClockUpdate::Stepped { offset, .. })) => self.steps.push((self.t, offset)),
            Ok(_) => {}
            Err(e) => panic!("software clock refused: {e}"),
        }
        let served = self.engine.system_info();
        let distance = served.root_delay / 2.0 + served.root_dispersion_at(self.clock.now());
        for status in sent {
            self.statuses.push((self.t, status, distance));
        }
        let synced = self.engine.is_synchronized();
        if self.sync_changes.last().map(|c| c.1) != Some(synced) {
            self.sync_changes.push((self.t, synced));
        }
        for (i, &id) in self.ids.iter().enumerate() {
            if self.engine.mark(id).is_some_and(Mark::is_selected) {
                self.last_selected[i] = Some(self.t);
                self.first_selected[i].get_or_insert(self.t);
            }
        }
    }

    /// Figures with "in sync" meaning |error| < `threshold`.
    pub fn report(&self, threshold: f64) -> Report {
        let last_bad = self.errors.iter().rposition(|&(_, e)| e.abs() >= threshold);
        let (sync_time, from) = match last_bad {
            None => (0.0, 0),
            Some(i) if i + 1 < self.errors.len() => (self.errors[i + 1].0, i + 1),
            Some(_) => (f64::INFINITY, self.errors.len()),
        };
        let after = &self.errors[from..];
        let n = after.len().max(1) as f64;
        let rms = (after.iter().map(|e| e.1 * e.1).sum::<f64>() / n).sqrt();
        let max = after.iter().map(|e| e.1.abs()).fold(0.0, f64::max);
        let mean = after.iter().map(|e| e.1).sum::<f64>() / n;
        let freq_after = &self.freq_errors[from.min(self.freq_errors.len())..];
        let rms_freq = (freq_after.iter().map(|f| f.1 * f.1).sum::<f64>()
            / freq_after.len().max(1) as f64)
            .sqrt();
        Report {
            name: self.scenario.name,
            time_to_sync: sync_time,
            rms_error: rms,
            max_error: max,
            max_settled: self
                .errors
                .iter()
                .filter(|e| e.0 >= SETTLED)
                .map(|e| e.1.abs())
                .fold(0.0, f64::max),
            mean_error: mean,
            final_freq_ppm: self.freq_errors.last().map_or(f64::NAN, |f| f.1 * 1e6),
            rms_freq_ppm: rms_freq * 1e6,
            steps: self.steps.len(),
        }
    }

    /// Figures over true times in `[from, to)` only.
    pub fn window(&self, from: f64, to: f64) -> (f64, f64, f64) {
        let w: Vec<f64> = self
            .errors
            .iter()
            .filter(|e| e.0 >= from && e.0 < to)
            .map(|e| e.1)
            .collect();
        let n = w.len().max(1) as f64;
        let rms = (w.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
        let max = w.iter().map(|e| e.abs()).fold(0.0, f64::max);
        let mean = w.iter().sum::<f64>() / n;
        (rms, max, mean)
    }

    /// Whether the engine was reporting synchronized at true time `t`.
    pub fn synchronized_at(&self, t: f64) -> bool {
        self.sync_changes
            .iter()
            .rev()
            .find(|c| c.0 <= t)
            .is_some_and(|c| c.1)
    }
}
