//! The sync thread: the I/O around the sans-IO [`Engine`]. It resolves the
//! configured names, sends each poll from a fresh random-port socket (RFC 9109),
//! reads replies with their kernel receive timestamps, drives the engine, and
//! publishes the server state through the seqlock.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage, TimestampingFlag,
    Timestamps,
};

use super::{
    ClockControl, ClockError, Engine, EngineConfig, Mark, SoftwareClock, SourceId, SourceOptions,
    Unusable,
};
use crate::config::{ServerConfig, SourceKind};
use crate::control::{refid_text, SourceRow};
use crate::proto::NtpTimestamp;
use crate::state::{unix_ns_to_ntp, ClockCorrection, ServerState, StatePublisher};

/// The port upstream servers answer on, unless a test says otherwise.
pub const NTP_PORT: u16 = 123;
/// How often names that did not resolve, and pools, are looked up again.
const RESOLVE_RETRY: f64 = 60.0;
/// Addresses taken from one `pool` name.
const POOL_MEMBERS: usize = 4;

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

pub struct SyncOptions {
    pub servers: Vec<ServerConfig>,
    pub driftfile: Option<PathBuf>,
    pub leapfile: Option<PathBuf>,
    pub engine: EngineConfig,
    /// Upstream port (123; tests may use another).
    pub port: u16,
}

/// One outstanding request.
struct InFlight {
    socket: UdpSocket,
    t1: NtpTimestamp,
    peer: SocketAddr,
}

/// A configured name and what it resolved to.
struct Name {
    config: ServerConfig,
    sources: Vec<(IpAddr, SourceId)>,
    next_resolve: f64,
    /// A failed look-up was logged; later failures are not, until one succeeds.
    failure_logged: bool,
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

fn monotonic(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Starts the sync thread.
pub fn spawn(
    options: SyncOptions,
    clock: SyncClock,
    publisher: StatePublisher,
    rows: Arc<Mutex<Vec<SourceRow>>>,
) -> std::io::Result<SyncHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tachyon-sync".into())
        .spawn(move || {
            if let Err(e) = run(options, clock, publisher, rows, &flag) {
                log::error!("sync thread stopped: {e}");
            }
        })?;
    Ok(SyncHandle {
        stop,
        thread: Some(thread),
    })
}

fn resolve(name: &mut Name, port: u16) -> Vec<IpAddr> {
    let host = name.config.host.as_str();
    let kind = name.config.kind;
    let wanted = if kind == SourceKind::Pool {
        POOL_MEMBERS
    } else {
        1
    };
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let mut out: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !out.contains(&a.ip()) {
                    out.push(a.ip());
                }
                if out.len() == wanted {
                    break;
                }
            }
            if name.failure_logged {
                log::info!("{} {host}: resolved again", kind.as_str());
                name.failure_logged = false;
            }
            out
        }
        Err(e) => {
            if !name.failure_logged {
                log::warn!(
                    "{} {host}: cannot resolve: {e} (retrying every {RESOLVE_RETRY} s)",
                    kind.as_str()
                );
                name.failure_logged = true;
            }
            Vec::new()
        }
    }
}

fn open_request_socket(peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // Port 0: the kernel picks a fresh random port for every request.
    let socket = UdpSocket::bind(local)?;
    socket.connect(peer)?;
    setsockopt(
        &socket,
        sockopt::Timestamping,
        &(TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
            | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE),
    )
    .map_err(std::io::Error::from)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Reads one datagram and its kernel receive timestamp (Unix ns).
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, Option<i64>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(Timestamps);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let mut stamp = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampsns(ts) = c {
                let s = ts.system;
                stamp = Some(s.tv_sec() * 1_000_000_000 + s.tv_nsec());
            }
        }
    }
    Some((msg.bytes, stamp))
}

