//! From a received datagram to an addressed reply: the receive side every
//! backend shares.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};

use super::cmsg::{parse_control, parse_sockaddr};
use super::sockets::ListenSocket;
use super::transmit::TxSlot;
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

/// Handles one datagram received on `socket`: reads what the kernel said of
/// it, lets the responder answer, and addresses the reply in `slot`.
/// `slot` is `None` when the worker has no reply slot free (an overload
/// drop, counted as such). Returns whether `slot` now holds a reply to send.
pub fn serve_datagram(
    responder: &mut Responder,
    socket: &ListenSocket,
    drops: &mut SocketDrops,
    datagram: &Datagram<'_>,
    slot: Option<&mut TxSlot>,
) -> bool {
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
    slot.address(reply, &peer, source);
    true
}

/// Sends one datagram at once, outside the batched reply path (mode 6
/// answers: rare, and several datagrams long), from `source` on wildcard
/// sockets as replies are.
fn send_direct(
    socket: &ListenSocket,
    peer: SocketAddr,
    source: Option<(IpAddr, u32)>,
    data: &[u8],
) -> nix::Result<usize> {
    let iov = [std::io::IoSlice::new(data)];
    let to = SockaddrStorage::from(peer);
    let v4;
    let v6;
    let control: Vec<ControlMessage<'_>> = match source {
        Some((IpAddr::V4(ip), _)) => {
            v4 = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(ip.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            vec![ControlMessage::Ipv4PacketInfo(&v4)]
        }
        Some((IpAddr::V6(ip), ifindex)) => {
            v6 = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: ifindex,
            };
            vec![ControlMessage::Ipv6PacketInfo(&v6)]
        }
        None => Vec::new(),
    };
    sendmsg(
        socket.socket.as_raw_fd(),
        &iov,
        &control,
        MsgFlags::MSG_DONTWAIT,
        Some(&to),
    )
}
