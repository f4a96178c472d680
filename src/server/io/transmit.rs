//! Sending: one home for every backend. A [`TxSlot`] holds one reply with
//! its destination, its control messages (source address, transmit
//! timestamp id) and the `msghdr` that points at them; a [`SendCall`] writes
//! the transmit timestamps of the replies one send call hands to the kernel,
//! each at its estimated departure (see `departure`), and learns the cost of
//! a send from it. What each reply needs when its kernel transmit stamp
//! comes back (`txstamp`) stays in its slot until the send completes.

use std::net::{IpAddr, SocketAddr};

use super::cmsg::{
    write_sockaddr, write_source_pktinfo, write_ts_opt_id, SOCKADDR_SPACE, TX_CONTROL_SPACE,
};
use super::departure::DepartureClock;
use super::txstamp::Sent;
use crate::clock::system_unix_ns;
use crate::server::responder::{Reply, Responder};

/// Most replies handed to the kernel in one send call: one. Each reply's
/// transmit timestamp is the call's clock read plus the learned lead and the
/// sends ahead of it, and the sends ahead of it vary: on veth a send also
/// delivers the reply before it to its receiver, or not. With whole batches
/// (up to 64) in one call, replies were stamped up to 180 µs off; with 8,
/// 2 or 4, the p99 T3 error was still 9-24 µs; with one, 0.7-2 µs, the
/// clock read just before each send as chronyd reads it, for the same
/// server CPU per answer within the runs' spread at 50k/s and 200k/s on the
/// test VM (kernel transmit stamps, docs/benchmarks.md).
pub const SENDS_PER_CALL: usize = 1;

/// Room for a reply: at most the 48-byte header and a 4-byte crypto-NAK.
pub const REPLY_SPACE: usize = 64;

/// One reply ready to send. The `msghdr` points into the slot itself, so a
/// slot is addressed ([`TxSlot::address`]) where it will stay until the
/// kernel is done with it: in a boxed slice that is never reallocated.
#[repr(C, align(8))]
pub struct TxSlot {
    data: [u8; REPLY_SPACE],
    name: [u8; SOCKADDR_SPACE],
    control: [u8; TX_CONTROL_SPACE],
    iov: libc::iovec,
    hdr: libc::msghdr,
    /// The reply, as the responder built it; its request's receive time
    /// is needed to stamp it.
    reply: Option<Reply>,
    /// The id its kernel transmit stamp will carry, when the reply names it.
    stamp_id: Option<u32>,
    /// What its transmit stamp is matched against, once stamped.
    sent: Option<Sent>,
    /// The worker's index of the socket it goes out on.
    socket: usize,
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct of integers and pointers; all-zero
    // bytes are a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

impl Default for TxSlot {
    fn default() -> Self {
        TxSlot {
            data: [0; REPLY_SPACE],
            name: [0; SOCKADDR_SPACE],
            control: [0; TX_CONTROL_SPACE],
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            hdr: zeroed_msghdr(),
            reply: None,
            stamp_id: None,
            sent: None,
            socket: 0,
        }
    }
}

impl TxSlot {
    /// Where the responder writes the reply.
    pub fn buffer(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Addresses `reply` (already in [`TxSlot::buffer`]) to `peer`, from
    /// `source` (the request's destination and interface, on wildcard
    /// sockets), out of the worker's socket `socket`, its transmit stamp to
    /// carry `stamp_id`; points the `msghdr` at the slot's own buffers.
    pub fn address(
        &mut self,
        reply: Reply,
        peer: &SocketAddr,
        source: Option<(IpAddr, u32)>,
        socket: usize,
        stamp_id: Option<u32>,
    ) {
        let name_len = write_sockaddr(peer, &mut self.name);
        let mut control_len = match source {
            Some((local, ifindex)) => write_source_pktinfo(local, ifindex, &mut self.control),
            None => 0,
        };
        if let Some(id) = stamp_id {
            control_len += write_ts_opt_id(id, &mut self.control[control_len..]);
        }
        self.iov.iov_base = self.data.as_mut_ptr().cast();
        self.iov.iov_len = reply.len.min(REPLY_SPACE);
        self.hdr.msg_name = self.name.as_mut_ptr().cast();
        self.hdr.msg_namelen = name_len as libc::socklen_t;
        self.hdr.msg_iov = &mut self.iov;
        self.hdr.msg_iovlen = 1;
        self.hdr.msg_control = if control_len > 0 {
            self.control.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        self.hdr.msg_controllen = control_len as _;
        self.hdr.msg_flags = 0;
        self.reply = Some(reply);
        self.stamp_id = stamp_id;
        self.sent = None;
        self.socket = socket;
    }

    /// The worker's index of the socket the reply goes out on.
    pub fn socket(&self) -> usize {
        self.socket
    }

    /// Once the reply went out: its stamp id and what its stamp is matched
    /// against.
    pub fn take_sent(&mut self) -> Option<(Option<u32>, Sent)> {
        self.sent.take().map(|sent| (self.stamp_id, sent))
    }

    /// The header to hand to `sendmsg`/`sendmmsg`/io_uring; valid while the
    /// slot neither moves nor is addressed again.
    pub fn msghdr(&self) -> &libc::msghdr {
        &self.hdr
    }

    /// Writes the transmit timestamp, at `tx_ns`, once; keeps what the
    /// reply's kernel stamp will be matched against.
    fn stamp(&mut self, responder: &Responder, tx_ns: i64, call_start_ns: i64, position: usize) {
        if let Some(reply) = self.reply.take() {
            responder.stamp_transmit(&mut self.data[..reply.len], &reply, tx_ns);
            self.sent = Some(Sent {
                rx_ns: reply.rx_ns,
                departure_ns: tx_ns,
                call_start_ns,
                position: position as u32,
                basic: !reply.interleaved,
                keep: reply.keep,
            });
        }
    }
}

/// One send call's replies, stamped in the order the kernel sends them:
/// the `i`-th stamped at the call's start plus `i` sends (see `departure`).
/// Both backends send through it, so the estimate is made and learned in
/// one place.
pub struct SendCall {
    estimate: DepartureClock,
    start_ns: i64,
    stamped: usize,
}

impl SendCall {
    /// Reads the clock: the call's replies are handed to the kernel now.
    pub fn begin(estimate: &DepartureClock) -> SendCall {
        SendCall {
            estimate: *estimate,
            start_ns: system_unix_ns(),
            stamped: 0,
        }
    }

    /// Stamps the next reply of the call.
    pub fn stamp(&mut self, responder: &Responder, slot: &mut TxSlot) {
        let tx_ns = self.estimate.departure(self.start_ns, self.stamped);
        slot.stamp(responder, tx_ns, self.start_ns, self.stamped);
        self.stamped += 1;
    }

    /// After the call handed `sent` replies to the kernel: the time it took
    /// teaches the estimate.
    pub fn end(self, estimate: &mut DepartureClock, sent: usize) {
        estimate.observe(sent, system_unix_ns().saturating_sub(self.start_ns));
    }
}
