//! The sync engine: sources, estimation, selection and discipline behind one
//! sans-IO interface.
//!
//! The engine never reads a clock or touches a socket. The caller (the sync
//! thread, or the simulation) passes the monotonic time in, sends the
//! requests [`Engine::poll`] returns, hands replies to [`Engine::on_reply`],
//! calls [`Engine::update`] after either and whenever [`Engine::next_wakeup`]
//! comes, and publishes [`Engine::system_info`] with its clock's correction.

use std::fmt;
use std::net::IpAddr;

use super::discipline::{ClockUpdate, Discipline, DisciplineConfig};
use super::estimate::{Estimator, Point, WanderConfig, Weighting};
use super::filter::{ClockFilter, FilterSample};
use super::leapfile::LeapTable;
use super::refid::reference_id;
use super::select::{select, Candidate, Mark, Unusable, MAX_DISTANCE, MIN_DISPERSION};
use super::source::{KissCode, PollAdvice, Reject, Sample, Source, SourceCounters, SourceOptions};
use crate::clock::{ClockControl, ClockError, ClockStatus};
use crate::proto::{LeapIndicator, NtpTimestamp, SystemInfo, HEADER_LEN};

/// Frequency uncertainty a new source starts with: 100 ppm (any oscillator
/// worth using) until the sources have measured it; 1 ppm from a driftfile
/// (a wrong driftfile shows as innovations of 10σ and more, and the
/// estimators then drop it: see `estimate.rs`); never below 0.01 ppm.
const PRIOR_FREQUENCY_SD: f64 = 1e-4;
const DRIFTFILE_FREQUENCY_SD: f64 = 1e-6;
const MIN_FREQUENCY_SD: f64 = 1e-8;
/// A frequency estimate this precise (5 ppm: at most 320 µs over a 64 s poll
/// at 1σ) is applied to the clock; a less precise one when it is more precise
/// than the one applied before, or when it differs from the clock's by more
/// than 3σ. See [`frequency_is_news`].
const FREQUENCY_TRUSTED_SD: f64 = 5e-6;
const FREQUENCY_NEWS_SIGMAS: f64 = 3.0;
/// An innovation this many variances large (3σ) lowers the poll at once.
const SURPRISE_NIS: f64 = 9.0;
/// A Unix time near the present, to place NTP timestamps in the right era.
const ERA_PIVOT_UNIX: i64 = 2_000_000_000;

/// A stable handle for one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u32);

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which samples feed a source's estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFilter {
    /// Every sample, weighted by its delay excess (the default: it wins in
    /// the simulation, see docs/sync.md).
    DelayWeighted,
    /// Only the samples the RFC 5905 clock filter picks, equally weighted.
    Rfc5905,
}

/// Engine tunables.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineConfig {
    /// Local clock read precision, log2 seconds.
    pub precision: i8,
    /// Fewest agreeing sources for a selection; `None`: 3 when 4 or more
    /// sources are configured, else 1.
    pub minsane: Option<usize>,
    /// With no selectable source for this long (s), report unsynchronized.
    pub holdover: f64,
    /// Report unsynchronized while more than this (s) remains to be slewed.
    pub max_sync_offset: f64,
    /// Frequency to start from, ppm (the driftfile's value).
    pub initial_frequency_ppm: Option<f64>,
    pub discipline: DisciplineConfig,
    pub sample_filter: SampleFilter,
    /// The estimators' wander prior and bounds.
    pub wander: WanderConfig,
    /// Poll adaptation keeps the wander-induced error over one poll interval
    /// below this (s): stable oscillators go to maxpoll, wandering ones stay
    /// lower.
    pub poll_target_error: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            precision: -20,
            minsane: None,
            holdover: 3600.0,
            max_sync_offset: 0.010,
            initial_frequency_ppm: None,
            discipline: DisciplineConfig::default(),
            sample_filter: SampleFilter::DelayWeighted,
            wander: WanderConfig::default(),
            poll_target_error: 20e-6,
        }
    }
}

/// A request to send: from a fresh socket (random source port) to `addr`
/// port 123, reading T1 just before sending and keeping it for the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub source: SourceId,
    pub addr: IpAddr,
    pub packet: [u8; HEADER_LEN],
    /// The transmit timestamp in the packet; the reply's origin must equal it.
    pub nonce: NtpTimestamp,
}

