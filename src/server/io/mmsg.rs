//! The portable backend: poll(2), then recvmmsg(2) and sendmmsg(2) in batches.
//! Used where io_uring is unavailable (old kernels, sandboxes that forbid it) or
//! when `io mmsg` is configured.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::cmsg::{RX_CONTROL_SPACE, SOCKADDR_SPACE};
use super::datagram::Receiver;
use super::datagram::{serve_datagram, Datagram};
use super::departure::DepartureClock;
use super::sockets::ListenSocket;
use super::transmit::{SendCall, TxSlot, SENDS_PER_CALL};
use super::txstamp::{ErrQueueReader, TxTracker};
use crate::server::responder::Responder;
use crate::server::stats::SocketDrops;

/// Datagrams per recvmmsg/sendmmsg call.
const BATCH: usize = 64;
/// Receive buffer per datagram: NTS-sized requests fit; larger ones are truncated
/// by the kernel and dropped as oversized.
const RX_BUFFER: usize = 2048;
/// Batches drained from one socket before looking at the others again.
const MAX_BATCHES_PER_WAKEUP: usize = 16;

#[repr(C, align(8))]
struct Aligned<const N: usize>([u8; N]);

struct Buffers {
    rx_data: Vec<[u8; RX_BUFFER]>,
    rx_name: Vec<Aligned<SOCKADDR_SPACE>>,
    rx_control: Vec<Aligned<RX_CONTROL_SPACE>>,
    rx_iov: Vec<libc::iovec>,
    rx_hdr: Vec<libc::mmsghdr>,
    /// The batch's replies; never reallocated (their headers point into them).
    tx_slots: Box<[TxSlot]>,
    /// Copies of the slots' headers, contiguous as sendmmsg wants them.
    tx_hdr: Vec<libc::mmsghdr>,
    departure: DepartureClock,
    errors: ErrQueueReader,
}

/// What the worker keeps per socket.
struct PerSocket {
    drops: SocketDrops,
    tx: TxTracker,
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers, for which
    // all-zero bytes are a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

impl Buffers {
    fn new() -> Self {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Buffers {
            rx_data: vec![[0; RX_BUFFER]; BATCH],
            rx_name: (0..BATCH).map(|_| Aligned([0; SOCKADDR_SPACE])).collect(),
            rx_control: (0..BATCH).map(|_| Aligned([0; RX_CONTROL_SPACE])).collect(),
            rx_iov: vec![iov; BATCH],
            rx_hdr: (0..BATCH).map(|_| zeroed_mmsghdr()).collect(),
            tx_slots: (0..BATCH).map(|_| TxSlot::default()).collect(),
            tx_hdr: (0..BATCH).map(|_| zeroed_mmsghdr()).collect(),
            departure: DepartureClock::default(),
            errors: ErrQueueReader::default(),
        }
    }

