//! One worker per queue: takes the frames the XDP program redirected to its
//! socket, lets the responder answer each, builds the reply in place in the
//! same frame, and queues it on the socket's TX ring.
//!
//! Frames go round: free (the worker's) → fill ring → RX ring → either TX
//! ring → completion ring → free, or straight back to free when nothing is
//! sent.

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::frame;
use super::program::Served;
use super::rx_time::{take_stamp, TaiClock};
use super::xsk::{chunk_of, SocketStats, XskSocket, RING_SIZE};
use crate::clock::system_unix_ns;
use crate::server::io::departure::DepartureClock;
use crate::server::io::transmit::REPLY_SPACE;
use crate::server::responder::{Reply, Responder};
use crate::server::stats::Outcome;

/// Frames taken from the RX ring at once.
const BATCH: usize = 64;
/// Busy batches between looks at the shutdown eventfd.
const SHUTDOWN_CHECK_BATCHES: u32 = 256;
/// Where the transmit timestamp is in an NTP reply (RFC 5905).
const TRANSMIT_AT: usize = crate::proto::packet::TRANSMIT_OFFSET;
/// How long an idle worker sleeps before looking at its counters (ms).
const IDLE_WAIT_MS: u16 = 1000;
/// Kicks per flush: 64 × 32 frames, far more than a batch.
const MAX_KICKS: usize = 64;
/// How often the kernel's socket counters are read into the worker's.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// A reply built in its frame, waiting for its transmit timestamp.
#[derive(Clone, Copy)]
struct Pending {
    addr: u64,
    frame_len: u32,
    /// Where the NTP reply is in the chunk, and how long.
    payload_start: usize,
    reply_len: usize,
    reply: Reply,
}

/// The worker's side of the frames and the kernel's counters.
struct Frames {
    free: Vec<u64>,
    completed: Vec<u64>,
    received: Vec<(u64, u32)>,
    pending: Vec<Pending>,
    descriptors: Vec<(u64, u32)>,
    seen: SocketStats,
}

/// Software interrupt coalescing: under load, after a batch that did not
/// fill [`BATCH`], the worker sleeps a little instead of going back to
/// `poll`, so that the frames arriving meanwhile come as one batch, with no
/// wake-up each (a wake-up is an inter-processor interrupt from the core
/// that ran the XDP program, then a context switch). "Under load" is the
/// previous batch having ended less than `busy_gap` before: at low rates
/// no request waits for it.
#[derive(Clone, Copy, Debug)]
pub struct Coalesce {
    wait: Duration,
    busy_gap_ns: i64,
}

impl Coalesce {
    /// Waits of `us` microseconds (0: never), when batches come less than
    /// the longer of 100 µs and twice that apart.
    pub fn new(us: u32) -> Coalesce {
        let wait = Duration::from_micros(us as u64);
        Coalesce {
            wait,
            busy_gap_ns: (wait.as_nanos() as i64 * 2).max(100_000),
        }
    }

    /// Whether to wait after a batch of `n` frames that ended at `end_ns`,
    /// the one before having ended at `previous_end_ns`.
    fn after(&self, n: usize, end_ns: i64, previous_end_ns: i64) -> bool {
        !self.wait.is_zero() && n < BATCH && end_ns - previous_end_ns < self.busy_gap_ns
    }
}

