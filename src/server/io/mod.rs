//! Packet I/O, apart from the per-packet policy (`server::responder`): the
//! backends (`uring`, `mmsg`), the sockets they serve, the kernel's control
//! messages, and what every backend shares — turning a received datagram
//! into an addressed reply (`datagram`) and sending it (`transmit`,
//! `departure`).

pub mod cmsg;
pub mod datagram;
pub mod departure;
pub mod mmsg;
pub mod sockets;
pub mod transmit;
pub mod txstamp;
pub mod uring;
pub mod xdp;