    /// Points every receive header at its buffers (the kernel rewrites the lengths).
    fn arm_receive(&mut self) {
        for i in 0..BATCH {
            self.rx_iov[i].iov_base = self.rx_data[i].as_mut_ptr().cast();
            self.rx_iov[i].iov_len = RX_BUFFER;
            let h = &mut self.rx_hdr[i].msg_hdr;
            h.msg_name = self.rx_name[i].0.as_mut_ptr().cast();
            h.msg_namelen = SOCKADDR_SPACE as libc::socklen_t;
            h.msg_iov = &mut self.rx_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = self.rx_control[i].0.as_mut_ptr().cast();
            h.msg_controllen = RX_CONTROL_SPACE as _;
            h.msg_flags = 0;
            self.rx_hdr[i].msg_len = 0;
        }
    }
}

/// Runs the worker loop until `shutdown` becomes readable.
pub fn run(
    sockets: &[ListenSocket],
    responder: &mut Responder,
    shutdown: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut buffers = Buffers::new();
    let mut per_socket: Vec<PerSocket> = sockets
        .iter()
        .map(|s| PerSocket {
            drops: SocketDrops::default(),
            tx: TxTracker::new(s.tx_ids),
        })
        .collect();
    loop {
        let mut fds: Vec<PollFd> = sockets
            .iter()
            .map(|s| PollFd::new(s.socket.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(shutdown, PollFlags::POLLIN));
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        if ready[sockets.len()] {
            return Ok(());
        }
        for (index, ((socket, _), per)) in sockets
            .iter()
            .zip(&ready)
            .zip(&mut per_socket)
            .enumerate()
            .filter(|(_, ((_, r), _))| **r)
        {
            for _ in 0..MAX_BATCHES_PER_WAKEUP {
                let received = serve_batch(socket, index, per, responder, &mut buffers);
                if received < BATCH {
                    break;
                }
            }
        }
    }
}

/// Receives up to one batch from `socket` (the worker's `index`-th), answers
/// it, reads the replies' transmit stamps, and returns how many datagrams
/// were received.
fn serve_batch(
    socket: &ListenSocket,
    index: usize,
    per: &mut PerSocket,
    responder: &mut Responder,
    b: &mut Buffers,
) -> usize {
    b.arm_receive();
    let fd = socket.socket.as_raw_fd();
    // SAFETY: every header points at buffers owned by `b` that outlive the call,
    // with lengths matching their sizes; BATCH headers are available.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            b.rx_hdr.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n <= 0 {
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted {
                responder.stats().recv_errors.bump();
            }
        }
        return 0;
    }
    let n = n as usize;
    responder.begin_batch();
    let mut replies = 0usize;
    for i in 0..n {
        let hdr = &b.rx_hdr[i].msg_hdr;
        let len = (b.rx_hdr[i].msg_len as usize).min(RX_BUFFER);
        let name_len = (hdr.msg_namelen as usize).min(SOCKADDR_SPACE);
        let control_len = hdr.msg_controllen.min(RX_CONTROL_SPACE);
        let datagram = Datagram {
            name: &b.rx_name[i].0[..name_len],
            control: &b.rx_control[i].0[..control_len],
            payload: &b.rx_data[i][..len],
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
        let slot = &mut b.tx_slots[replies];
        let on = Receiver {
            socket,
            index,
            drops: &mut per.drops,
            tx: &mut per.tx,
        };
        if serve_datagram(responder, on, &datagram, Some(slot)) {
            b.tx_hdr[replies].msg_hdr = *b.tx_slots[replies].msghdr();
            replies += 1;
        }
    }
    responder.end_batch(n);
    send_replies(fd, replies, &mut per.tx, responder, b);
    let Buffers {
        errors, departure, ..
    } = b;
    errors.drain(&socket.socket, &mut per.tx, responder.stats(), |stamped| {
        responder.transmit_stamped(&stamped);
        departure.learn(&stamped);
    });
    n
}

/// Sends the batch's `replies` replies, in as many `sendmmsg` calls as it
/// takes, and records each sent reply for its transmit stamp.
fn send_replies(
    fd: libc::c_int,
    replies: usize,
    tx: &mut TxTracker,
    responder: &Responder,
    b: &mut Buffers,
) {
    let stats = responder.stats();
    let mut sent = 0usize;
    while sent < replies {
        // Transmit timestamps last: each reply at the moment it is estimated
        // to leave, `sent` replies being already out.
        let end = replies.min(sent + SENDS_PER_CALL);
        let mut call = SendCall::begin(&b.departure);
        for slot in &mut b.tx_slots[sent..end] {
            call.stamp(responder, slot);
        }
        // SAFETY: headers [sent, end) were copied from slots that point at
        // their own buffers in `b`, which outlive the call.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                b.tx_hdr[sent..].as_mut_ptr(),
                (end - sent) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r <= 0 {
            let err = io::Error::last_os_error();
            if r < 0 && err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first unsent reply failed (buffer full, unreachable peer...):
            // count it and go on with the rest.
            stats.send_errors.bump();
            let _ = b.tx_slots[sent].take_sent();
            tx.failed();
            sent += 1;
            continue;
        }
        call.end(&mut b.departure, r as usize);
        for slot in &mut b.tx_slots[sent..sent + r as usize] {
            if let Some((id, reply)) = slot.take_sent() {
                tx.sent(id, reply, stats);
            }
        }
        sent += r as usize;
    }
}
