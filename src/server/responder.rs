//! The per-packet path shared by every I/O backend: access decision, reply rules,
//! timestamps, counters. It knows nothing of sockets, so a kernel-bypass backend
//! can reuse it unchanged.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::system_unix_ns;
use crate::config::RestrictFlags;
use crate::proto::reply::set_transmit;
use crate::proto::{respond, Access, ReplyAction};
use crate::server::ratelimit::{LeakRng, RateLimiter, Verdict};
use crate::server::restrict::RestrictTable;
use crate::server::stats::{Outcome, WorkerStats};
use crate::state::{ServerState, StateReader};

/// What a worker shares with the others: the access rules and the rate limiter.
#[derive(Clone)]
pub struct AccessControl {
    pub restrict: Arc<RestrictTable>,
    pub limiter: Arc<RateLimiter>,
}

impl AccessControl {
    /// No restrictions; the limiter only applies to `limited` rules, so a small
    /// table will do.
    pub fn open() -> Self {
        AccessControl {
            restrict: Arc::new(RestrictTable::new(&[])),
            limiter: Arc::new(RateLimiter::new(crate::config::RateLimitParams {
                table_entries: 1024,
                ..Default::default()
            })),
        }
    }
}

/// The access rules workers pick up: replaced as a whole on a configuration
/// reload. Workers compare the generation once per batch (one load) and take a
/// new copy only when it changed, so the per-packet path never locks.
pub struct SharedAccess {
    generation: AtomicU64,
    current: Mutex<AccessControl>,
}

impl SharedAccess {
    pub fn new(access: AccessControl) -> Arc<SharedAccess> {
        Arc::new(SharedAccess {
            generation: AtomicU64::new(0),
            current: Mutex::new(access),
        })
    }

