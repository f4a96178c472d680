//! From a received datagram to an addressed reply: the receive side every
//! backend shares.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use super::cmsg::{
    parse_control, parse_sockaddr, write_no_tx_stamp, write_sockaddr, write_source_pktinfo,
    SOCKADDR_SPACE, TS_OPT_ID_SPACE, TX_CONTROL_SPACE,
};
use super::sockets::ListenSocket;
use super::transmit::TxSlot;
use super::txstamp::TxTracker;
use crate::clock::system_unix_ns;
use crate::proto::control::is_control;

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
    if is_control(datagram.payload) {
        let rx_ns = meta.timestamp_ns.unwrap_or_else(system_unix_ns);
        for fragment in responder.handle_query(datagram.payload, peer, rx_ns) {
            let source = if socket.wildcard { meta.local } else { None };
            if send_direct(socket, peer, source, &fragment).is_err() {
                responder.stats().send_errors.bump();
            }
        }
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

/// Sends one datagram at once, outside the batched reply path (mode 6
/// answers: rare, and several datagrams long), from `source` on wildcard
/// sockets as replies are, and without a transmit timestamp (see
/// `cmsg::write_no_tx_stamp`).
fn send_direct(
    socket: &ListenSocket,
    peer: SocketAddr,
    source: Option<(IpAddr, u32)>,
    data: &[u8],
) -> std::io::Result<()> {
    let mut name = [0u8; SOCKADDR_SPACE];
    let name_len = write_sockaddr(&peer, &mut name);
    #[repr(C, align(8))]
    struct Control([u8; TX_CONTROL_SPACE + TS_OPT_ID_SPACE]);
    let mut control = Control([0; TX_CONTROL_SPACE + TS_OPT_ID_SPACE]);
    let mut control_len = match source {
        Some((local, ifindex)) => write_source_pktinfo(local, ifindex, &mut control.0),
        None => 0,
    };
    control_len += write_no_tx_stamp(&mut control.0[control_len..]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero bytes are valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = name.as_mut_ptr().cast();
    hdr.msg_namelen = name_len as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.0.as_mut_ptr().cast();
    hdr.msg_controllen = control_len as _;
    // SAFETY: the header points at `name`, `iov` (over `data`, which the
    // kernel only reads) and `control`, all alive for the call.
    let sent = unsafe { libc::sendmsg(socket.socket.as_raw_fd(), &hdr, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
