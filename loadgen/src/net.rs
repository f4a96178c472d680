//! The kernel interface: client sockets, sendmmsg/recvmmsg batches, timestamp
//! control messages, epoll, signals and resource limits. All of the crate's
//! unsafe code is here, each block small and with its reason.

use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Receive buffer per datagram: answers longer than this are truncated (and
/// flagged), but an honest one is never longer than the 48-byte request.
pub const RECV_BUF: usize = 512;
/// Control buffer per datagram: room for SCM_TIMESTAMPING (3 timespecs) and an
/// IP(V6)_RECVERR with its offender address.
const CONTROL_BUF: usize = 256;

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (the clock the kernel's
/// software timestamps use).
pub fn realtime_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn setsockopt_u32(fd: RawFd, level: i32, name: i32, value: u32) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const u32 as *const libc::c_void,
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens one simulated client: a non-blocking UDP socket bound to `source`
/// (an ephemeral port), connected to `target` (so the kernel drops datagrams
/// from elsewhere and reports ICMP port unreachable as ECONNREFUSED), asking for
/// kernel software RX timestamps and, with `tx_stamps`, TX timestamps too.
pub fn open_client(
    source: Option<IpAddr>,
    target: SocketAddr,
    tx_stamps: bool,
) -> io::Result<Socket> {
    let domain = if target.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    // Bigger buffers absorb bursts; the kernel caps them at rmem_max/wmem_max
    // unless we may force them (CAP_NET_ADMIN).
    if setsockopt_u32(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        4 << 20,
    )
    .is_err()
    {
        let _ = sock.set_recv_buffer_size(4 << 20);
    }
    let _ = sock.set_send_buffer_size(1 << 20);
    if let Some(ip) = source {
        sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    sock.connect(&SockAddr::from(target))?;
    let mut flags = libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE;
    if tx_stamps {
        flags |= libc::SOF_TIMESTAMPING_TX_SOFTWARE
            | libc::SOF_TIMESTAMPING_OPT_ID
            | libc::SOF_TIMESTAMPING_OPT_TSONLY;
    }
    setsockopt_u32(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPING,
        flags,
    )?;
    // Report how many datagrams the kernel dropped on this socket for want of
    // buffer space (answers we were too slow to read).
    let _ = setsockopt_u32(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
    Ok(sock)
}

/// A batch of outgoing datagrams of equal length for one connected socket.
pub struct SendBatch {
    bufs: Vec<u8>,
    len: usize,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub fn new(capacity: usize, len: usize) -> Self {
        let mut bufs = vec![0u8; capacity * len];
        let mut iovs: Vec<libc::iovec> = (0..capacity)
            .map(|i| libc::iovec {
                // The Vec's heap buffer never moves: it is never resized.
                iov_base: bufs[i * len..].as_mut_ptr() as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        let hdrs = (0..capacity)
            .map(|i| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value
                // (null name and control, no flags).
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_iov = &mut iovs[i] as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        SendBatch {
            bufs,
            len,
            iovs,
            hdrs,
        }
    }

    pub fn capacity(&self) -> usize {
        self.iovs.len()
    }

    /// The bytes of datagram `i`.
    pub fn buf(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.len..(i + 1) * self.len]
    }

    /// Sends datagrams `from..to` with one sendmmsg; returns how many went out,
    /// or the errno of the first one when none did.
    pub fn send(&mut self, fd: RawFd, from: usize, to: usize) -> Result<usize, i32> {
        let to = to.min(self.hdrs.len());
        if from >= to {
            return Ok(0);
        }
        // SAFETY: hdrs[from..to] point at iovecs and buffers owned by self,
        // which outlive the call; the count passed matches the slice.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs[from..].as_mut_ptr(),
                (to - from) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n as usize)
        }
    }
}

/// A kernel timestamp with the id of the datagram it belongs to (TX stamps).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stamp {
    /// Software timestamp, ns since the Unix epoch; 0 when absent.
    pub ns: i64,
    /// SOF_TIMESTAMPING_OPT_ID counter of a TX stamp.
    pub id: Option<u32>,
    /// SO_RXQ_OVFL: datagrams dropped on the socket so far.
    pub drops: Option<u32>,
}

/// A batch of incoming datagrams with their sources and control messages.
pub struct RecvBatch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    // Kept alive for the headers, which point into them. u64 keeps each
    // control buffer aligned for cmsghdr.
    _control: Vec<u64>,
    _iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    pub fn new(capacity: usize) -> Self {
        let mut bufs = vec![0u8; capacity * RECV_BUF];
        // SAFETY: sockaddr_storage is plain data; all-zero is valid.
        let mut names: Vec<libc::sockaddr_storage> =
            (0..capacity).map(|_| unsafe { zeroed() }).collect();
        let words = CONTROL_BUF / 8;
        let mut control = vec![0u64; capacity * words];
        let mut iovs: Vec<libc::iovec> = (0..capacity)
            .map(|i| libc::iovec {
                iov_base: bufs[i * RECV_BUF..].as_mut_ptr() as *mut libc::c_void,
                iov_len: RECV_BUF,
            })
            .collect();
        let hdrs = (0..capacity)
            .map(|i| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                h.msg_hdr.msg_iov = &mut iovs[i] as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = control[i * words..].as_mut_ptr() as *mut libc::c_void;
                h
            })
            .collect();
        RecvBatch {
            bufs,
            names,
            _control: control,
            _iovs: iovs,
            hdrs,
        }
    }

    /// Receives up to a batch without blocking (`flags` may add MSG_ERRQUEUE).
    /// Returns the number received; 0 when there is nothing to read.
    pub fn recv(&mut self, fd: RawFd, flags: i32) -> Result<usize, i32> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = CONTROL_BUF as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at name, iovec and control buffers owned
        // by self, with the lengths just reset; a null timeout never blocks
        // with MSG_DONTWAIT.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                flags | libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                Ok(0)
            } else {
                Err(e)
            }
        } else {
            Ok(n as usize)
        }
    }

    /// Payload of datagram `i`, and whether it was truncated.
    pub fn data(&self, i: usize) -> (&[u8], bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(RECV_BUF);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.bufs[i * RECV_BUF..i * RECV_BUF + len], truncated)
    }

    /// Whether datagram `i` came from `target`.
    pub fn source_is(&self, i: usize, target: &SocketAddr) -> bool {
        let len = self.hdrs[i].msg_hdr.msg_namelen as usize;
        sockaddr_matches(&self.names[i], len, target)
    }

    /// The kernel software timestamp of datagram `i`, for an error-queue
    /// message the id of the TX timestamp, and the socket's drop counter.
    pub fn stamp(&self, i: usize) -> Stamp {
        let mut out = Stamp::default();
        // SAFETY: the header's control pointer and length were filled in by the
        // kernel for this datagram, within our control buffer; the CMSG_*
        // macros stay within msg_controllen, and the payloads are read
        // unaligned with their size checked against cmsg_len.
        unsafe {
            let msg = &self.hdrs[i].msg_hdr;
            let mut c = libc::CMSG_FIRSTHDR(msg);
            while !c.is_null() {
                let level = (*c).cmsg_level;
                let kind = (*c).cmsg_type;
                let data = libc::CMSG_DATA(c);
                let avail = (*c).cmsg_len as usize - (data as usize - c as usize);
                if level == libc::SOL_SOCKET
                    && kind == libc::SO_RXQ_OVFL
                    && avail >= size_of::<u32>()
                {
                    out.drops = Some(ptr::read_unaligned(data as *const u32));
                } else if level == libc::SOL_SOCKET
                    && kind == libc::SCM_TIMESTAMPING
                    && avail >= size_of::<libc::timespec>()
                {
                    let ts: libc::timespec = ptr::read_unaligned(data as *const libc::timespec);
                    out.ns = ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64;
                } else if ((level == libc::SOL_IP && kind == libc::IP_RECVERR)
                    || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR))
                    && avail >= size_of::<libc::sock_extended_err>()
                {
                    let ee: libc::sock_extended_err =
                        ptr::read_unaligned(data as *const libc::sock_extended_err);
                    if ee.ee_errno == libc::ENOMSG as u32
                        && ee.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING
                    {
                        out.id = Some(ee.ee_data);
                    }
                }
                c = libc::CMSG_NXTHDR(msg, c);
            }
        }
        out
    }
}

