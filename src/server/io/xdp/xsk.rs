//! An AF_XDP socket over the kernel ABI (`linux/if_xdp.h`): its UMEM (the
//! frames the kernel and the worker share), and the four single-producer
//! single-consumer rings: fill (frames handed to the kernel to receive
//! into), RX (frames received), TX (frames to send) and completion (frames
//! the kernel is done sending).
//!
//! This is the one unsafe module of the XDP backend, and kept small: the
//! mmaps, the setsockopts, and the ring accesses. The rings follow the
//! kernel's protocol: a producer writes descriptors, then publishes its
//! index with release; a consumer reads the producer index with acquire,
//! the descriptors, then publishes its own index with release. Crates that
//! do this were looked at: xsk-rs and afxdp build on libbpf/libxdp (C);
//! xdpilone is pure Rust but EUPL-1.2, which does not fit MIT/Apache-2.0
//! distribution.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes per UMEM frame. The kernel keeps 256 of them as headroom (XDP's),
/// so a received frame may be up to 1,792 bytes: far above an NTP request.
pub const FRAME_SIZE: u32 = 2048;
/// Frames per socket: 8 MiB of UMEM.
pub const FRAMES: u32 = 4096;
/// Entries in each ring; the fill ring and the frames in flight together
/// never need more than [`FRAMES`].
pub const RING_SIZE: u32 = 2048;

/// The start of the UMEM chunk that holds `addr`.
pub fn chunk_of(addr: u64) -> u64 {
    addr & !(FRAME_SIZE as u64 - 1)
}

/// Whether to ask for zero-copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copy {
    /// The driver maps the UMEM: no copy (drivers with AF_XDP support).
    ZeroCopy,
    /// The kernel copies each frame (any driver).
    Copy,
}

/// A mapping the kernel made or that is given to it, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access
// to it is through the socket that owns it, from one thread at a time.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(len: usize, fd: Option<(BorrowedFd<'_>, u64)>) -> io::Result<Mapping> {
        let (flags, raw, offset) = match fd {
            Some((fd, offset)) => (
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            ),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            ),
        };
        // SAFETY: a fresh mapping at an address the kernel chooses; no
        // existing memory is affected. The result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One of the four rings: `T` is a frame address (`u64`, fill and
/// completion) or a descriptor (`xdp_desc`, RX and TX).
struct Ring<T> {
    // Held for its Drop: the pointers below point into it.
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    /// This side's copy of its own index, and of the other side's.
    cached_producer: u32,
    cached_consumer: u32,
}

// SAFETY: the pointers point into the ring's own mapping, which moves with
// it; a ring is used by the one thread that owns its socket.
unsafe impl<T> Send for Ring<T> {}