fn run(
    options: SyncOptions,
    mut clock: SyncClock,
    mut publisher: StatePublisher,
    rows: Arc<Mutex<Vec<SourceRow>>>,
    stop: &AtomicBool,
) -> Result<(), ClockError> {
    let start = Instant::now();
    let random = RandomState::new();
    let mut counter = 0u64;
    let mut nonce = move || {
        counter += 1;
        NtpTimestamp::from_bits(random.hash_one(counter))
    };
    let mut config = options.engine;
    if let Some(path) = &options.driftfile {
        match super::driftfile::read(path) {
            Ok(Some(ppm)) => {
                log::info!("driftfile {}: starting at {ppm:+.3} ppm", path.display());
                config.initial_frequency_ppm = Some(ppm);
            }
            Ok(None) => log::info!("driftfile {}: none yet", path.display()),
            Err(e) => log::warn!("driftfile {}: {e}", path.display()),
        }
    }
    let mut engine = Engine::new(config, monotonic(start), clock.control())?;
    if let Some(path) = &options.leapfile {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| super::LeapTable::parse(&t).map_err(|e| e.to_string()))
        {
            Ok(table) => {
                log::info!(
                    "leapfile {}: {} entries",
                    path.display(),
                    table.entries().len()
                );
                engine.set_leap_table(Some(table));
            }
            Err(e) => log::warn!("leapfile {}: {e}", path.display()),
        }
    }

    let mut names: Vec<Name> = options
        .servers
        .iter()
        .map(|c| Name {
            config: c.clone(),
            sources: Vec::new(),
            next_resolve: 0.0,
            failure_logged: false,
        })
        .collect();
    let mut in_flight: HashMap<SourceId, InFlight> = HashMap::new();
    let mut last_marks: HashMap<SourceId, char> = HashMap::new();
    let mut was_synchronized = false;
    let mut last_drift_write: Option<f64> = None;
    let mut buf = [0u8; 1024];

    while !stop.load(Ordering::Relaxed) {
        let now = monotonic(start);
        for name in &mut names {
            if name.config.kind == SourceKind::Pool && now >= name.next_resolve {
                // A pool member that stopped answering or refused us is dropped,
                // so that the look-up below can bring in a fresh one.
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
            let unresolved = name.sources.is_empty();
            let pool_short =
                name.config.kind == SourceKind::Pool && name.sources.len() < POOL_MEMBERS;
            if (unresolved || pool_short) && now >= name.next_resolve {
                name.next_resolve = now + RESOLVE_RETRY;
                for ip in resolve(name, options.port) {
                    if name.sources.iter().any(|(a, _)| *a == ip) {
                        continue;
                    }
                    let id = engine.add_source(ip, SourceOptions::from(&name.config), now);
                    log::info!(
                        "{} {}: polling {ip}",
                        name.config.kind.as_str(),
                        name.config.host
                    );
                    name.sources.push((ip, id));
                }
            }
        }

        for request in engine.poll(now, &mut nonce) {
            let peer = SocketAddr::new(request.addr, options.port);
            let socket = match open_request_socket(peer) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("request to {peer}: {e}");
                    continue;
                }
            };
            let t1 = clock.control().now();
            if let Err(e) = socket.send(&request.packet) {
                log::debug!("request to {peer}: {e}");
                continue;
            }
            // A newer request replaces the older one: its socket is closed.
            in_flight.insert(request.source, InFlight { socket, t1, peer });
        }

        let wait = (engine.next_wakeup() - monotonic(start)).clamp(0.0, 0.5);
        let ids: Vec<SourceId> = in_flight.keys().copied().collect();
        let readable: Vec<bool> = {
            let mut fds: Vec<PollFd> = ids
                .iter()
                .map(|id| PollFd::new(in_flight[id].socket.as_fd(), PollFlags::POLLIN))
                .collect();
            let timeout =
                PollTimeout::try_from(Duration::from_secs_f64(wait)).unwrap_or(PollTimeout::ZERO);
            if fds.is_empty() {
                std::thread::sleep(Duration::from_secs_f64(wait));
                Vec::new()
            } else {
                let _ = poll(&mut fds, timeout);
                fds.iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            }
        };
        for (id, ready) in ids.iter().zip(readable) {
            if !ready {
                continue;
            }
            let Some(flight) = in_flight.remove(id) else {
                continue;
            };
            // Connected sockets only receive from the polled address.
            let Some((len, stamp)) = receive(&flight.socket, &mut buf) else {
                continue;
            };
            let rx_ns = stamp.unwrap_or_else(crate::clock::system_unix_ns);
            let t4 = clock.served(rx_ns);
            if let Err(reject) = engine.on_reply(*id, &buf[..len], flight.t1, t4, monotonic(start))
            {
                log::debug!("reply from {}: {reject:?}", flight.peer);
            }
        }

        let now = monotonic(start);
        match engine.update(now, clock.control()) {
            Ok(Some(update)) => log::debug!("clock update: {update:?}"),
            Ok(None) => {}
            Err(e) => log::warn!("clock: {e}"),
        }
        publisher.publish(&ServerState {
            system: engine.system_info(),
            correction: clock.correction(),
        });

        // Visibility: the table for tachyonctl, and a log line per change.
        let reports = engine.sources(now);
        let mut table = Vec::with_capacity(reports.len());
        for r in &reports {
            let mark = r.mark.symbol();
            if last_marks.insert(r.id, mark) != Some(mark) {
                log::info!("source {}: {}", r.address, r.mark.as_str());
            }
            table.push(SourceRow {
                mark: mark.to_string(),
                remote: r.address.to_string(),
                refid: refid_text(r.refid, r.stratum),
                stratum: r.stratum,
                when: r.last_sample_age,
                poll: r.poll,
                reach: r.reach,
                delay_ms: r.delay.unwrap_or(0.0) * 1e3,
                offset_ms: r.offset.unwrap_or(0.0) * 1e3,
                jitter_ms: r.jitter.unwrap_or(0.0) * 1e3,
                state: r.mark.as_str().to_string(),
            });
        }
        if let Ok(mut shared) = rows.lock() {
            *shared = table;
        }
        let synchronized = engine.is_synchronized();
        if synchronized != was_synchronized {
            let sys = engine.system_info();
            if synchronized {
                log::info!(
                    "synchronized: stratum {}, reference {}",
                    sys.stratum,
                    refid_text(sys.reference_id, sys.stratum)
                );
            } else {
                log::warn!("synchronization lost: serving as unsynchronized (LI 3, stratum 0)");
            }
            was_synchronized = synchronized;
        }
        if let Some(path) = &options.driftfile {
            let sd = engine.frequency_sd_ppm();
            if synchronized && super::driftfile::should_write(last_drift_write, now, sd) {
                match super::driftfile::write(path, engine.frequency_ppm()) {
                    Ok(()) => last_drift_write = Some(now),
                    Err(e) => {
                        log::warn!("driftfile {}: {e}", path.display());
                        last_drift_write = Some(now);
                    }
                }
            }
        }
    }
    match engine.finish(monotonic(start), clock.control()) {
        Ok(true) => log::info!("stopping: slew in progress ended"),
        Ok(false) => {}
        Err(e) => log::warn!("clock: {e}"),
    }
    if let Some(path) = &options.driftfile {
        if engine.is_synchronized() && super::driftfile::is_measured(engine.frequency_sd_ppm()) {
            if let Err(e) = super::driftfile::write(path, engine.frequency_ppm()) {
                log::warn!("driftfile {}: {e}", path.display());
            }
        }
    }
    Ok(())
}