fn sockaddr_matches(ss: &libc::sockaddr_storage, len: usize, target: &SocketAddr) -> bool {
    match target {
        SocketAddr::V4(t) => {
            if ss.ss_family as i32 != libc::AF_INET || len < size_of::<libc::sockaddr_in>() {
                return false;
            }
            // SAFETY: the family is AF_INET and the kernel wrote at least a
            // sockaddr_in; sockaddr_storage is aligned for every sockaddr type.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            u16::from_be(sin.sin_port) == t.port()
                && u32::from_be(sin.sin_addr.s_addr) == u32::from(*t.ip())
        }
        SocketAddr::V6(t) => {
            if ss.ss_family as i32 != libc::AF_INET6 || len < size_of::<libc::sockaddr_in6>() {
                return false;
            }
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            u16::from_be(sin6.sin6_port) == t.port() && sin6.sin6_addr.s6_addr == t.ip().octets()
        }
    }
}

/// An epoll instance over the client sockets of one thread.
pub struct Epoll {
    fd: std::os::fd::OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(max_events: usize) -> io::Result<Self> {
        // SAFETY: plain syscall; the returned descriptor is checked and then owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    /// Watches `fd` for input (errors, including queued TX timestamps, are
    /// always reported); `token` comes back with its events.
    pub fn add(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; ev lives across the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `timeout_ns` (0: just poll) and returns the ready
    /// (token, events) pairs.
    pub fn wait(&mut self, timeout_ns: u64) -> io::Result<&[libc::epoll_event]> {
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: the events buffer is ours with its length passed; ts lives
        // across the call; a null sigmask leaves the mask alone.
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &ts,
                ptr::null(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(&self.events[..0]);
            }
            if e.raw_os_error() == Some(libc::ENOSYS) {
                return self.wait_ms(timeout_ns);
            }
            return Err(e);
        }
        Ok(&self.events[..n as usize])
    }

    /// epoll_wait with millisecond resolution, for kernels before 5.11.
    fn wait_ms(&mut self, timeout_ns: u64) -> io::Result<&[libc::epoll_event]> {
        let ms = timeout_ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
        // SAFETY: as in `wait`.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(&self.events[..0]);
            }
            return Err(e);
        }
        Ok(&self.events[..n as usize])
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// CLOCK_MONOTONIC of the first signal, ns.
static FIRST_SIGNAL_NS: AtomicU64 = AtomicU64::new(0);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill; clock_gettime is
    // async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

extern "C" fn on_signal(_: libc::c_int) {
    let now = monotonic_ns();
    if !INTERRUPTED.swap(true, Ordering::Relaxed) {
        FIRST_SIGNAL_NS.store(now, Ordering::Relaxed);
        return;
    }
    // A second Ctrl-C leaves at once, without the summary; one that comes
    // within half a second of the first is the same Ctrl-C relayed (by
    // `timeout`, for example) and is ignored.
    if now.saturating_sub(FIRST_SIGNAL_NS.load(Ordering::Relaxed)) > 500_000_000 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Makes SIGINT and SIGTERM set a flag (read with `interrupted`) instead of
/// killing the process; a second one exits at once.
pub fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit, both
        // async-signal-safe; sigaction is zero-initialised plain data.
        unsafe {
            let mut sa: libc::sigaction = zeroed();
            sa.sa_sigaction = handler;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Raises the soft limit on open files to at least `needed` if the hard limit
/// allows; returns the soft limit in force afterwards.
pub fn raise_nofile(needed: u64) -> u64 {
    let mut lim = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit fills the struct on success, which is checked before reading it.
    let mut lim = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, lim.as_mut_ptr()) != 0 {
            return 0;
        }
        lim.assume_init()
    };
    if lim.rlim_cur >= needed {
        return lim.rlim_cur;
    }
    let old = lim.rlim_cur;
    lim.rlim_cur = needed.min(lim.rlim_max);
    // SAFETY: lim is a valid rlimit that lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        lim.rlim_cur
    } else {
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Loopback only: a client socket sends a batch to a local UDP socket,
    /// which echoes it; the batch comes back with kernel RX stamps and the
    /// right source.
    #[test]
    fn batch_round_trip_on_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let target = server.local_addr().unwrap();
        let client = open_client(Some("127.0.0.1".parse().unwrap()), target, true).unwrap();
        // The kernel switches receive timestamping on through deferred work when
        // the first socket asks; a datagram arriving before that has no stamp.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut tx = SendBatch::new(4, 48);
        for i in 0..4 {
            tx.buf(i).fill(i as u8);
        }
        let before = realtime_ns();
        assert_eq!(tx.send(client.as_raw_fd(), 0, 4), Ok(4));
        let mut buf = [0u8; 100];
        for _ in 0..4 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        }
        let mut rx = RecvBatch::new(8);
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got < 4 && std::time::Instant::now() < deadline {
            let n = rx.recv(client.as_raw_fd(), 0).unwrap();
            for i in 0..n {
                let (data, trunc) = rx.data(i);
                assert_eq!(data.len(), 48);
                assert!(!trunc);
                assert!(rx.source_is(i, &target));
                assert!(!rx.source_is(i, &"127.0.0.1:1".parse().unwrap()));
                let st = rx.stamp(i);
                assert!(st.ns >= before, "RX stamp {} before send {}", st.ns, before);
                assert!(st.id.is_none());
            }
            got += n;
            if n == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        assert_eq!(got, 4);
        // TX stamps: ids 0..4 on the error queue (if the kernel provides them).
        let n = rx.recv(client.as_raw_fd(), libc::MSG_ERRQUEUE).unwrap();
        let ids: Vec<u32> = (0..n).filter_map(|i| rx.stamp(i).id).collect();
        if n > 0 {
            assert_eq!(ids, (0..n as u32).collect::<Vec<_>>());
            assert!(rx.stamp(0).ns >= before);
        }
    }

    #[test]
    fn epoll_reports_readable_socket() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut ep = Epoll::new(4).unwrap();
        ep.add(b.as_raw_fd(), 7).unwrap();
        assert!(ep.wait(0).unwrap().is_empty());
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        let ev = ep.wait(1_000_000_000).unwrap();
        assert_eq!(ev.len(), 1);
        let token = ev[0].u64;
        assert_eq!(token, 7);
    }
}