impl<T: std::marker::Copy> Ring<T> {
    fn map(fd: BorrowedFd<'_>, offsets: &libc::xdp_ring_offset, page: u64) -> io::Result<Self> {
        let len = offsets.desc as usize + RING_SIZE as usize * std::mem::size_of::<T>();
        let map = Mapping::new(len, Some((fd, page)))?;
        // SAFETY: the kernel's offsets lie within the mapping it sized for
        // RING_SIZE entries; the indices are u32 aligned to 4 and the
        // descriptors are aligned for T (the kernel lays them out so).
        let ring = unsafe {
            Ring {
                producer: map.ptr.add(offsets.producer as usize).cast(),
                consumer: map.ptr.add(offsets.consumer as usize).cast(),
                flags: map.ptr.add(offsets.flags as usize).cast(),
                descs: map.ptr.add(offsets.desc as usize).cast(),
                _map: map,
                cached_producer: 0,
                cached_consumer: 0,
            }
        };
        let mut ring = ring;
        ring.cached_producer = ring.producer().load(Ordering::Relaxed);
        ring.cached_consumer = ring.consumer().load(Ordering::Relaxed);
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`); the kernel
        // accesses it atomically too.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { &*self.flags };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: the index is masked to the ring's RING_SIZE entries.
        unsafe { self.descs.add((index & (RING_SIZE - 1)) as usize) }
    }

    // Producer side (fill, TX).

    /// Entries free for this producer (up to `want`).
    fn free(&mut self, want: u32) -> u32 {
        let mut free = RING_SIZE - self.cached_producer.wrapping_sub(self.cached_consumer);
        if free < want {
            self.cached_consumer = self.consumer().load(Ordering::Acquire);
            free = RING_SIZE - self.cached_producer.wrapping_sub(self.cached_consumer);
        }
        free.min(want)
    }

    /// Writes entry `i` past the producer index (`i` < what `free` gave).
    fn write(&mut self, i: u32, value: T) {
        // SAFETY: the slot belongs to this producer until `submit`; the
        // consumer reads it only after the release store there.
        unsafe { self.slot(self.cached_producer.wrapping_add(i)).write(value) };
    }

    fn submit(&mut self, n: u32) {
        self.cached_producer = self.cached_producer.wrapping_add(n);
        self.producer()
            .store(self.cached_producer, Ordering::Release);
    }

    // Consumer side (RX, completion).

    /// Entries ready for this consumer (up to `want`).
    fn ready(&mut self, want: u32) -> u32 {
        let mut ready = self.cached_producer.wrapping_sub(self.cached_consumer);
        if ready < want {
            self.cached_producer = self.producer().load(Ordering::Acquire);
            ready = self.cached_producer.wrapping_sub(self.cached_consumer);
        }
        ready.min(want)
    }

    fn read(&self, i: u32) -> T {
        // SAFETY: the entry was published by the producer (acquire in
        // `ready`) and is ours until `release`.
        unsafe { self.slot(self.cached_consumer.wrapping_add(i)).read() }
    }

    fn release(&mut self, n: u32) {
        self.cached_consumer = self.cached_consumer.wrapping_add(n);
        self.consumer()
            .store(self.cached_consumer, Ordering::Release);
    }
}

/// An error of one set-up step, with what usually causes it.
fn step(what: &str, e: io::Error) -> io::Error {
    let hint = match (what, e.raw_os_error()) {
        ("creating the socket", Some(libc::EPERM | libc::EACCES)) => " (needs CAP_NET_RAW)",
        ("creating the socket", Some(libc::EAFNOSUPPORT)) => {
            " (this kernel has no AF_XDP: CONFIG_XDP_SOCKETS)"
        }
        ("registering its memory (UMEM)", Some(libc::EPERM | libc::ENOBUFS | libc::ENOMEM)) => {
            " (locked memory, 8 MiB a queue: needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK, \
             e.g. LimitMEMLOCK=infinity)"
        }
        ("binding it to the queue", Some(libc::EOPNOTSUPP)) => {
            " (the driver does not support this mode; `zerocopy off` uses copy mode)"
        }
        ("binding it to the queue", Some(libc::EBUSY)) => {
            " (the queue already has an AF_XDP socket: another program uses it)"
        }
        ("binding it to the queue", Some(libc::EINVAL)) => {
            " (no such queue, or zero-copy is not offered: see `ethtool -l`)"
        }
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what}: {e}{hint}"))
}

/// Counters the kernel keeps per socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Frames dropped: no fill-ring frame, too large for a frame.
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full (the worker is behind).
    pub rx_ring_full: u64,
    pub rx_invalid: u64,
    pub tx_invalid: u64,
}

/// An AF_XDP socket bound to one queue of an interface, with its UMEM and
/// rings.
pub struct XskSocket {
    // Declared first: dropped (closed) before the mappings go.
    fd: OwnedFd,
    fill: Ring<u64>,
    completion: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    umem: Mapping,
    /// How the socket was bound.
    pub copy: Copy,
}

fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points at a live T of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a socket option of type T, which must be a plain C struct for
/// which zero bytes are valid.
fn getsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, zero: T) -> io::Result<(T, usize)> {
    let mut value = zero;
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: value is a live T of `len` bytes; the kernel writes at most len.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((value, len as usize))
}

impl XskSocket {
    /// Creates the socket and its UMEM, maps the rings, and binds it to
    /// queue `queue` of the interface `ifindex`.
    pub fn open(ifindex: u32, queue: u32, copy: Copy) -> io::Result<XskSocket> {
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(step("creating the socket", io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mapping::new((FRAMES * FRAME_SIZE) as usize, None)
            .map_err(|e| step("allocating its memory", e))?;
        let registration = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(fd.as_fd(), libc::XDP_UMEM_REG, &registration)
            .map_err(|e| step("registering its memory (UMEM)", e))?;
        for ring in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(fd.as_fd(), ring, &RING_SIZE).map_err(|e| step("sizing its rings", e))?;
        }
        // SAFETY: xdp_mmap_offsets is plain integers; zero is valid.
        let zero: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let (offsets, len) = getsockopt(fd.as_fd(), libc::XDP_MMAP_OFFSETS, zero)?;
        if len != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(io::Error::other(
                "the kernel's AF_XDP ring layout predates Linux 5.4 (no ring flags)",
            ));
        }
        let fill = Ring::map(fd.as_fd(), &offsets.fr, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let completion = Ring::map(
            fd.as_fd(),
            &offsets.cr,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let rx = Ring::map(fd.as_fd(), &offsets.rx, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = Ring::map(fd.as_fd(), &offsets.tx, libc::XDP_PGOFF_TX_RING as u64)?;
        let mode = match copy {
            Copy::ZeroCopy => libc::XDP_ZEROCOPY,
            Copy::Copy => libc::XDP_COPY,
        };
        // SAFETY: sockaddr_xdp is plain integers; zero is valid.
        let mut address: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        address.sxdp_family = libc::AF_XDP as u16;
        address.sxdp_flags = mode | libc::XDP_USE_NEED_WAKEUP;
        address.sxdp_ifindex = ifindex;
        address.sxdp_queue_id = queue;
        // SAFETY: address is a live sockaddr_xdp of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(step("binding it to the queue", io::Error::last_os_error()));
        }
        Ok(XskSocket {
            fd,
            fill,
            completion,
            rx,
            tx,
            umem,
            copy,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Hands frames from the end of `free` (frame starts) to the kernel to
    /// receive into, as many as the fill ring has room for, and removes
    /// them from `free`; returns how many went.
    pub fn fill_from(&mut self, free: &mut Vec<u64>) -> usize {
        let n = self.fill.free(free.len().min(u32::MAX as usize) as u32) as usize;
        let start = free.len() - n;
        for (i, address) in free[start..].iter().enumerate() {
            self.fill.write(i as u32, *address);
        }
        self.fill.submit(n as u32);
        free.truncate(start);
        n
    }

    /// Whether the kernel waits for a syscall to use the fill ring again
    /// (it ran out of frames while the worker was busy).
    pub fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Tells the driver the fill ring has frames again. Errors are the
    /// same transient ones as [`XskSocket::kick`]'s, and ignored: the next
    /// `poll` wakes it as well.
    pub fn wake_rx(&self) {
        // SAFETY: a zero-length, non-blocking recvfrom with no buffer or
        // address: the kernel only looks at the rings.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Takes up to `out.len()` frames whose sending is complete; returns
    /// how many.
    pub fn complete(&mut self, out: &mut [u64]) -> usize {
        let n = self.completion.ready(out.len() as u32);
        for (i, slot) in out[..n as usize].iter_mut().enumerate() {
            *slot = self.completion.read(i as u32);
        }
        self.completion.release(n);
        n as usize
    }

    /// Takes up to `out.len()` received frames (address of the data in the
    /// UMEM, and length); returns how many.
    pub fn receive(&mut self, out: &mut [(u64, u32)]) -> usize {
        let n = self.rx.ready(out.len() as u32);
        for (i, slot) in out[..n as usize].iter_mut().enumerate() {
            let desc = self.rx.read(i as u32);
            *slot = (desc.addr, desc.len);
        }
        self.rx.release(n);
        n as usize
    }

    /// Queues frames (address, length) for sending; returns how many were
    /// queued (the TX ring may be full). Call [`XskSocket::kick`] after.
    pub fn transmit(&mut self, frames: &[(u64, u32)]) -> usize {
        let n = self.tx.free(frames.len() as u32);
        for (i, (addr, len)) in frames[..n as usize].iter().enumerate() {
            self.tx.write(
                i as u32,
                libc::xdp_desc {
                    addr: *addr,
                    len: *len,
                    options: 0,
                },
            );
        }
        self.tx.submit(n);
        n as usize
    }

    /// Frames queued on the TX ring that the kernel has not taken yet.
    pub fn tx_pending(&mut self) -> u32 {
        let consumer = self.tx.consumer().load(Ordering::Acquire);
        self.tx.cached_producer.wrapping_sub(consumer)
    }

    /// Tells the kernel there is something to send. In copy mode the frames
    /// go out during this call, at most 32 of them (the kernel's batch,
    /// `TX_BATCH_SIZE`): see [`XskSocket::tx_pending`] for what is left.
    /// Transient refusals (the device queue is busy, more to send) are
    /// left for the next kick.
    pub fn kick(&self) -> io::Result<()> {
        if !self.tx.needs_wakeup() {
            return Ok(());
        }
        // SAFETY: a zero-length sendto with no buffer or address: the
        // kernel only looks at the TX ring.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
                _ => Err(e),
            };
        }
        Ok(())
    }

    /// The UMEM chunk of the frame whose data starts at `addr` and runs
    /// `len` bytes, cut at the data's end, and where the data starts in it
    /// (the XDP metadata, if any, is right in front). `None` for a
    /// descriptor outside the UMEM or across a chunk boundary.
    pub fn frame_mut(&mut self, addr: u64, len: u32) -> Option<(&mut [u8], usize)> {
        let end = addr.checked_add(len as u64)?;
        let chunk = chunk_of(addr);
        if end > chunk + FRAME_SIZE as u64 || end > self.umem.len as u64 {
            return None;
        }
        // SAFETY: [chunk, chunk+FRAME_SIZE) lies in the UMEM (checked above)
        // and this frame is the worker's now: the kernel handed it over on
        // the RX ring and gets it back only through the fill or TX ring,
        // after this borrow of `self` ends.
        let whole = unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.add(chunk as usize), FRAME_SIZE as usize)
        };
        Some((
            &mut whole[..(end - chunk) as usize],
            (addr - chunk) as usize,
        ))
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> io::Result<SocketStats> {
        // SAFETY: xdp_statistics is plain integers; zero is valid.
        let zero: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let (s, _) = getsockopt(self.fd.as_fd(), libc::XDP_STATISTICS, zero)?;
        Ok(SocketStats {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            rx_invalid: s.rx_invalid_descs,
            tx_invalid: s.tx_invalid_descs,
        })
    }

    /// Every frame's address, for the first fill.
    pub fn all_frames() -> impl Iterator<Item = u64> {
        (0..FRAMES as u64).map(|i| i * FRAME_SIZE as u64)
    }
}
