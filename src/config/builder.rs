//! The configuration under construction, shared by both dialects: warnings
//! with their file and line, singleton directives, and the merging of
//! repeated servers, rules and listen addresses (by hash, so files with
//! 100k+ lines stay linear).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::model::{
    ClockChoice, Config, ConfigWarning, Dialect, IoChoice, RateLimitParams, XleaveParams,
    DEFAULT_RCVBUF,
};
use super::restrict::{RestrictRule, RestrictTarget};
use super::upstream::{ServerConfig, SourceKind};
use super::words::clip;

/// Where a line is: its file (as shown in messages) and 1-based number.
#[derive(Clone, Copy, Debug)]
pub(super) struct At<'a> {
    pub source: &'a str,
    pub line: usize,
}

/// An earlier line, kept to be named in a later message.
#[derive(Clone, Debug)]
struct Place {
    source: String,
    line: usize,
}

impl Place {
    fn of(at: &At<'_>) -> Place {
        Place {
            source: at.source.to_string(),
            line: at.line,
        }
    }

    /// `line N` when `at` is in the same file, else `FILE:N`.
    fn seen_from(&self, at: &At<'_>) -> String {
        if self.source == at.source {
            format!("line {}", self.line)
        } else {
            format!("{}:{}", self.source, self.line)
        }
    }
}

pub(super) struct Builder {
    pub config: Config,
    /// Singleton directives seen, with where each was last set.
    seen: HashMap<&'static str, Place>,
    /// Where each restrict target is in `config.restrict`, and its line.
    rules: HashMap<RestrictTarget, (usize, Place)>,
    /// Each (kind, lowercase host) of `config.servers`.
    servers: HashMap<(SourceKind, String), Place>,
    listen: HashSet<SocketAddr>,
}

impl Builder {
    /// An empty configuration named after `source`, with every default.
    pub fn new(source: &str) -> Builder {
        Builder {
            config: Config {
                source: source.to_string(),
                dialect: Dialect::Ntp,
                dialect_reason: String::new(),
                servers: Vec::new(),
                driftfile: None,
                leapfile: None,
                restrict: Vec::new(),
                listen: Vec::new(),
                workers: None,
                io: IoChoice::Auto,
                metrics: None,
                clock: ClockChoice::Auto,
                local_stratum: None,
                holdover: None,
                chrony_driftfile: None,
                makestep: None,
                min_sources: None,
                ratelimit: RateLimitParams::default(),
                rcvbuf: DEFAULT_RCVBUF,
                xleave: XleaveParams::default(),
                tx_timestamps: true,
                warnings: Vec::new(),
            },
            seen: HashMap::new(),
            rules: HashMap::new(),
            servers: HashMap::new(),
            listen: HashSet::new(),
        }
    }

    pub fn warn(&mut self, at: &At<'_>, message: String) {
        self.config.warnings.push(ConfigWarning {
            source: at.source.to_string(),
            line: at.line,
            message,
        });
    }

    /// A warning about the configuration as a whole (line 0 of the main file).
    pub fn warn_file(&mut self, message: String) {
        let source = self.config.source.clone();
        self.warn(
            &At {
                source: &source,
                line: 0,
            },
            message,
        );
    }

    /// Records a singleton directive; warns when it was set before.
    pub fn once(&mut self, name: &'static str, at: &At<'_>) {
        if let Some(before) = self.seen.insert(name, Place::of(at)) {
            let message = format!(
                "{name}: already set on {}; the value on this line is used",
                before.seen_from(at)
            );
            self.warn(at, message);
        }
    }

    /// Adds a server or pool unless the same host was given with the same
    /// directive before (compared without ASCII case).
    pub fn add_server(&mut self, server: ServerConfig, at: &At<'_>) {
        let key = (server.kind, server.host.to_ascii_lowercase());
        if let Some(first) = self.servers.get(&key) {
            let message = format!(
                "{} {}: already configured on {}; this line is ignored",
                server.kind.as_str(),
                clip(&server.host),
                first.seen_from(at)
            );
            self.warn(at, message);
            return;
        }
        self.servers.insert(key, Place::of(at));
        self.config.servers.push(server);
    }

    /// Adds an ntp.conf rule, or combines its flags into the earlier rule for
    /// the same target, as ntpd does.
    pub fn add_rule(&mut self, rule: RestrictRule, at: &At<'_>) {
        match self.rules.get(&rule.target) {
            Some((index, first)) => {
                let existing = &mut self.config.restrict[*index];
                existing.flags.insert(rule.flags);
                let message = format!(
                    "restrict {}: same address and mask as {}; the flags are combined \
                     ({}), as ntpd does",
                    rule.target,
                    first.seen_from(at),
                    existing.flags
                );
                self.warn(at, message);
            }
            None => {
                let index = self.config.restrict.len();
                self.rules.insert(rule.target, (index, Place::of(at)));
                self.config.restrict.push(rule);
            }
        }
    }

    /// Adds an address to serve on unless it is listed already.
    pub fn add_listen(&mut self, addr: SocketAddr, at: &At<'_>) {
        if self.listen.insert(addr) {
            self.config.listen.push(addr);
        } else {
            self.warn(
                at,
                format!("listen: {addr} is already listed; this line is ignored"),
            );
        }
    }

    /// The configuration, with the warnings that concern the whole of it.
    pub fn finish(mut self) -> Config {
        if self.config.xleave.enabled && !self.config.tx_timestamps {
            self.warn_file(
                "txtimestamp off: the interleaved mode needs the kernel's transmit timestamps \
                 and is off too"
                    .to_string(),
            );
            self.config.xleave.enabled = false;
        }
        match (self.config.servers.len(), self.config.local_stratum) {
            (0, None) => self.warn_file(
                "no 'server' or 'pool' line: the server will stay unsynchronized \
                 unless 'local stratum N' is set"
                    .to_string(),
            ),
            (n @ 1.., Some(stratum)) => self.warn_file(format!(
                "local stratum {stratum}: the host clock is served at stratum {stratum} \
                 and the {n} server/pool line(s) are not polled while 'local' is set"
            )),
            _ => {}
        }
        if let (IoChoice::Xdp(x), Some(n)) = (&self.config.io, self.config.workers) {
            let message = format!(
                "workers {n}: with `io xdp` there is one worker per receive queue of {} \
                 (`queues N` chooses how many); `workers` is not used",
                x.interface
            );
            self.warn_file(message);
        }
        self.config
    }
}
