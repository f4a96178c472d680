//! The sync thread: the I/O around the sans-IO [`Engine`]. It has the
//! configured names looked up (`names`), sends each poll from a fresh
//! random-port socket and reads replies with their kernel receive timestamps
//! (`exchange`), drives the engine, keeps the driftfile, and is the one
//! publisher of the server state (through the seqlock) and of the source
//! reports. With `local stratum` it serves the host clock instead, and
//! publishes that.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::board::SourceBoard;
use super::discipline::ClockUpdate;
use super::driftfile::Driftfile;
use super::engine::{Engine, EngineConfig, SourceId};
use super::exchange::{open_request_socket, receive, InFlight};
use super::leapfile::LeapTable;
use super::names::{Name, Resolver, RESOLVE_RETRY};
use super::select::{Mark, Unusable};
use crate::clock::{system_unix_ns, ClockControl, ClockError, SoftwareClock};
use crate::config::ServerConfig;
use crate::proto::{LeapIndicator, NtpTimestamp, SystemInfo};
use crate::state::{unix_ns_to_ntp, ClockCorrection, ServerState, StatePublisher};

/// The port upstream servers answer on, unless a test says otherwise.
pub const NTP_PORT: u16 = 123;
/// How often the local reference time is refreshed with `local stratum`, so
/// that the root dispersion served does not grow without bound.
const LOCAL_REFRESH: Duration = Duration::from_secs(16);
/// The longest the thread sleeps, so that a stop is seen promptly.
const MAX_WAIT: f64 = 0.5;

/// The clock the thread disciplines: the software clock (the published
/// correction) or the kernel's.
pub enum SyncClock {
    Software(SoftwareClock),
    System(crate::clock::system::SystemClock),
}

impl SyncClock {
    fn control(&mut self) -> &mut dyn ClockControl {
        match self {
            SyncClock::Software(c) => c,
            SyncClock::System(c) => c,
        }
    }

    /// The correction workers apply: only the software clock has one.
    fn correction(&self) -> ClockCorrection {
        match self {
            SyncClock::Software(c) => c.correction(),
            SyncClock::System(_) => ClockCorrection::default(),
        }
    }

    /// A kernel timestamp (system time, Unix ns) on the served time scale.
    fn served(&self, unix_ns: i64) -> NtpTimestamp {
        unix_ns_to_ntp(self.correction().apply(unix_ns))
    }
}

/// What the thread does.
pub enum SyncMode {
    /// Poll the upstreams and discipline `clock`.
    Upstreams { clock: SyncClock },
    /// `local stratum N`: serve the host clock at stratum N.
    Local { stratum: u8 },
}

pub struct SyncOptions {
    pub servers: Vec<ServerConfig>,
    pub driftfile: Option<Driftfile>,
    pub leapfile: Option<PathBuf>,
    pub engine: EngineConfig,
    /// Upstream port (123; tests may use another).
    pub port: u16,
}

/// The state served with `local stratum`: the host clock trusted at that
/// stratum, its reference time now.
pub fn local_state(stratum: u8, precision: i8) -> ServerState {
    let mut state = ServerState::unsynchronized(precision);
    state.system = SystemInfo {
        leap: LeapIndicator::NoWarning,
        stratum,
        precision,
        root_delay: 0.0,
        root_dispersion: 0.0,
        reference_id: *b"LOCL",
        reference_time: unix_ns_to_ntp(system_unix_ns()),
    };
    state
}

pub struct SyncHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SyncHandle {
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the sync thread.
pub fn spawn(
    options: SyncOptions,
    mode: SyncMode,
    publisher: StatePublisher,
    board: SourceBoard,
) -> std::io::Result<SyncHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tachyon-sync".into())
        .spawn(move || match mode {
            SyncMode::Local { stratum } => {
                serve_local(stratum, options.engine.precision, publisher, &flag)
            }
            SyncMode::Upstreams { clock } => {
                match Upstreams::new(options, clock, publisher, board) {
                    Ok(mut upstreams) => upstreams.run(&flag),
                    Err(e) => log::error!("sync thread stopped: {e}"),
                }
            }
        })?;
    Ok(SyncHandle {
        stop,
        thread: Some(thread),
    })
}

/// `local stratum`: keeps the local reference fresh until stopped.
fn serve_local(stratum: u8, precision: i8, mut publisher: StatePublisher, stop: &AtomicBool) {
    let mut last = Instant::now();
    publisher.publish(&local_state(stratum, precision));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs_f64(MAX_WAIT));
        if last.elapsed() >= LOCAL_REFRESH {
            publisher.publish(&local_state(stratum, precision));
            last = Instant::now();
        }
    }
}

