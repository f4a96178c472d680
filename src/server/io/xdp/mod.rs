//! The AF_XDP backend (`io xdp IFACE`): an XDP program on the interface
//! redirects the served NTP requests to one AF_XDP socket per receive queue,
//! and a worker per queue answers them in place in the socket's memory,
//! through the same `Responder` as the socket backends. Everything else the
//! interface receives goes on to the kernel.
//!
//! - `frame`: parsing request frames and building replies in place (pure).
//! - `rx_time`: the program's receive stamps, CLOCK_TAI to Unix time (pure
//!   but for the clock reads).
//! - `program`: loading and attaching the XDP program (aya), its maps.
//! - `xsk`: the AF_XDP socket, UMEM and rings (the unsafe part).
//! - `worker`: the per-queue loop.
//!
//! Set-up (`BoundXdp::bind`) runs before privileges are dropped: loading
//! and attaching need CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN), the
//! sockets CAP_NET_RAW, their UMEM CAP_IPC_LOCK (or a large enough
//! RLIMIT_MEMLOCK). Serving needs none of them: the sockets' rings are
//! mapped memory, and a wake-up is a `sendto`/`poll` on a descriptor the
//! worker already holds.

pub mod frame;
pub mod program;
pub mod rx_time;
pub mod worker;
pub mod xsk;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::config::{XdpConfig, XDP_DEFAULT_COALESCE_US};
use crate::server::access::SharedAccess;
use crate::server::responder::Responder;
use crate::server::stats::WorkerStats;
use crate::state::StateReader;
use program::{AttachMode, Attached, Served};
use xsk::{Copy, XskSocket};

/// A started worker: its thread and its counters.
pub type Started = (JoinHandle<io::Result<()>>, Arc<WorkerStats>);

/// The program attached and a socket bound per queue, before any worker
/// runs.
pub struct BoundXdp {
    /// Shared by the workers: the program is detached when the last one
    /// ends (and, whatever happens, when the process does).
    attached: Arc<Mutex<Attached>>,
    sockets: Vec<(u32, XskSocket)>,
    served: Arc<Served>,
    coalesce: worker::Coalesce,
    /// The program stamps receive times (else the workers read the clock).
    stamps: bool,
    /// For the log: interface, queues, mode, copy or zero-copy.
    pub description: String,
}

/// The number of receive queues of `interface`, from sysfs.
fn rx_queues(interface: &str) -> io::Result<u32> {
    let dir = format!("/sys/class/net/{interface}/queues");
    let count = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(count.max(1) as u32)
}

fn if_index(interface: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(interface).map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("io xdp: no interface {interface}: {e}"),
        )
    })
}

/// Opens the socket of one queue: zero-copy when asked or, with `None`,
/// when the driver offers it; else copy mode.
fn open_socket(ifindex: u32, queue: u32, zerocopy: Option<bool>) -> io::Result<XskSocket> {
    match zerocopy {
        Some(true) => XskSocket::open(ifindex, queue, Copy::ZeroCopy)
            .map_err(|e| explain(e, queue, "zero-copy (`zerocopy on`)")),
        Some(false) => {
            XskSocket::open(ifindex, queue, Copy::Copy).map_err(|e| explain(e, queue, "copy mode"))
        }
        None => XskSocket::open(ifindex, queue, Copy::ZeroCopy).or_else(|_| {
            XskSocket::open(ifindex, queue, Copy::Copy).map_err(|e| explain(e, queue, "copy mode"))
        }),
    }
}

/// An AF_XDP socket error (its step and hint come from `xsk`), with the
/// queue and mode.
fn explain(e: io::Error, queue: u32, mode: &str) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("io xdp: the AF_XDP socket of queue {queue} ({mode}): {e}"),
    )
}

impl BoundXdp {
    /// Attaches the program to the configured interface, configured to
    /// serve `listen` (one port; wildcard addresses serve their family), and
    /// binds one socket per queue.
    pub fn bind(config: &XdpConfig, listen: &[SocketAddr]) -> io::Result<BoundXdp> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let served = Served::from_listen(listen).map_err(invalid)?;
        let interface = &config.interface;
        let ifindex = if_index(interface)?;
        let available = rx_queues(interface).unwrap_or(1);
        let queues = config.queues.unwrap_or(available);
        if queues > available {
            return Err(invalid(format!(
                "io xdp: {interface} has {available} receive queue(s), {queues} configured \
                 (`ethtool -L {interface} combined {queues}` where the driver allows)"
            )));
        }
        let mode = config.native.map(|native| match native {
            true => AttachMode::Native,
            false => AttachMode::Generic,
        });
        let mut attached = Attached::attach(interface, &served, mode).map_err(io::Error::other)?;
        // Generic XDP never offers zero-copy.
        let zerocopy = match attached.mode {
            AttachMode::Generic if config.zerocopy.is_none() => Some(false),
            _ => config.zerocopy,
        };
        let mut sockets = Vec::new();
        for queue in 0..queues {
            let socket = open_socket(ifindex, queue, zerocopy)?;
            attached
                .register(queue, &socket)
                .map_err(io::Error::other)?;
            sockets.push((queue, socket));
        }
        let copy = match sockets.first().map(|(_, s)| s.copy) {
            Some(Copy::ZeroCopy) => "zero-copy",
            _ => "copy mode",
        };
        let coalesce_us = config.coalesce_us.unwrap_or(XDP_DEFAULT_COALESCE_US);
        let stamps = attached.stamps;
        let description = format!(
            "AF_XDP on {interface}: {queues} queue(s), {} XDP, {copy}, coalescing {coalesce_us} µs, \
             receive stamps {}",
            attached.mode,
            if stamps { "in XDP" } else { "read by the workers" }
        );
        Ok(BoundXdp {
            attached: Arc::new(Mutex::new(attached)),
            sockets,
            served: Arc::new(served),
            coalesce: worker::Coalesce::new(coalesce_us),
            stamps,
            description,
        })
    }

    /// Workers this backend runs: one per queue.
    pub fn workers(&self) -> usize {
        self.sockets.len()
    }

    /// Starts one worker per queue, pinned to core `queue` (modulo `cores`)
    /// when cores are given; worker names continue from `first_index`.
    pub fn spawn(
        self,
        first_index: usize,
        state: &StateReader,
        access: &Arc<SharedAccess>,
        shutdown: BorrowedFd<'_>,
        cores: &[core_affinity::CoreId],
    ) -> io::Result<Vec<Started>> {
        let mut started = Vec::new();
        for (i, (queue, socket)) in self.sockets.into_iter().enumerate() {
            let index = first_index + i;
            let stats = Arc::new(WorkerStats::default());
            let mut responder = Responder::new(state.clone(), access.clone(), stats.clone());
            let core = (!cores.is_empty()).then(|| cores[queue as usize % cores.len()]);
            let wake: OwnedFd = shutdown.try_clone_to_owned()?;
            let served = self.served.clone();
            let attached = self.attached.clone();
            let coalesce = self.coalesce;
            let stamps = self.stamps;
            let handle = std::thread::Builder::new()
                .name(format!("tachyon-x{queue}"))
                .spawn(move || {
                    let _attached = attached;
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            log::warn!("worker {index}: could not pin to core {}", core.id);
                        }
                    }
                    let result = worker::run(
                        socket,
                        &served,
                        &mut responder,
                        wake.as_fd(),
                        coalesce,
                        stamps,
                    );
                    if let Err(e) = &result {
                        log::error!("worker {index} (queue {queue}) stopped: {e}");
                    }
                    result
                })?;
            started.push((handle, stats));
        }
        Ok(started)
    }
}
