//! The hot path: worker threads, one per core, each with its own sockets and its
//! own I/O backend, answering clients from the published server state.
//!
//! Policy (what to answer: `responder`, `access`, `stats`) is apart from I/O
//! (how datagrams come and go: `io`), so a new backend reuses the first whole.

pub mod access;
pub mod io;
pub mod queries;
pub mod responder;
pub mod stats;
pub mod xleave;

use std::io as stdio;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::state::StateReader;
use access::SharedAccess;
use io::sockets::{self, ListenSocket};
use io::{mmsg, uring};
use responder::Responder;
use stats::WorkerStats;
use xleave::XleaveTable;

/// Which I/O backend the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Mmsg,
    /// AF_XDP workers, one per queue (`io::xdp`), beside one socket worker
    /// (io_uring where available) for what reaches the kernel's sockets.
    Xdp,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Uring => "io_uring",
            Backend::Mmsg => "recvmmsg/sendmmsg",
            Backend::Xdp => "AF_XDP",
        }
    }
}

/// What the workers are started with.
pub struct ServerOptions {
    pub listen: Vec<SocketAddr>,
    pub workers: usize,
    pub backend: Backend,
    pub access: Arc<SharedAccess>,
    /// Pin worker i to core i (modulo the cores available).
    pub pin: bool,
    /// SO_RCVBUF asked for each listening socket.
    pub rcvbuf: usize,
    /// With [`Backend::Xdp`]: the interface and its options.
    pub xdp: Option<crate::config::XdpConfig>,
    /// What mode 6 queries read; none: they are refused.
    pub queries: Option<Arc<dyn queries::ControlQueries>>,
    /// Kernel transmit timestamps on the listening sockets.
    pub tx_timestamps: bool,
    /// The interleaved mode's table size, in pairs; `None`: the mode is off.
    pub xleave: Option<usize>,
}

/// Running workers.
pub struct Server {
    workers: Vec<JoinHandle<stdio::Result<()>>>,
    stats: Vec<Arc<WorkerStats>>,
    shutdown: EventFd,
    local: Vec<SocketAddr>,
    backend: Backend,
    xleave: Option<Arc<XleaveTable>>,
}

/// Sockets bound for every worker, before any worker thread exists (so that
/// privileges can be dropped in between).
pub struct BoundServer {
    options: ServerOptions,
    per_worker: Vec<Vec<ListenSocket>>,
    local: Vec<SocketAddr>,
    xdp: Option<io::xdp::BoundXdp>,
}