/// The thread's state when polling upstreams.
struct Upstreams {
    options: SyncOptions,
    clock: SyncClock,
    publisher: StatePublisher,
    board: SourceBoard,
    engine: Engine,
    names: Vec<Name>,
    resolver: Resolver,
    in_flight: HashMap<SourceId, InFlight>,
    start: Instant,
    random: RandomState,
    requests: u64,
    last_drift_write: Option<f64>,
    /// Clock steps so far, published for the workers (they forget the
    /// transmit timestamps kept from before a step).
    clock_steps: u64,
}

impl Upstreams {
    fn new(
        options: SyncOptions,
        mut clock: SyncClock,
        publisher: StatePublisher,
        board: SourceBoard,
    ) -> Result<Self, ClockError> {
        let start = Instant::now();
        let mut config = options.engine;
        if let Some(file) = &options.driftfile {
            let path = file.path.display();
            match file.read() {
                Ok(Some(ppm)) => {
                    log::info!("driftfile {path}: starting at {ppm:+.3} ppm");
                    config.initial_frequency_ppm = Some(ppm);
                }
                Ok(None) => log::info!("driftfile {path}: none yet"),
                Err(e) => log::warn!("driftfile {path}: {e}"),
            }
        }
        let mut engine = Engine::new(config, 0.0, clock.control())?;
        if let Some(path) = &options.leapfile {
            match std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| LeapTable::parse(&t).map_err(|e| e.to_string()))
            {
                Ok(table) => {
                    let now = crate::clock::system_unix_ns() / 1_000_000_000;
                    match table.expiry_note(now) {
                        Ok(note) => log::info!(
                            "leapfile {}: {} entries, {note}",
                            path.display(),
                            table.entries().len()
                        ),
                        Err(warning) => log::warn!("leapfile {}: {warning}", path.display()),
                    }
                    engine.set_leap_table(Some(table));
                }
                Err(e) => log::warn!("leapfile {}: {e}", path.display()),
            }
        }
        let names = options.servers.iter().cloned().map(Name::new).collect();
        Ok(Upstreams {
            options,
            clock,
            publisher,
            board,
            engine,
            names,
            resolver: Resolver::default(),
            in_flight: HashMap::new(),
            start,
            random: RandomState::new(),
            requests: 0,
            last_drift_write: None,
            clock_steps: 0,
        })
    }

    /// Seconds since the thread started (the engine's monotonic time).
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let now = self.now();
            self.look_up_names(now);
            self.send_polls(now);
            self.receive_replies();
            self.update();
        }
        // A slew in progress ends with the process: its rate must not stay
        // in the kernel for good.
        let now = self.now();
        match self.engine.finish(now, self.clock.control()) {
            Ok(true) => log::info!(
                "clock: slew in progress ended at exit; the frequency stays at its measured value"
            ),
            Ok(false) => {}
            Err(e) => log::warn!("clock: {e}"),
        }
        // A last driftfile on the way out, so a restart resumes from here.
        if self.engine.is_synchronized() {
            self.write_driftfile(now, true);
        }
    }

    /// Starts the look-ups that are due, and takes in the finished ones.
    fn look_up_names(&mut self, now: f64) {
        for index in 0..self.names.len() {
            self.drop_lost_pool_members(index, now);
            let name = &mut self.names[index];
            if !name.wants_lookup(now) {
                continue;
            }
            name.next_resolve = now + RESOLVE_RETRY;
            // A literal address needs no look-up; a name is looked up off
            // this thread, so a silent resolver delays nothing else.
            match name.config.host.parse::<IpAddr>() {
                Ok(ip) => name.add_sources(vec![ip], &mut self.engine, now),
                Err(_) => match self
                    .resolver
                    .start(index, &name.config.host, self.options.port)
                {
                    Ok(()) => name.resolving = true,
                    Err(e) => log::warn!("{}: cannot start a look-up: {e}", name.config.host),
                },
            }
        }
        for (index, answer) in self.resolver.finished() {
            let now = self.now();
            let Some(name) = self.names.get_mut(index) else {
                continue;
            };
            name.resolving = false;
            let ips = name.addresses(answer);
            name.add_sources(ips, &mut self.engine, now);
        }
    }

    /// A pool member that stopped answering or refused us is dropped when
    /// the pool is due for a look-up, which brings in a fresh one.
    fn drop_lost_pool_members(&mut self, index: usize, now: f64) {
        let name = &mut self.names[index];
        if name.config.kind != crate::config::SourceKind::Pool || now < name.next_resolve {
            return;
        }
        let engine = &mut self.engine;
        let in_flight = &mut self.in_flight;
        name.sources.retain(|(ip, id)| {
            let lost = matches!(
                engine.mark(*id),
                Some(Mark::Unreachable) | Some(Mark::Unusable(Unusable::Denied))
            );
            if lost {
                log::info!("pool {}: dropping {ip}", name.config.host);
                engine.remove_source(*id);
                in_flight.remove(id);
            }
            !lost
        });
    }

    /// Sends the polls that are due, each from a fresh socket.
    fn send_polls(&mut self, now: f64) {
        let random = &self.random;
        let counter = &mut self.requests;
        let nonce = || {
            *counter += 1;
            NtpTimestamp::from_bits(random.hash_one(*counter))
        };
        for request in self.engine.poll(now, nonce) {
            let peer = SocketAddr::new(request.addr, self.options.port);
            let socket = match open_request_socket(peer) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("request to {peer}: {e}");
                    continue;
                }
            };
            let t1 = self.clock.control().now();
            if let Err(e) = socket.send(&request.packet) {
                log::debug!("request to {peer}: {e}");
                continue;
            }
            // A newer request replaces the older one: its socket is closed.
            self.in_flight
                .insert(request.source, InFlight { socket, t1, peer });
        }
    }

    /// Waits for replies (until the engine's next wake-up, at most
    /// [`MAX_WAIT`]) and hands them to the engine with their kernel arrival
    /// times.
    fn receive_replies(&mut self) {
        let wait = (self.engine.next_wakeup() - self.now()).clamp(0.0, MAX_WAIT);
        let ids: Vec<SourceId> = self.in_flight.keys().copied().collect();
        if ids.is_empty() {
            std::thread::sleep(Duration::from_secs_f64(wait));
            return;
        }
        let readable: Vec<bool> = {
            let mut fds: Vec<PollFd> = ids
                .iter()
                .map(|id| PollFd::new(self.in_flight[id].socket.as_fd(), PollFlags::POLLIN))
                .collect();
            let timeout =
                PollTimeout::try_from(Duration::from_secs_f64(wait)).unwrap_or(PollTimeout::ZERO);
            let _ = poll(&mut fds, timeout);
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut buf = [0u8; 1024];
        for (id, ready) in ids.iter().zip(readable) {
            if !ready {
                continue;
            }
            let Some(flight) = self.in_flight.remove(id) else {
                continue;
            };
            // Connected sockets only receive from the polled address.
            let Some((len, stamp)) = receive(&flight.socket, &mut buf) else {
                continue;
            };
            let read_ns = system_unix_ns();
            let rx_ns = stamp.unwrap_or(read_ns);
            let t4 = self.clock.served(rx_ns);
            // The engine's clock at the kernel's arrival stamp, not at this
            // later moment of processing.
            let arrived = self.now() - (read_ns - rx_ns).max(0) as f64 * 1e-9;
            if let Err(reject) = self
                .engine
                .on_reply(*id, &buf[..len], flight.t1, t4, arrived)
            {
                log::debug!("reply from {}: {reject:?}", flight.peer);
            }
        }
    }

    /// Lets the engine steer the clock, then publishes what workers serve
    /// and what tachyonctl and the metrics show.
    fn update(&mut self) {
        let now = self.now();
        match self.engine.update(now, self.clock.control()) {
            Ok(Some(update)) => {
                if let ClockUpdate::Stepped { .. } = update {
                    self.clock_steps += 1;
                }
                log::debug!("clock update: {update:?}")
            }
            Ok(None) => {}
            Err(e) => log::warn!("clock: {e}"),
        }
        self.publisher.publish(&ServerState {
            system: self.engine.system_info(),
            correction: self.clock.correction(),
            clock_steps: self.clock_steps,
        });
        self.board
            .post(self.engine.sources(now), self.engine.status(now));
        if self.engine.is_synchronized() {
            self.write_driftfile(now, false);
        }
    }

    /// Writes the driftfile when it is due (hourly), or now when `force`.
    fn write_driftfile(&mut self, now: f64, force: bool) {
        let Some(file) = &self.options.driftfile else {
            return;
        };
        let sd = self.engine.frequency_sd_ppm();
        let due = if force {
            super::driftfile::is_measured(sd)
        } else {
            super::driftfile::should_write(self.last_drift_write, now, sd)
        };
        if !due {
            return;
        }
        if let Err(e) = file.write(self.engine.frequency_ppm()) {
            log::warn!("driftfile {}: {e}", file.path.display());
        }
        self.last_drift_write = Some(now);
    }
}