    /// The rules in force.
    pub fn current(&self) -> AccessControl {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Installs new rules; workers take them at their next batch.
    pub fn replace(&self, access: AccessControl) {
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = access;
        self.generation.fetch_add(1, Ordering::Release);
    }
}

pub struct Responder {
    state: StateReader,
    shared_access: Arc<SharedAccess>,
    access_generation: u64,
    access: AccessControl,
    leak: LeakRng,
    stats: Arc<WorkerStats>,
    snapshot: ServerState,
    batch_started: std::time::Instant,
}

impl Responder {
    pub fn new(
        state: StateReader,
        shared_access: Arc<SharedAccess>,
        stats: Arc<WorkerStats>,
    ) -> Self {
        let snapshot = state.read();
        let access_generation = shared_access.generation.load(Ordering::Acquire);
        let access = shared_access.current();
        let seed = Arc::as_ptr(&stats) as u64 ^ crate::clock::system_unix_ns() as u64;
        Responder {
            state,
            shared_access,
            access_generation,
            access,
            leak: LeakRng::new(seed),
            stats,
            snapshot,
            batch_started: std::time::Instant::now(),
        }
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Takes a fresh copy of the server state; called once per batch.
    #[inline]
    pub fn begin_batch(&mut self) {
        self.batch_started = std::time::Instant::now();
        self.snapshot = self.state.read();
        let generation = self.shared_access.generation.load(Ordering::Acquire);
        if generation != self.access_generation {
            self.access = self.shared_access.current();
            self.access_generation = generation;
        }
        self.stats.batches.bump();
    }

    /// Records the size of the batch begun by [`Responder::begin_batch`] and the
    /// time spent on it.
    #[inline]
    pub fn end_batch(&mut self, datagrams: usize) {
        self.stats.batch_size.record(datagrams as u64);
        self.stats
            .busy_ns
            .add(self.batch_started.elapsed().as_nanos() as u64);
    }

    /// Counts a datagram that never reached [`Responder::handle`] (oversized,
    /// or no reply slot free).
    pub fn count_unhandled(&self, peer: SocketAddr, first_byte: u8, outcome: Outcome) {
        self.stats.count(peer.is_ipv6(), first_byte, outcome);
    }

    /// Handles one datagram. On `Some(reply)`, `out[..reply.len]` is the reply
    /// to send to `peer`; an answer still needs its transmit timestamp, written
    /// by [`Responder::stamp_transmit`] just before the reply is handed to the
    /// kernel (see `server::departure`).
    #[inline]
    pub fn handle(
        &mut self,
        request: &[u8],
        peer: SocketAddr,
        rx_unix_ns: Option<i64>,
        out: &mut [u8],
    ) -> Option<Reply> {
        let stats = &*self.stats;
        stats.bytes_in.add(request.len() as u64);
        let ipv6 = peer.is_ipv6();
        let first_byte = request.first().copied().unwrap_or(0);
        let rx_ns = match rx_unix_ns {
            Some(ns) => ns,
            None => {
                stats.rx_stamp_missing.bump();
                system_unix_ns()
            }
        };
        let access = decide_access(&self.access, &mut self.leak, stats, peer.ip(), rx_ns);
        let received = self.snapshot.correction.served_timestamp(rx_ns);
        match respond(request, received, &self.snapshot.system, access, out) {
            ReplyAction::Reply { len } => {
                stats.count(ipv6, first_byte, Outcome::Answered);
                stats.bytes_out.add(len as u64);
                Some(Reply {
                    len,
                    pending_rx_ns: Some(rx_ns),
                })
            }
            ReplyAction::Kod { len } => {
                stats.count(ipv6, first_byte, Outcome::Kod);
                stats.bytes_out.add(len as u64);
                Some(Reply {
                    len,
                    pending_rx_ns: None,
                })
            }
            ReplyAction::Drop(reason) => {
                stats.count(ipv6, first_byte, Outcome::from_drop(reason));
                None
            }
        }
    }

    /// Writes the transmit timestamp of an answer built by
    /// [`Responder::handle`] from the request received at `rx_ns`: `tx_ns` is
    /// when the reply leaves, on the system clock, served through the same
    /// clock correction as its receive timestamp.
    #[inline]
    pub fn stamp_transmit(&self, reply: &mut [u8], rx_ns: i64, tx_ns: i64) {
        set_transmit(reply, self.snapshot.correction.served_timestamp(tx_ns));
        self.stats
            .response_time
            .record(tx_ns.saturating_sub(rx_ns).max(0) as u64);
    }
}

/// A reply built by [`Responder::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Its length in the output buffer.
    pub len: usize,
    /// For an answer, the request's receive time: its transmit timestamp is
    /// still to be written. `None` for a Kiss-o'-Death, complete as built.
    pub pending_rx_ns: Option<i64>,
}

/// restrict first, then, for `limited` sources, the rate limiter: over the
/// limit, 1 in 2^leak is answered anyway (poll raised), else a RATE KoD where
/// `kod` allows and none was sent this interval, else a silent drop.
#[inline]
fn decide_access(
    control: &AccessControl,
    leak: &mut LeakRng,
    stats: &WorkerStats,
    ip: IpAddr,
    now_ns: i64,
) -> Access {
    let flags = control.restrict.flags(ip);
    if flags.contains(RestrictFlags::IGNORE) || flags.contains(RestrictFlags::NOSERVE) {
        return Access::Deny;
    }
    if !flags.contains(RestrictFlags::LIMITED) {
        return Access::Serve;
    }
    let limiter = &control.limiter;
    let params = limiter.params();
    // Rolled before the limiter so that a leaked answer does not use up the
    // client's KoD allowance.
    let leaked = leak.leak(params.leak);
    let want_kod = !leaked && flags.contains(RestrictFlags::KOD);
    match limiter.check(ip, now_ns, want_kod) {
        Verdict::Allow => Access::Serve,
        Verdict::Limited { .. } if leaked => {
            stats.rate_limit_leaked.bump();
            Access::ServeRaisingPoll(params.interval)
        }
        Verdict::Limited { send_kod: true } => Access::Kod(params.interval),
        Verdict::Limited { send_kod: false } => Access::Limit,
    }
}