/// One source, as tachyonctl and the metrics show it.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceReport {
    pub id: SourceId,
    pub address: IpAddr,
    /// The source's own reference ID (its upstream), from its last reply.
    pub refid: [u8; 4],
    /// 0 until a valid reply.
    pub stratum: u8,
    pub reach: u8,
    /// log2 seconds.
    pub poll: i8,
    /// Seconds since the last valid sample.
    pub last_sample_age: Option<f64>,
    /// Estimated offset now, seconds (positive: the local clock is behind).
    pub offset: Option<f64>,
    /// Standard deviation of that estimate, seconds.
    pub offset_sd: Option<f64>,
    /// Delay of the best sample in the clock filter, seconds.
    pub delay: Option<f64>,
    /// Peer jitter, seconds.
    pub jitter: Option<f64>,
    /// Root distance λ, seconds.
    pub root_distance: Option<f64>,
    /// The frequency correction this source alone asks for, ppm.
    pub frequency_ppm: Option<f64>,
    /// Valid samples received.
    pub samples: usize,
    /// The oscillator wander learnt from this source: the frequency random
    /// walk's spectral density, s⁻¹ (√ of it: frequency change per √s).
    pub wander: Option<f64>,
    pub mark: Mark,
    pub prefer: bool,
    pub noselect: bool,
    /// The last Kiss-o'-Death code received, until a valid reply.
    pub kiss: Option<KissCode>,
    pub counters: SourceCounters,
}

/// The engine's system-level view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineStatus {
    pub synchronized: bool,
    pub system_peer: Option<SourceId>,
    /// The combined offset at the last clock update, seconds.
    pub last_offset: f64,
    /// System jitter (peer and selection), seconds.
    pub jitter: f64,
    /// Frequency correction without the slew, ppm.
    pub frequency_ppm: f64,
    /// Offset still being slewed, seconds.
    pub remaining_slew: f64,
    pub clock_updates: u64,
    /// Monotonic time of the last successful selection.
    pub last_selection: Option<f64>,
}

struct Entry {
    id: SourceId,
    source: Source,
    estimator: Estimator,
    filter: ClockFilter,
    mark: Mark,
    last_sample: Option<Sample>,
}

/// A source's state evaluated at one instant.
#[derive(Clone, Copy, Debug)]
struct View {
    offset: f64,
    sd: f64,
    distance: f64,
    jitter: f64,
    delay: f64,
    dispersion: f64,
    slope: Option<(f64, f64)>,
}

/// The outcome of a selection.
#[derive(Clone, Copy, Debug)]
struct Estimate {
    offset: f64,
    frequency: Option<f64>,
    frequency_var: f64,
    jitter: f64,
    peer: usize,
}

/// The engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    entries: Vec<Entry>,
    next_id: u32,
    discipline: Discipline,
    peer: Option<SourceId>,
    /// System variables from the last clock update.
    system: SystemInfo,
    synchronized: bool,
    last_selection: Option<f64>,
    last_offset: f64,
    jitter: f64,
    /// Standard deviation (dimensionless) of the frequency the clock runs
    /// on: the last estimate applied, the driftfile's, or `None` while it is
    /// the kernel's own, unmeasured one. See [`Engine::frequency_sd`].
    applied_frequency_sd: Option<f64>,
    leap: LeapIndicator,
    leap_table: Option<LeapTable>,
    /// TAI − UTC from the leap table, for the kernel.
    tai_offset: Option<i32>,
    last_status: Option<ClockStatus>,
    /// A sample arrived since the last clock update.
    new_sample: bool,
    /// Something selection depends on changed.
    dirty: bool,
    had_selection: bool,
}

