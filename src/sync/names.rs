//! Upstream names: looked up off the sync thread, each on a short-lived
//! thread of its own, so a resolver that never answers holds one thread per
//! name and never the polling of the others; literal addresses are never
//! looked up. Pools are looked up again when they run short of members.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};

use super::engine::{Engine, SourceId};
use super::source::SourceOptions;
use crate::config::{ServerConfig, SourceKind};

/// How often names that did not resolve, and pools, are looked up again.
pub const RESOLVE_RETRY: f64 = 60.0;
/// Addresses taken from one `pool` name.
pub const POOL_MEMBERS: usize = 4;

type Answer = std::io::Result<Vec<SocketAddr>>;

/// Look-ups in progress and their answers.
pub struct Resolver {
    sender: Sender<(usize, Answer)>,
    answers: Receiver<(usize, Answer)>,
}

impl Default for Resolver {
    fn default() -> Self {
        let (sender, answers) = channel();
        Resolver { sender, answers }
    }
}

impl Resolver {
    /// Starts looking up `host`; the answer comes back tagged with `index`.
    pub fn start(&self, index: usize, host: &str, port: u16) -> std::io::Result<()> {
        let sender = self.sender.clone();
        let host = host.to_string();
        std::thread::Builder::new()
            .name("tachyon-resolve".into())
            .spawn(move || {
                let answer = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|addrs| addrs.collect());
                // The sync thread may be gone (stopping): nobody to tell.
                let _ = sender.send((index, answer));
            })
            .map(|_| ())
    }

    /// Look-ups finished since the last call.
    pub fn finished(&self) -> Vec<(usize, Answer)> {
        self.answers.try_iter().collect()
    }
}

/// A configured `server` or `pool` line and what it resolved to.
pub struct Name {
    pub config: ServerConfig,
    pub sources: Vec<(IpAddr, SourceId)>,
    pub next_resolve: f64,
    /// A failed look-up was logged; later failures are not, until one succeeds.
    failure_logged: bool,
    /// A look-up is under way.
    pub resolving: bool,
}

impl Name {
    pub fn new(config: ServerConfig) -> Self {
        Name {
            config,
            sources: Vec::new(),
            next_resolve: 0.0,
            failure_logged: false,
            resolving: false,
        }
    }

    fn is_pool(&self) -> bool {
        self.config.kind == SourceKind::Pool
    }

    /// Whether a look-up is due at `now`: never resolved, or a pool short of
    /// members, and the retry interval passed.
    pub fn wants_lookup(&self, now: f64) -> bool {
        let short = self.sources.is_empty() || self.is_pool() && self.sources.len() < POOL_MEMBERS;
        short && now >= self.next_resolve && !self.resolving
    }

    /// The addresses to poll from a finished look-up (one for a server, up
    /// to [`POOL_MEMBERS`] for a pool), logging failures once.
    pub fn addresses(&mut self, answer: Answer) -> Vec<IpAddr> {
        let host = self.config.host.as_str();
        let kind = self.config.kind;
        let wanted = if self.is_pool() { POOL_MEMBERS } else { 1 };
        match answer {
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
                if self.failure_logged {
                    log::info!("{} {host}: resolved again", kind.as_str());
                    self.failure_logged = false;
                }
                out
            }
            Err(e) => {
                if !self.failure_logged {
                    log::warn!(
                        "{} {host}: cannot resolve: {e} (retrying every {RESOLVE_RETRY} s)",
                        kind.as_str()
                    );
                    self.failure_logged = true;
                }
                Vec::new()
            }
        }
    }

    /// Starts polling the addresses it does not poll yet.
    pub fn add_sources(&mut self, ips: Vec<IpAddr>, engine: &mut Engine, now: f64) {
        for ip in ips {
            if self.sources.iter().any(|(a, _)| *a == ip) {
                continue;
            }
            let id = engine.add_source(ip, SourceOptions::from(&self.config), now);
            log::info!(
                "{} {}: polling {ip}",
                self.config.kind.as_str(),
                self.config.host
            );
            self.sources.push((ip, id));
        }
    }
}
