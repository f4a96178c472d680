//! SIGHUP: what can change while serving, and what needs a restart.

use std::path::PathBuf;
use std::sync::Arc;

use tachyon::config::{Config, ConfigFormat};
use tachyon::server::access::ratelimit::RateLimiter;
use tachyon::server::access::restrict::RestrictTable;
use tachyon::server::access::{AccessControl, SharedAccess};
use tachyon::sync::SourceOptions;

/// SIGHUP: re-reads the configuration file and applies what can change while
/// serving (restrict rules and rate limits); says what needs a restart.
pub struct Reloader {
    pub path: Option<PathBuf>,
    pub format: ConfigFormat,
    pub running: Config,
    pub access: Arc<SharedAccess>,
}

impl Reloader {
    pub fn reload(&mut self) {
        let Some(path) = &self.path else {
            log::warn!("SIGHUP: running the embedded default configuration; nothing to reload");
            return;
        };
        let new = match Config::load_with(path, self.format) {
            Ok(c) => c,
            Err(e) => {
                log::error!("SIGHUP: {e}; keeping the running configuration");
                return;
            }
        };
        for w in &new.warnings {
            log::warn!("{w}");
        }
        let old = &self.running;
        let limits_changed = new.ratelimit != old.ratelimit;
        let limiter = if limits_changed {
            Arc::new(RateLimiter::new(new.ratelimit))
        } else {
            self.access.current().limiter
        };
        self.access.replace(AccessControl {
            restrict: Arc::new(RestrictTable::new(&new.restrict)),
            limiter,
        });
        log::info!(
            "SIGHUP: reloaded {} restrict rules{}",
            new.restrict.len(),
            if limits_changed {
                " and new rate limits (client history starts afresh)"
            } else {
                ""
            }
        );
        let upstreams = |c: &Config| -> Vec<String> {
            c.servers
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {:?} {}",
                        s.kind.as_str(),
                        s.host,
                        SourceOptions::from(s),
                        s.max_sources
                    )
                })
                .collect()
        };
        let mut restart = Vec::new();
        for (changed, what) in [
            (upstreams(&new) != upstreams(old), "server/pool"),
            (new.listen != old.listen, "listen"),
            (new.workers != old.workers, "workers"),
            (new.io != old.io, "io"),
            (new.rcvbuf != old.rcvbuf, "rcvbuf"),
            (new.xleave != old.xleave, "xleave"),
            (new.tx_timestamps != old.tx_timestamps, "txtimestamp"),
            (new.clock != old.clock, "clock"),
            (new.metrics != old.metrics, "metrics"),
            (
                new.driftfile != old.driftfile || new.chrony_driftfile != old.chrony_driftfile,
                "driftfile",
            ),
            (new.makestep != old.makestep, "makestep"),
            (new.min_sources != old.min_sources, "minsources"),
            (new.holdover != old.holdover, "holdover"),
            (new.leapfile != old.leapfile, "leapfile"),
            (new.local_stratum != old.local_stratum, "local"),
        ] {
            if changed {
                restart.push(what);
            }
        }
        if !restart.is_empty() {
            log::warn!(
                "SIGHUP: changes to {} take effect after a restart",
                restart.join(", ")
            );
        }
        self.running = new;
    }
}