impl BoundServer {
    /// Binds every socket; errors name the address.
    pub fn bind(options: ServerOptions) -> stdio::Result<BoundServer> {
        // With AF_XDP, the XDP workers serve the interface; one socket
        // worker serves what reaches the kernel (other interfaces, queues
        // without a socket).
        let xdp = match (&options.xdp, options.backend) {
            (Some(config), Backend::Xdp) => Some(io::xdp::BoundXdp::bind(config, &options.listen)?),
            _ => None,
        };
        let workers = if xdp.is_some() {
            1
        } else {
            options.workers.max(1)
        };
        let mut per_worker: Vec<Vec<ListenSocket>> = (0..workers).map(|_| Vec::new()).collect();
        let mut local = Vec::new();
        for addr in &options.listen {
            let group = sockets::open_group(*addr, workers, options.rcvbuf, options.tx_timestamps)
                .map_err(|e| {
                    stdio::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?;
            if options.tx_timestamps && group[0].tx_ids == sockets::TxStampIds::Off {
                log::warn!(
                    "{addr}: the kernel gives no transmit timestamps: basic replies only, and \
                     no T3 error histogram"
                );
            }
            // The kernel doubles what it grants; less than that means
            // net.core.rmem_max capped it (no CAP_NET_ADMIN at bind time).
            if group[0].rcvbuf < 2 * options.rcvbuf {
                log::warn!(
                    "{addr}: asked for a {} KiB receive buffer, the kernel gave {} KiB \
                     (raise net.core.rmem_max or start tachyond as root)",
                    options.rcvbuf >> 10,
                    group[0].rcvbuf >> 11
                );
            }
            local.push(group[0].local);
            for (w, socket) in group.into_iter().enumerate() {
                per_worker[w].push(socket);
            }
        }
        Ok(BoundServer {
            options,
            per_worker,
            local,
            xdp,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Starts one worker thread per socket set.
    pub fn spawn(self, state: StateReader) -> stdio::Result<Server> {
        let BoundServer {
            options,
            per_worker,
            local,
            xdp,
        } = self;
        let shutdown = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(stdio::Error::from)?;
        let cores = if options.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut handles = Vec::new();
        let mut all_stats = Vec::new();
        let xleave = options
            .xleave
            .map(|entries| Arc::new(XleaveTable::new(entries)));
        for (index, sockets) in per_worker.into_iter().enumerate() {
            let stats = Arc::new(WorkerStats::default());
            all_stats.push(stats.clone());
            let mut responder = Responder::new(state.clone(), options.access.clone(), stats)
                .with_queries(options.queries.clone())
                .with_xleave(xleave.clone());
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let wake: OwnedFd = shutdown.as_fd().try_clone_to_owned()?;
            let backend = socket_backend(options.backend);
            let handle = std::thread::Builder::new()
                .name(format!("tachyon-w{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            log::warn!("worker {index}: could not pin to core {}", core.id);
                        }
                    }
                    let result = match backend {
                        Backend::Uring => uring::run(&sockets, &mut responder, wake.as_fd()),
                        Backend::Mmsg | Backend::Xdp => {
                            mmsg::run(&sockets, &mut responder, wake.as_fd())
                        }
                    };
                    if let Err(e) = &result {
                        log::error!("worker {index} stopped: {e}");
                    }
                    result
                })?;
            handles.push(handle);
        }
        if let Some(xdp) = xdp {
            log::info!("{}", xdp.description);
            let first = handles.len();
            let access = &options.access;
            for (handle, stats) in xdp.spawn(first, &state, access, shutdown.as_fd(), &cores)? {
                handles.push(handle);
                all_stats.push(stats);
            }
        }
        Ok(Server {
            workers: handles,
            stats: all_stats,
            shutdown,
            local,
            backend: options.backend,
            xleave,
        })
    }
}

impl Server {
    /// Binds every socket and starts the workers.
    pub fn start(options: ServerOptions, state: StateReader) -> stdio::Result<Server> {
        BoundServer::bind(options)?.spawn(state)
    }

    /// The addresses actually bound, one per listen address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// The interleaved mode's table, when the mode is on.
    pub fn xleave(&self) -> Option<&Arc<XleaveTable>> {
        self.xleave.as_ref()
    }

    /// True while every worker is running.
    pub fn healthy(&self) -> bool {
        self.workers.iter().all(|w| !w.is_finished())
    }

    /// Stops the workers and waits for them.
    pub fn stop(self) -> stdio::Result<()> {
        self.shutdown.write(1).map_err(stdio::Error::from)?;
        let mut first_error = None;
        for w in self.workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(stdio::Error::other("worker panicked"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The backend of the kernel-socket workers: with AF_XDP, io_uring where
/// it works, else recvmmsg/sendmmsg.
fn socket_backend(backend: Backend) -> Backend {
    match backend {
        Backend::Xdp if uring::probe().is_ok() => Backend::Uring,
        Backend::Xdp => Backend::Mmsg,
        other => other,
    }
}

/// Chooses the backend: the configured one, or io_uring when the probe
/// passes. `auto` never chooses AF_XDP: it takes an interface over.
pub fn choose_backend(choice: &crate::config::IoChoice) -> Result<Backend, String> {
    use crate::config::IoChoice;
    match choice {
        IoChoice::Xdp(_) => Ok(Backend::Xdp),
        IoChoice::Mmsg => Ok(Backend::Mmsg),
        IoChoice::Uring => uring::probe()
            .map(|_| Backend::Uring)
            .map_err(|e| format!("io uring was configured but io_uring is unavailable: {e}")),
        IoChoice::Auto => match uring::probe() {
            Ok(()) => Ok(Backend::Uring),
            Err(e) => {
                log::warn!("io_uring unavailable ({e}); using recvmmsg/sendmmsg");
                Ok(Backend::Mmsg)
            }
        },
    }
}
