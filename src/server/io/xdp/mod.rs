//! The AF_XDP backend: an XDP program on the interface redirects the served
//! NTP requests to one AF_XDP socket per receive queue, and a worker per
//! queue answers them in place in the socket's memory (UMEM).

pub mod frame;