impl Engine {
    /// Creates the engine at monotonic time `now`; sets the clock's frequency
    /// to `config.initial_frequency_ppm` when given.
    pub fn new<C: ClockControl + ?Sized>(
        config: EngineConfig,
        now: f64,
        clock: &mut C,
    ) -> Result<Engine, ClockError> {
        let discipline =
            Discipline::new(config.discipline, config.initial_frequency_ppm, now, clock)?;
        Ok(Engine {
            config,
            entries: Vec::new(),
            next_id: 1,
            discipline,
            peer: None,
            system: SystemInfo::unsynchronized(config.precision),
            synchronized: false,
            last_selection: None,
            last_offset: 0.0,
            jitter: 0.0,
            applied_frequency_sd: config.initial_frequency_ppm.map(|_| DRIFTFILE_FREQUENCY_SD),
            leap: LeapIndicator::NoWarning,
            leap_table: None,
            tai_offset: None,
            last_status: None,
            new_sample: false,
            dirty: false,
            had_selection: false,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Adds a source, due for its first poll at `now`.
    pub fn add_source(&mut self, addr: IpAddr, options: SourceOptions, now: f64) -> SourceId {
        let id = SourceId(self.next_id);
        self.next_id += 1;
        let weighting = match self.config.sample_filter {
            SampleFilter::DelayWeighted => Weighting::Delay,
            SampleFilter::Rfc5905 => Weighting::Equal,
        };
        self.entries.push(Entry {
            id,
            source: Source::new(addr, options, self.config.precision, now),
            estimator: Estimator::new(weighting, self.config.wander),
            filter: ClockFilter::new(),
            mark: Mark::Unusable(Unusable::NoSamples),
            last_sample: None,
        });
        self.dirty = true;
        log::info!("source {id} {addr} added");
        id
    }

    /// Removes a source (a pool member that went away). False if unknown.
    pub fn remove_source(&mut self, id: SourceId) -> bool {
        let Some(at) = self.entries.iter().position(|e| e.id == id) else {
            return false;
        };
        let e = self.entries.remove(at);
        if self.peer == Some(id) {
            self.peer = None;
        }
        self.dirty = true;
        log::info!("source {id} {} removed", e.source.addr());
        true
    }

    /// Loads (or with `None` drops) the leap-seconds table. While it covers
    /// the present it decides the leap indicator, not the sources.
    pub fn set_leap_table(&mut self, table: Option<LeapTable>) {
        self.leap_table = table;
    }

    /// When the engine next needs [`Engine::poll`] and [`Engine::update`]
    /// (monotonic seconds): the next poll, the end of a slew, or the end of
    /// the holdover.
    pub fn next_wakeup(&self) -> f64 {
        let mut t = self
            .entries
            .iter()
            .map(|e| e.source.next_poll_at())
            .fold(f64::INFINITY, f64::min);
        if let Some(end) = self.discipline.wakeup() {
            t = t.min(end);
        }
        if self.synchronized {
            if let Some(last) = self.last_selection {
                t = t.min(last + self.config.holdover);
            }
        }
        t
    }

    /// The requests due at `now`. `nonce` supplies a random transmit
    /// timestamp for each.
    pub fn poll(&mut self, now: f64, mut nonce: impl FnMut() -> NtpTimestamp) -> Vec<Request> {
        let mut out = Vec::new();
        for e in &mut self.entries {
            if e.source.is_due(now) {
                let n = nonce();
                let packet = e.source.make_request(now, n);
                out.push(Request {
                    source: e.id,
                    addr: e.source.addr(),
                    packet,
                    nonce: n,
                });
                self.dirty = true;
            }
        }
        out
    }

    /// Handles a reply from source `id`: `t1` the local send time and `t4` the
    /// local receive time (served time scale), `now` the monotonic time of
    /// reception.
    pub fn on_reply(
        &mut self,
        id: SourceId,
        bytes: &[u8],
        t1: NtpTimestamp,
        t4: NtpTimestamp,
        now: f64,
    ) -> Result<Sample, Reject> {
        let prior = self.discipline.base_frequency();
        let prior_sd = self.frequency_sd();
        let phase = |t: f64| self.discipline.phase_at(t);
        let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
            return Err(Reject::UnknownSource);
        };
        let sample = match e.source.handle_reply(bytes, t1, t4, now) {
            Ok(s) => s,
            Err(r) => {
                if matches!(r, Reject::Kiss(_)) {
                    self.dirty = true;
                }
                return Err(r);
            }
        };
        let point = Point {
            t: sample.mono,
            y: sample.offset + phase(sample.mono),
            delay: sample.delay,
            floor: sample.dispersion,
        };
        let chosen = e.filter.add(FilterSample {
            mono: point.t,
            offset: point.y,
            delay: point.delay,
            dispersion: sample.dispersion,
        });
        let innovation = match self.config.sample_filter {
            SampleFilter::DelayWeighted => e.estimator.add(point, prior, prior_sd),
            SampleFilter::Rfc5905 => chosen.and_then(|best| {
                let detrend = e.estimator.frequency(point.t).map_or(prior, |f| f.0);
                let jitter = e.filter.jitter(point.t, detrend);
                e.estimator.add(
                    Point {
                        t: best.mono,
                        y: best.offset,
                        delay: best.delay,
                        floor: best.dispersion.max(jitter),
                    },
                    prior,
                    prior_sd,
                )
            }),
        };
        if log::log_enabled!(log::Level::Debug) {
            let (frequency, frequency_var) = e.estimator.frequency(point.t).unwrap_or((prior, 0.0));
            log::debug!(
                "source {id} {}: sample offset {:+.1} µs delay {:.1} µs{}; frequency {:+.3} ± {:.3} ppm",
                e.source.addr(),
                sample.offset * 1e6,
                sample.delay * 1e6,
                innovation.map_or(String::new(), |i| format!(
                    ", innovation {:+.1} µs ({:.1}σ)",
                    i.value * 1e6,
                    i.nis().sqrt()
                )),
                frequency * 1e6,
                frequency_var.sqrt() * 1e6
            );
        }
        if let Some(i) = innovation.filter(|i| i.reset) {
            // Rare by design (a wrong driftfile); seen often, it says the
            // samples are noisier than their delays tell.
            log::info!(
                "source {id} {}: frequency belief dropped after two innovations beyond 10σ \
                 (last {:+.0} µs, σ {:.0} µs)",
                e.source.addr(),
                i.value * 1e6,
                i.variance.sqrt() * 1e6
            );
        }
        if !sample.burst {
            let interval = 2f64.powi(e.source.poll() as i32);
            let allowed = e.estimator.allowed_interval(self.config.poll_target_error);
            let advice = match innovation {
                Some(i) if i.nis() > SURPRISE_NIS => PollAdvice::Lower,
                _ if allowed < interval => PollAdvice::Lower,
                _ if allowed >= 2.0 * interval => PollAdvice::Raise,
                _ => PollAdvice::Hold,
            };
            e.source.adapt_poll(advice);
        }
        e.last_sample = Some(sample);
        self.new_sample = true;
        self.dirty = true;
        Ok(sample)
    }

    /// Ends a due slew, selects and combines when anything changed, steers
    /// the clock when a new sample arrived, and re-evaluates the
    /// synchronization state. Returns what was done to the clock, if anything.
    pub fn update<C: ClockControl + ?Sized>(
        &mut self,
        now: f64,
        clock: &mut C,
    ) -> Result<Option<ClockUpdate>, ClockError> {
        self.discipline.tick(now, clock)?;
        let mut done = None;
        // At the holdover bound, select again before giving up: sources that
        // still answer but were not polled within the holdover (one shorter
        // than the poll interval) must not make the clock flap.
        let holdover_due = self.synchronized
            && self
                .last_selection
                .is_some_and(|t| now - t >= self.config.holdover);
        if self.dirty || holdover_due {
            self.dirty = false;
            if let Some(estimate) = self.run_selection(now) {
                self.last_selection = Some(now);
                if self.new_sample {
                    let frequency = estimate.frequency.filter(|&f| {
                        frequency_is_news(
                            f,
                            estimate.frequency_var,
                            self.discipline.base_frequency(),
                            self.applied_frequency_sd,
                        )
                    });
                    if frequency.is_some() {
                        self.applied_frequency_sd = Some(estimate.frequency_var.sqrt());
                    } else if let Some(held) = estimate.frequency {
                        log::debug!(
                            "frequency estimate {:+.3} ± {:.3} ppm too vague to apply; \
                             the clock stays at {:+.3} ppm",
                            held * 1e6,
                            estimate.frequency_var.sqrt() * 1e6,
                            self.discipline.base_frequency() * 1e6
                        );
                    }
                    let update = self
                        .discipline
                        .apply(now, estimate.offset, frequency, clock)?;
                    self.new_sample = false;
                    if let ClockUpdate::Stepped { offset, .. } = update {
                        log::warn!("clock stepped by {offset:+.6} s");
                        for e in &mut self.entries {
                            e.source.abandon_outstanding();
                        }
                    }
                    self.last_offset = estimate.offset;
                    self.set_system(now, &estimate, clock.now());
                    done = Some(update);
                }
            }
        }
        self.evaluate_sync(now);
        let (unix_now, _) = clock.now().to_unix_near(ERA_PIVOT_UNIX);
        self.leap = self.current_leap(unix_now);
        self.tai_offset = self.current_tai_offset(unix_now);
        let status = self.clock_status();
        if self.last_status != Some(status) {
            // Sent at a change of any field (a new jitter at a poll, too), not
            // only at clock updates: the maximum error starts from the root
            // distance replies serve now, aged since the update, and the
            // kernel ages it from there (500 ppm a second, above their 15).
            let sent = ClockStatus {
                max_error: self.system.root_delay / 2.0
                    + self.system.root_dispersion_at(clock.now()),
                ..status
            };
            clock.set_status(&sent)?;
            self.last_status = Some(status);
        }
        Ok(done)
    }

    fn evaluate_sync(&mut self, now: f64) {
        let lost = self
            .last_selection
            .is_none_or(|t| now - t >= self.config.holdover);
        let synchronized = self.discipline.updates() > 0
            && !lost
            && self.discipline.remaining_slew(now).abs() <= self.config.max_sync_offset
            && (1..=15).contains(&self.system.stratum);
        if synchronized != self.synchronized {
            if synchronized {
                log::info!(
                    "synchronized: stratum {}, offset {:+.6} s",
                    self.system.stratum,
                    self.last_offset
                );
            } else if lost && self.discipline.updates() > 0 {
                log::warn!(
                    "unsynchronized: no selectable source for {:.0} s (holdover bound)",
                    self.config.holdover
                );
            } else {
                log::info!("unsynchronized");
            }
        }
        self.synchronized = synchronized;
    }

    /// TAI − UTC now, from a leap table that has not expired (past it, a
    /// leap second the table does not know of may have happened).
    fn current_tai_offset(&self, unix: i64) -> Option<i32> {
        let table = self.leap_table.as_ref()?;
        if table.is_expired(unix) {
            return None;
        }
        table.tai_offset(unix)
    }

    fn current_leap(&self, unix: i64) -> LeapIndicator {
        if let Some(table) = &self.leap_table {
            if let Some(li) = table.leap_indicator(unix) {
                return li;
            }
        }
        // Majority of the sources combined into the system offset.
        let selected: Vec<LeapIndicator> = self
            .entries
            .iter()
            .filter(|e| e.mark.is_selected())
            .map(|e| e.source.leap())
            .collect();
        for li in [LeapIndicator::InsertSecond, LeapIndicator::DeleteSecond] {
            if 2 * selected.iter().filter(|&&l| l == li).count() > selected.len() {
                return li;
            }
        }
        LeapIndicator::NoWarning
    }

    fn clock_status(&self) -> ClockStatus {
        ClockStatus {
            synchronized: self.synchronized,
            leap: if self.synchronized {
                self.leap
            } else {
                LeapIndicator::Unknown
            },
            est_error: self.jitter,
            max_error: self.system.root_delay / 2.0 + self.system.root_dispersion,
            tai_offset: self.tai_offset,
        }
    }

    /// Evaluates a source at `now`.
    fn view(&self, e: &Entry, now: f64) -> Option<View> {
        let (y, sd) = e.estimator.predict(now)?;
        let slope = e.estimator.frequency(now);
        let best = e.filter.best(now)?;
        let dispersion = e.filter.dispersion(now);
        let jitter = e
            .filter
            .jitter(now, slope.map_or(self.discipline.base_frequency(), |s| s.0))
            .max(2f64.powi(self.config.precision as i32));
        let (root_delay, root_dispersion) = (e.source.root_delay(), e.source.root_dispersion());
        let distance = (root_delay + best.delay).max(MIN_DISPERSION) / 2.0
            + root_dispersion
            + dispersion
            + jitter
            + sd;
        Some(View {
            offset: y - self.discipline.phase_at(now),
            sd,
            distance,
            jitter,
            delay: best.delay,
            dispersion,
            slope,
        })
    }

    fn minsane(&self) -> usize {
        self.config
            .minsane
            .unwrap_or(if self.entries.len() >= 4 { 3 } else { 1 })
    }

    /// Marks every source and, when enough agree, returns the combined estimate.
    fn run_selection(&mut self, now: f64) -> Option<Estimate> {
        let views: Vec<Option<View>> = self.entries.iter().map(|e| self.view(e, now)).collect();
        let mut marks: Vec<Mark> = Vec::with_capacity(self.entries.len());
        let mut candidates = Vec::new();
        let mut candidate_entry = Vec::new();
        for (i, (e, view)) in self.entries.iter().zip(&views).enumerate() {
            let s = &e.source;
            let mark = if s.stopped().is_some() {
                Mark::Unusable(Unusable::Denied)
            } else if s.has_been_polled() && !s.is_reachable() && view.is_some() {
                Mark::Unreachable
            } else if let Some(v) = view {
                if s.options().noselect {
                    Mark::Unusable(Unusable::NoSelect)
                } else if v.distance >= MAX_DISTANCE {
                    Mark::Unusable(Unusable::Distance)
                } else {
                    candidates.push(Candidate {
                        offset: v.offset,
                        distance: v.distance,
                        jitter: v.jitter,
                        stratum: s.stratum(),
                        prefer: s.options().prefer,
                    });
                    candidate_entry.push(i);
                    Mark::Candidate
                }
            } else if s.polls() >= 2 && s.reach() == 0 {
                Mark::Unreachable
            } else if s.options().noselect {
                Mark::Unusable(Unusable::NoSelect)
            } else {
                Mark::Unusable(Unusable::NoSamples)
            };
            marks.push(mark);
        }
        let previous = self.peer.and_then(|p| {
            candidate_entry
                .iter()
                .position(|&i| self.entries[i].id == p)
        });
        let selection = select(&candidates, self.minsane(), previous);
        for (k, &i) in candidate_entry.iter().enumerate() {
            marks[i] = selection.marks[k];
        }
        let result = selection.result.map(|c| {
            let peer = candidate_entry[c.peer];
            // Frequencies: inverse-variance weighted over the survivors that
            // have a slope (the prefer peer's alone when it decides), leaving out
            // any whose slope is far from the survivors' median: a source with a
            // steady but wrong frequency is precise, so plain inverse-variance
            // weighting would let it dominate before its offset makes it a
            // falseticker.
            let chosen: Vec<usize> = if c.prefer_used {
                vec![peer]
            } else {
                c.survivors.iter().map(|&k| candidate_entry[k]).collect()
            };
            let slopes: Vec<(usize, f64, f64)> = chosen
                .iter()
                .filter_map(|&i| match views[i].map(|v| v.slope) {
                    Some(Some((b, var))) => Some((i, b, var)),
                    _ => None,
                })
                .collect();
            let kept = robust_slopes(&slopes, peer);
            let (mut sw, mut sf) = (0.0, 0.0);
            for (_, b, var) in kept {
                let w = 1.0 / var.max(1e-24);
                sw += w;
                sf += w * b;
            }
            let peer_jitter = views[peer].map_or(0.0, |v| v.jitter);
            Estimate {
                offset: c.offset,
                frequency: (sw > 0.0).then(|| sf / sw),
                frequency_var: if sw > 0.0 { 1.0 / sw } else { f64::INFINITY },
                jitter: (peer_jitter * peer_jitter + c.jitter * c.jitter).sqrt(),
                peer,
            }
        });
        self.record_marks(&marks, &views, result.map(|r| r.peer));
        if result.is_none() && self.had_selection {
            let truechimers = marks
                .iter()
                .filter(|m| matches!(m, Mark::Candidate))
                .count();
            log::warn!(
                "no selection: {truechimers} agreeing source(s), {} needed",
                self.minsane()
            );
        }
        self.had_selection = result.is_some();
        if let Some(r) = &result {
            self.jitter = r.jitter;
        }
        result
    }

    /// Stores the marks, logging what an operator needs to know.
    fn record_marks(&mut self, marks: &[Mark], views: &[Option<View>], peer: Option<usize>) {
        let new_peer = peer.map(|i| self.entries[i].id);
        if new_peer != self.peer {
            match peer {
                Some(i) => log::info!(
                    "system peer now {} {}",
                    self.entries[i].id,
                    self.entries[i].source.addr()
                ),
                None if self.peer.is_some() => log::warn!("no system peer"),
                None => {}
            }
            self.peer = new_peer;
        }
        for ((e, &mark), view) in self.entries.iter_mut().zip(marks).zip(views) {
            if e.mark == mark {
                continue;
            }
            let addr = e.source.addr();
            let offset = view.map_or(f64::NAN, |v| v.offset);
            match mark {
                Mark::Falseticker => {
                    log::warn!(
                        "source {} {addr} is a falseticker (offset {offset:+.6} s)",
                        e.id
                    )
                }
                Mark::Unreachable => log::warn!("source {} {addr} unreachable", e.id),
                Mark::Unusable(Unusable::Denied) => {
                    log::warn!("source {} {addr} refused us (kiss-o'-death)", e.id)
                }
                _ if e.mark == Mark::Falseticker || e.mark == Mark::Unreachable => {
                    log::info!("source {} {addr} now {mark}", e.id)
                }
                _ => log::debug!("source {} {addr} now {mark}", e.id),
            }
            e.mark = mark;
        }
    }

    fn set_system(&mut self, now: f64, estimate: &Estimate, served_now: NtpTimestamp) {
        let e = &self.entries[estimate.peer];
        let view = self.view(e, now);
        let (delay, dispersion) = view.map_or((0.0, 0.0), |v| (v.delay, v.dispersion));
        self.system = SystemInfo {
            leap: self.leap,
            stratum: e.source.stratum().saturating_add(1).min(16),
            precision: self.config.precision,
            root_delay: e.source.root_delay() + delay,
            root_dispersion: e.source.root_dispersion()
                + dispersion
                + estimate.jitter
                + estimate.offset.abs(),
            reference_id: reference_id(e.source.addr()),
            reference_time: served_now,
        };
        self.peer = Some(e.id);
    }

    /// The system variables to publish (unsynchronized until the first
    /// update, while a large slew is in progress, and after the holdover).
    pub fn system_info(&self) -> SystemInfo {
        if self.synchronized {
            SystemInfo {
                leap: self.leap,
                ..self.system
            }
        } else {
            SystemInfo::unsynchronized(self.config.precision)
        }
    }

    /// Call when the daemon stops: ends a slew in progress, so the clock is
    /// left running at the frequency correction alone (a kernel clock keeps
    /// whatever rate it was last given).
    pub fn finish<C: ClockControl + ?Sized>(
        &mut self,
        now: f64,
        clock: &mut C,
    ) -> Result<bool, ClockError> {
        self.discipline.end_slew(now, clock)
    }

    pub fn is_synchronized(&self) -> bool {
        self.synchronized
    }

    /// The frequency correction to save in the driftfile, ppm (slew excluded).
    pub fn frequency_ppm(&self) -> f64 {
        self.discipline.base_frequency() * 1e6
    }

    /// How uncertain that frequency is, ppm (one standard deviation): the
    /// prior's until the sources have measured it.
    pub fn frequency_sd_ppm(&self) -> f64 {
        self.frequency_sd() * 1e6
    }

    /// The standard deviation of the clock's frequency, within
    /// [0.01, 100] ppm: also the prior of a source's first sample.
    fn frequency_sd(&self) -> f64 {
        self.applied_frequency_sd.map_or(PRIOR_FREQUENCY_SD, |sd| {
            sd.clamp(MIN_FREQUENCY_SD, PRIOR_FREQUENCY_SD)
        })
    }

    pub fn system_peer(&self) -> Option<SourceId> {
        if self.had_selection {
            self.peer
        } else {
            None
        }
    }

    pub fn status(&self, now: f64) -> EngineStatus {
        EngineStatus {
            synchronized: self.synchronized,
            system_peer: self.system_peer(),
            last_offset: self.last_offset,
            jitter: self.jitter,
            frequency_ppm: self.frequency_ppm(),
            remaining_slew: self.discipline.remaining_slew(now),
            clock_updates: self.discipline.updates(),
            last_selection: self.last_selection,
        }
    }

    /// The state of every source at `now`.
    pub fn sources(&self, now: f64) -> Vec<SourceReport> {
        self.entries
            .iter()
            .map(|e| {
                let view = self.view(e, now);
                let s = &e.source;
                SourceReport {
                    id: e.id,
                    address: s.addr(),
                    refid: s.reference_id(),
                    stratum: s.stratum(),
                    reach: s.reach(),
                    poll: s.poll(),
                    last_sample_age: e.last_sample.map(|x| now - x.mono),
                    offset: view.map(|v| v.offset),
                    offset_sd: view.map(|v| v.sd),
                    delay: view.map(|v| v.delay),
                    jitter: view.map(|v| v.jitter),
                    root_distance: view.map(|v| v.distance),
                    frequency_ppm: view.and_then(|v| v.slope).map(|(b, _)| b * 1e6),
                    samples: e.estimator.samples() as usize,
                    wander: (!e.estimator.is_empty()).then(|| e.estimator.wander()),
                    mark: e.mark,
                    prefer: s.options().prefer,
                    noselect: s.options().noselect,
                    kiss: s.last_kiss(),
                    counters: s.counters(),
                }
            })
            .collect()
    }

    /// The mark of one source.
    pub fn mark(&self, id: SourceId) -> Option<Mark> {
        self.entries.iter().find(|e| e.id == id).map(|e| e.mark)
    }
}

#[cfg(test)]
mod tests;

/// Whether a combined frequency estimate replaces the clock's base
/// frequency: when it is precise (σ within [`FREQUENCY_TRUSTED_SD`], what the
/// first burst gives over ordinary paths), or more precise than the estimate
/// the clock runs on (`applied_sd`), or when it shows the base wrong by more
/// than its own noise ([`FREQUENCY_NEWS_SIGMAS`]). So the kernel's own,
/// unmeasured frequency is kept against a vague estimate: after a burst over
/// noisy paths (a 14 s baseline with samples scattered by a few hundred µs
/// gives σ of 10 ppm and more) applying it would add that noise to the clock,
/// 10 ppm being 640 µs over a 64 s poll, when the kernel's frequency may be
/// far closer (the guests of scripts/vm-clock-test need under 1 ppm). The
/// offset is corrected meanwhile and the first polls' longer span makes the
/// estimate precise, as chronyd and ntpd also measure a frequency before
/// they set it; a gross error (a 200 ppm oscillator) is significant at once
/// and applied from the burst.
fn frequency_is_news(estimate: f64, var: f64, base: f64, applied_sd: Option<f64>) -> bool {
    let sd = var.max(0.0).sqrt();
    sd <= FREQUENCY_TRUSTED_SD
        || applied_sd.is_some_and(|applied| sd < applied)
        || (estimate - base).abs() > FREQUENCY_NEWS_SIGMAS * sd
}

/// The slopes (frequency, variance) to combine: those within 3 standard
/// deviations (at least 1 ppm) of the median slope; if none are, the system
/// peer's alone.
fn robust_slopes(slopes: &[(usize, f64, f64)], peer: usize) -> Vec<(usize, f64, f64)> {
    if slopes.len() < 3 {
        return slopes.to_vec();
    }
    let mut sorted: Vec<f64> = slopes.iter().map(|s| s.1).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let kept: Vec<(usize, f64, f64)> = slopes
        .iter()
        .copied()
        .filter(|&(_, b, var)| (b - median).abs() <= (3.0 * var.sqrt()).max(1e-6))
        .collect();
    if kept.is_empty() {
        slopes.iter().copied().filter(|s| s.0 == peer).collect()
    } else {
        kept
    }
}

#[cfg(test)]
mod frequency_update_tests {
    use super::frequency_is_news;

    const PPM: f64 = 1e-6;

    #[test]
    fn a_vague_estimate_near_the_kernel_frequency_is_held() {
        // The first burst over noisy paths: +16.8 ± 6 ppm against the
        // kernel's 0, nothing measured before (seen in a TCG guest whose
        // clock needed 0.3 ppm).
        assert!(!frequency_is_news(
            16.8 * PPM,
            (6.0 * PPM).powi(2),
            0.0,
            None
        ));
    }

    #[test]
    fn a_precise_or_significant_or_better_estimate_is_applied() {
        // Precise: a burst over ordinary paths.
        assert!(frequency_is_news(3.0 * PPM, (2.0 * PPM).powi(2), 0.0, None));
        // Significant: a 200 ppm oscillator, seen from the burst.
        assert!(frequency_is_news(
            200.0 * PPM,
            (10.0 * PPM).powi(2),
            0.0,
            None
        ));
        // More precise than the estimate the clock runs on.
        assert!(frequency_is_news(
            16.8 * PPM,
            (6.0 * PPM).powi(2),
            15.0 * PPM,
            Some(8.0 * PPM)
        ));
        // Less precise than it, and not significant: held.
        assert!(!frequency_is_news(
            16.8 * PPM,
            (9.0 * PPM).powi(2),
            15.0 * PPM,
            Some(8.0 * PPM)
        ));
    }
}

#[cfg(test)]
mod robust_slope_tests {
    use super::robust_slopes;

    #[test]
    fn a_steady_wrong_frequency_is_left_out() {
        // Three sources near 0 ppm, one precise at +1000 ppm.
        let slopes = [
            (0, 0.1e-6, 1e-14),
            (1, -0.2e-6, 1e-14),
            (2, 0.05e-6, 1e-14),
            (3, 1000e-6, 1e-18),
        ];
        let kept = robust_slopes(&slopes, 0);
        assert_eq!(kept.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn two_sources_are_kept_as_they_are() {
        let slopes = [(0, 0.0, 1e-14), (1, 50e-6, 1e-14)];
        assert_eq!(robust_slopes(&slopes, 0).len(), 2);
    }
}
