//! Access control: which clients are served, and how often. The restrict
//! table (most specific rule wins) and the rate limiter (a token bucket per
//! client in a table shared by every worker) behind one decision per request.

pub mod ratelimit;
pub mod restrict;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::RestrictFlags;
use crate::proto::Access;
use crate::server::stats::WorkerStats;
use ratelimit::{LeakRng, RateLimiter, Verdict};
use restrict::RestrictTable;

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

impl SharedAccess {
    /// The generation of the rules in force: it changes with each
    /// [`SharedAccess::replace`].
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// restrict first, then, for `limited` sources, the rate limiter: over the
/// limit, 1 in 2^leak is answered anyway (poll raised), else a RATE KoD where
/// `kod` allows and none was sent this interval, else a silent drop.
#[inline]
pub fn decide_access(
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