/// Serves `socket` until `shutdown` becomes readable.
pub fn run(
    mut socket: XskSocket,
    served: &Served,
    responder: &mut Responder,
    shutdown: BorrowedFd<'_>,
    coalesce: Coalesce,
    stamps_in_frames: bool,
) -> io::Result<()> {
    let mut frames = Frames {
        free: XskSocket::all_frames().collect(),
        completed: vec![0; RING_SIZE as usize],
        received: vec![(0, 0); BATCH],
        pending: Vec::with_capacity(BATCH),
        descriptors: Vec::with_capacity(BATCH),
        seen: SocketStats::default(),
    };
    let mut tai = TaiClock::new();
    let mut departure = DepartureClock::default();
    let mut busy_batches = 0u32;
    let mut stats_due = Instant::now() + STATS_INTERVAL;
    if !coalesce.wait.is_zero() {
        // Sleeps of a few µs, not the default 50 µs of timer slack.
        let _ = nix::sys::prctl::set_timerslack(1_000);
    }
    let mut last_batch_end = i64::MIN / 2;
    loop {
        recycle(&mut socket, &mut frames);
        let n = socket.receive(&mut frames.received);
        if n == 0 {
            // Replies still on the TX ring go out before any sleep; if the
            // device refuses them, try again soon.
            let drained = socket.tx_pending() == 0 || flush(&mut socket, responder);
            let timeout = if drained { IDLE_WAIT_MS } else { 1 };
            if wait(&socket, shutdown, timeout)? {
                return Ok(());
            }
        } else {
            // Without the program's stamps, the batch's arrival is now.
            let batch_rx_ns = (!stamps_in_frames).then(system_unix_ns);
            serve_batch(
                &mut socket,
                served,
                responder,
                &mut frames,
                n,
                batch_rx_ns,
                &mut tai,
            );
            send(&mut socket, responder, &mut frames, &mut departure);
            let end = system_unix_ns();
            if coalesce.after(n, end, last_batch_end) {
                std::thread::sleep(coalesce.wait);
            }
            last_batch_end = end;
            busy_batches += 1;
            if busy_batches >= SHUTDOWN_CHECK_BATCHES {
                busy_batches = 0;
                if shutdown_requested(shutdown)? {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= stats_due {
            stats_due = Instant::now() + STATS_INTERVAL;
            count_kernel_drops(&socket, responder, &mut frames.seen);
        }
    }
}

/// Frames the kernel finished sending become free; free frames go to the
/// fill ring.
fn recycle(socket: &mut XskSocket, frames: &mut Frames) {
    let n = socket.complete(&mut frames.completed);
    frames
        .free
        .extend(frames.completed[..n].iter().map(|a| chunk_of(*a)));
    if !frames.free.is_empty() {
        socket.fill_from(&mut frames.free);
    }
    // A zero-copy driver that ran out of frames waits to be told there are
    // more (copy mode never asks).
    if socket.fill_needs_wakeup() {
        socket.wake_rx();
    }
}

/// Sleeps until frames arrive or shutdown is asked; returns whether to stop.
fn wait(socket: &XskSocket, shutdown: BorrowedFd<'_>, timeout_ms: u16) -> io::Result<bool> {
    let mut fds = [
        PollFd::new(socket.fd(), PollFlags::POLLIN),
        PollFd::new(shutdown, PollFlags::POLLIN),
    ];
    match poll(&mut fds, PollTimeout::from(timeout_ms)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    // The interface went away or the socket broke: stop rather than spin.
    let broken = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
    if fds[0].revents().is_some_and(|r| r.intersects(broken)) {
        return Err(io::Error::other(
            "the AF_XDP socket reports an error (was the interface removed?)",
        ));
    }
    Ok(fds[1].revents().is_some_and(|r| !r.is_empty()))
}

fn shutdown_requested(shutdown: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [PollFd::new(shutdown, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(fds[0].revents().is_some_and(|r| !r.is_empty()))
}

/// Answers the `n` frames received, stamped `batch_rx_ns` where the program
/// does not stamp them; replies wait in `frames.pending`.
fn serve_batch(
    socket: &mut XskSocket,
    served: &Served,
    responder: &mut Responder,
    frames: &mut Frames,
    n: usize,
    batch_rx_ns: Option<i64>,
    tai: &mut TaiClock,
) {
    responder.begin_batch();
    tai.refresh();
    for i in 0..n {
        let (addr, len) = frames.received[i];
        match serve_frame(socket, served, responder, addr, len, tai, batch_rx_ns) {
            Some(pending) => frames.pending.push(pending),
            None => frames.free.push(chunk_of(addr)),
        }
    }
    responder.end_batch(n);
}

/// Answers one frame in place; `None` when there is nothing to send.
fn serve_frame(
    socket: &mut XskSocket,
    served: &Served,
    responder: &mut Responder,
    addr: u64,
    len: u32,
    tai: &TaiClock,
    batch_rx_ns: Option<i64>,
) -> Option<Pending> {
    let Some((chunk, data)) = socket.frame_mut(addr, len) else {
        responder.stats().recv_errors.bump();
        return None;
    };
    let rx_ns = take_stamp(chunk, data)
        .map(|t| tai.to_unix(t))
        .or(batch_rx_ns);
    let frame = &mut chunk[data..];
    let request = match frame::parse(frame) {
        Ok(r) if served.matches(r.destination, r.destination_port) => r,
        // Not what the program redirects: a frame the filter and this
        // parser disagree on, counted, never answered.
        _ => {
            responder.stats().recv_errors.bump();
            return None;
        }
    };
    let peer = SocketAddr::new(request.source, request.source_port);
    let payload = &frame[request.payload.clone()];
    if !frame::is_unicast(frame, &request) {
        let first = payload.first().copied().unwrap_or(0);
        responder.count_unhandled(peer, first, Outcome::NotUnicast);
        return None;
    }
    let mut out = [0u8; REPLY_SPACE];
    let reply = responder.handle(payload, peer, rx_ns, &mut out)?;
    let reply_len = reply.len.min(request.payload.len());
    frame[request.payload.start..request.payload.start + reply_len]
        .copy_from_slice(&out[..reply_len]);
    let frame_len = frame::write_reply(frame, &request, reply_len);
    Some(Pending {
        addr,
        frame_len: frame_len as u32,
        payload_start: data + request.payload.start,
        reply_len,
        reply,
    })
}

/// Stamps the pending replies with their departure times, as late as
/// possible, queues them and kicks the kernel; the UDP checksum covers the
/// transmit timestamp, so it is written again after it.
fn send(
    socket: &mut XskSocket,
    responder: &Responder,
    frames: &mut Frames,
    departure: &mut DepartureClock,
) {
    if frames.pending.is_empty() {
        return;
    }
    let start = system_unix_ns();
    frames.descriptors.clear();
    for (i, p) in frames.pending.iter().enumerate() {
        if let Some((chunk, data)) = socket.frame_mut(p.addr, p.frame_len) {
            let tx_ns = departure.departure(start, i);
            let reply = &mut chunk[p.payload_start..p.payload_start + p.reply_len];
            let old: [u8; 8] = reply
                .get(TRANSMIT_AT..TRANSMIT_AT + 8)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default();
            responder.stamp_transmit(reply, &p.reply, tx_ns);
            frame::update_udp_checksum(
                &mut chunk[data..],
                p.payload_start - data,
                TRANSMIT_AT,
                &old,
            );
        }
        frames.descriptors.push((p.addr, p.frame_len));
    }
    let queued = socket.transmit(&frames.descriptors);
    for unsent in &frames.descriptors[queued..] {
        // The TX ring is full: the kernel is behind; the reply is lost.
        responder.stats().send_errors.bump();
        frames.free.push(chunk_of(unsent.0));
    }
    flush(socket, responder);
    departure.observe(queued, system_unix_ns().saturating_sub(start));
    frames.pending.clear();
}

/// Kicks the kernel until the TX ring is empty: in copy mode each kick
/// sends at most 32 frames. Bounded, so that a stuck device cannot hold
/// the worker; what is left goes at the next round.
/// Returns whether the ring is empty.
fn flush(socket: &mut XskSocket, responder: &Responder) -> bool {
    for _ in 0..MAX_KICKS {
        if socket.kick().is_err() {
            responder.stats().send_errors.bump();
            return false;
        }
        if socket.tx_pending() == 0 {
            return true;
        }
    }
    false
}

/// Adds what the kernel dropped for this socket since the last look (no
/// free frame, RX ring full) to the worker's socket drops.
fn count_kernel_drops(socket: &XskSocket, responder: &Responder, seen: &mut SocketStats) {
    let Ok(now) = socket.stats() else {
        return;
    };
    let dropped =
        (now.rx_dropped + now.rx_ring_full).saturating_sub(seen.rx_dropped + seen.rx_ring_full);
    responder.stats().socket_drops.add(dropped);
    *seen = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_waits_only_under_load() {
        let c = Coalesce::new(20);
        let t = 1_000_000_000;
        assert!(c.after(3, t, t - 50_000), "batches 50 µs apart: under load");
        assert!(!c.after(3, t, t - 500_000), "500 µs apart: idle enough");
        assert!(!c.after(BATCH, t, t - 1_000), "a full batch: go on at once");
        assert!(
            !Coalesce::new(0).after(1, t, t - 1_000),
            "coalesce 0: never"
        );
        assert_eq!(Coalesce::new(300).busy_gap_ns, 600_000);
    }
}
