//! From a received datagram to an addressed reply: the receive side every
//! backend shares.

use super::cmsg::{parse_control, parse_sockaddr};
use super::sockets::ListenSocket;
use super::transmit::TxSlot;
use super::txstamp::TxTracker;

use crate::server::responder::Responder;
use crate::server::stats::{Outcome, SocketDrops};

/// One datagram as a backend received it: the kernel's socket address and
/// control messages, and the payload.
pub struct Datagram<'a> {
    pub name: &'a [u8],
    pub control: &'a [u8],
    pub payload: &'a [u8],
    /// The kernel cut it to the receive buffer: larger than any request.
    pub truncated: bool,
}

/// A worker's socket and what the worker keeps per socket.
pub struct Receiver<'a> {
    pub socket: &'a ListenSocket,
    /// The socket's index among the worker's.
    pub index: usize,
    pub drops: &'a mut SocketDrops,
    pub tx: &'a mut TxTracker,
}

/// Handles one datagram received on `on`'s socket: reads what the kernel
/// said of it, lets the responder answer, and addresses the reply in `slot`.
/// `slot` is `None` when the worker has no reply slot free (an overload
/// drop, counted as such). Returns whether `slot` now holds a reply to send.
pub fn serve_datagram(
    responder: &mut Responder,
    on: Receiver<'_>,
    datagram: &Datagram<'_>,
    slot: Option<&mut TxSlot>,
) -> bool {
    let (socket, drops) = (on.socket, on.drops);
    let meta = parse_control(datagram.control);
    drops.update(meta.socket_drops, responder.stats());
    let Some(peer) = parse_sockaddr(datagram.name) else {
        responder.stats().recv_errors.bump();
        return false;
    };
    let first_byte = datagram.payload.first().copied().unwrap_or(0);
    let unhandled = if datagram.truncated {
        Some(Outcome::Truncated)
    } else if meta.not_unicast {
        Some(Outcome::NotUnicast)
    } else {
        None
    };
    if let Some(outcome) = unhandled {
        responder.count_unhandled(peer, first_byte, outcome);
        return false;
    }
    let Some(slot) = slot else {
        responder.count_unhandled(peer, first_byte, Outcome::Overload);
        return false;
    };
    let Some(reply) = responder.handle(datagram.payload, peer, meta.timestamp_ns, slot.buffer())
    else {
        return false;
    };
    let source = if socket.wildcard { meta.local } else { None };
    slot.address(reply, &peer, source, on.index, on.tx.next_explicit_id());
    true
}
