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
        let short = self.sources.is_empty() || self.sources.len() < self.wanted();
        short && now >= self.next_resolve && !self.resolving
    }

    /// Addresses to poll from this name: one for a server, `maxsources`
    /// (4 unless configured) for a pool.
    fn wanted(&self) -> usize {
        if self.is_pool() {
            usize::from(self.config.max_sources.max(1))
        } else {
            1
        }
    }

    /// The addresses to poll from a finished look-up (see `wanted`),
    /// logging failures once.
    pub fn addresses(&mut self, answer: Answer) -> Vec<IpAddr> {
        let wanted = self.wanted();
        let host = self.config.host.as_str();
        let kind = self.config.kind;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn answer(n: u8) -> Answer {
        Ok((1..=n)
            .map(|i| SocketAddr::from(([192, 0, 2, i], 123)))
            .collect())
    }

    #[test]
    fn a_pool_takes_up_to_its_maxsources() {
        let config = Config::parse_as(
            "pool a.example iburst maxsources 2\npool b.example\nserver c.example\n",
            "chrony.conf",
            crate::config::Dialect::Chrony,
        )
        .unwrap();
        let taken: Vec<usize> = config
            .servers
            .iter()
            .map(|s| Name::new(s.clone()).addresses(answer(6)).len())
            .collect();
        assert_eq!(taken, [2, 4, 1]);
        let mut pool = Name::new(config.servers[0].clone());
        assert!(pool.wants_lookup(0.0));
        pool.sources = vec![
            ("192.0.2.1".parse().unwrap(), SourceId(1)),
            ("192.0.2.2".parse().unwrap(), SourceId(2)),
        ];
        assert!(!pool.wants_lookup(0.0), "full at maxsources");
    }
}
