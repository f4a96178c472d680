//! The io_uring backend: one ring per worker, multishot `RecvMsgMulti` over a
//! registered buffer ring per socket, one `SendMsg` per reply, and one
//! `io_uring_enter` that both submits the batch's replies and waits for the next
//! datagrams.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::cmsg::{RX_CONTROL_SPACE, SOCKADDR_SPACE};
use super::datagram::Receiver;
use super::datagram::{serve_datagram, Datagram};
use super::departure::DepartureClock;
use super::sockets::ListenSocket;
use super::transmit::{SendCall, TxSlot, SENDS_PER_CALL};
use super::txstamp::{ErrQueueReader, TxTracker};
use crate::server::responder::Responder;
use crate::server::stats::SocketDrops;

const SQ_ENTRIES: u32 = 4096;
const CQ_ENTRIES: u32 = 8192;
/// Provided receive buffers per socket (a power of two). This bounds how many
/// datagrams one wake-up pulls in before any reply goes out: 1024 gave a T3−T2
/// p99 of 230–1,500 µs at 250k/s on veth, 256 gave 84–213 µs, like the mmsg
/// backend's 64-datagram batches (docs/benchmarks.md). Bursts beyond it wait in
/// the socket's receive buffer (`rcvbuf`).
const BUFFERS_PER_SOCKET: u16 = 256;
/// Each buffer holds the recvmsg header, the peer address, the control messages
/// and the datagram; bigger datagrams arrive truncated and are dropped.
const BUFFER_SIZE: usize = 2048;
/// Replies that may be in flight at once.
const SEND_SLOTS: usize = 2048;

const KIND_SHIFT: u32 = 56;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_SHUTDOWN: u64 = 3;

fn user_data(kind: u64, index: usize) -> u64 {
    (kind << KIND_SHIFT) | index as u64
}

fn split_user_data(data: u64) -> (u64, usize) {
    (
        data >> KIND_SHIFT,
        (data & ((1 << KIND_SHIFT) - 1)) as usize,
    )
}

/// Builds a ring with the cheapest completion mode the kernel offers: deferred
/// task work (6.1+) runs completions only when the worker asks for them.
fn build_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(SQ_ENTRIES)
        .or_else(|_| {
            IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .setup_coop_taskrun()
                .build(SQ_ENTRIES)
        })
        .or_else(|_| {
            IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .build(SQ_ENTRIES)
        })
}

/// A ring of provided buffers registered with the kernel (IORING_REGISTER_PBUF_RING).
struct BufferRing {
    ring: *mut BufRingEntry,
    ring_layout: std::alloc::Layout,
    memory: Vec<u8>,
    entries: u16,
    group: u16,
    /// Our copy of the tail: buffers handed to the kernel so far.
    tail: u16,
}

impl BufferRing {
    fn new(entries: u16, group: u16) -> io::Result<Self> {
        assert!(entries.is_power_of_two());
        let bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        let ring_layout = std::alloc::Layout::from_size_align(bytes, 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has non-zero size; the memory is zeroed, which is a
        // valid state for the ring entries and the tail.
        let ring = unsafe { std::alloc::alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        if ring.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut br = BufferRing {
            ring,
            ring_layout,
            memory: vec![0u8; entries as usize * BUFFER_SIZE],
            entries,
            group,
            tail: 0,
        };
        for bid in 0..entries {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: `self.ring` is page-aligned memory of `entries` entries that lives
        // as long as `self`; the worker drops the IoUring (which unregisters it)
        // before the BufferRing.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.ring as u64,
                self.entries,
                self.group,
                0,
            )
        }
    }

    /// Hands buffer `bid` back to the kernel (visible after [`publish`]).
    fn recycle(&mut self, bid: u16) {
        let index = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `index` < entries, inside the allocation; the kernel only reads
        // entries between its head and the published tail, and this one is past it.
        let entry = unsafe { &mut *self.ring.add(index) };
        // SAFETY: bid < entries, so the buffer lies inside `memory`.
        let addr = unsafe { self.memory.as_mut_ptr().add(bid as usize * BUFFER_SIZE) };
        entry.set_addr(addr as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes recycled buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lives inside the first entry of our allocation and
        // is only ever accessed atomically (the kernel reads it with acquire).
        let tail = unsafe { &*(BufRingEntry::tail(self.ring).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The bytes the kernel wrote into buffer `bid`.
    fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * BUFFER_SIZE;
        &self.memory[start..start + len.min(BUFFER_SIZE)]
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring was unregistered
        // when the IoUring was dropped (it is dropped first, see `Worker`).
        unsafe { std::alloc::dealloc(self.ring.cast(), self.ring_layout) }
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct of integers and pointers; zero is valid.
    unsafe { std::mem::zeroed() }
}

struct Worker<'a> {
    // Field order matters: the ring is dropped (and the buffer rings unregistered)
    // before the buffer memory is freed.
    ring: IoUring,
    buffers: Vec<BufferRing>,
    /// One receive header per socket; never reallocated, the kernel reads them.
    receive_hdrs: Box<[libc::msghdr]>,
    /// Never reallocated: the kernel reads the slots' headers.
    slots: Box<[TxSlot]>,
    free_slots: Vec<u16>,
    sockets: &'a [ListenSocket],
    /// Slots queued for sending since the last submission, in queue order
    /// (their transmit timestamps are written just before the submission).
    unsubmitted: Vec<u16>,
    departure: DepartureClock,
    /// Kernel queue drops seen so far, per socket.
    drops: Vec<SocketDrops>,
    /// Replies awaiting their kernel transmit stamps, per socket.
    tx: Vec<TxTracker>,
    errors: ErrQueueReader,
}

impl<'a> Worker<'a> {
    fn new(sockets: &'a [ListenSocket]) -> io::Result<Self> {
        let ring = build_ring()?;
        let mut buffers = Vec::new();
        let mut receive_hdrs = Vec::with_capacity(sockets.len());
        for group in 0..sockets.len() {
            let br = BufferRing::new(BUFFERS_PER_SOCKET, group as u16)?;
            br.register(&ring)?;
            buffers.push(br);
            let mut hdr = zeroed_msghdr();
            hdr.msg_namelen = SOCKADDR_SPACE as libc::socklen_t;
            hdr.msg_controllen = RX_CONTROL_SPACE as _;
            receive_hdrs.push(hdr);
        }
        let slots: Box<[TxSlot]> = (0..SEND_SLOTS).map(|_| TxSlot::default()).collect();
        Ok(Worker {
            ring,
            buffers,
            receive_hdrs: receive_hdrs.into_boxed_slice(),
            slots,
            free_slots: (0..SEND_SLOTS as u16).rev().collect(),
            sockets,
            unsubmitted: Vec::with_capacity(SEND_SLOTS),
            departure: DepartureClock::default(),
            drops: vec![SocketDrops::default(); sockets.len()],
            tx: sockets.iter().map(|s| TxTracker::new(s.tx_ids)).collect(),
            errors: ErrQueueReader::default(),
        })
    }

    /// Queues an entry. Only called with room in the submission queue: the
    /// worker submits before a batch could fill it (see `make_room`).
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: every entry we build points at memory owned by `self`
        // (msghdrs, send slots, buffer rings) that outlives the operation.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    /// Submits what is queued when the submission queue has no room left for
    /// one more entry, transmit timestamps written first.
    fn make_room(&mut self, responder: &Responder) -> io::Result<()> {
        if self.ring.submission().is_full() {
            self.submit_and_wait(responder, 0)?;
        }
        Ok(())
    }

    /// Writes the transmit timestamp of every queued answer, each at its
    /// estimated departure, then submits everything queued and waits for
    /// `wait` completions. The time the call took, when it carried sends,
    /// teaches the departure estimate.
    fn submit_and_wait(&mut self, responder: &Responder, wait: usize) -> io::Result<usize> {
        let sends = self.unsubmitted.len();
        let mut call = SendCall::begin(&self.departure);
        for &index in &self.unsubmitted {
            call.stamp(responder, &mut self.slots[index as usize]);
        }
        self.unsubmitted.clear();
        let submitted = self.ring.submit_and_wait(wait);
        if sends > 0 {
            // Sends complete inline, so with sends queued the call does not
            // wait for a datagram: its length is the cost of the sends.
            call.end(&mut self.departure, sends);
        }
        submitted
    }

    fn arm_receive(&mut self, index: usize) -> io::Result<()> {
        let fd = self.sockets[index].socket.as_raw_fd();
        let entry = opcode::RecvMsgMulti::new(
            Fd(fd),
            &self.receive_hdrs[index] as *const libc::msghdr,
            index as u16,
        )
        .build()
        .user_data(user_data(KIND_RECV, index));
        self.push(entry)
    }

    fn run(&mut self, responder: &mut Responder, shutdown: RawFd) -> io::Result<()> {
        for i in 0..self.sockets.len() {
            self.arm_receive(i)?;
        }
        let poll = opcode::PollAdd::new(Fd(shutdown), libc::POLLIN as u32)
            .build()
            .user_data(user_data(KIND_SHUTDOWN, 0));
        self.push(poll)?;
        let mut rearm = vec![false; self.sockets.len()];
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(CQ_ENTRIES as usize);
        loop {
            match self.submit_and_wait(responder, 1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // Completion queue overflow: drain it below, then submit again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            completions.clear();
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            // Sends first, and their stamps: a request in this batch may
            // name the reply that just left (interleaved mode).
            let shutdown = self.complete_sends(&completions, responder);
            self.read_tx_stamps(responder);
            if shutdown {
                return Ok(());
            }
            let mut batch = 0usize;
            for &(data, result, flags) in &completions {
                let (kind, index) = split_user_data(data);
                if kind != KIND_RECV {
                    continue;
                }
                if !cqueue::more(flags) {
                    rearm[index] = true;
                }
                if result < 0 {
                    // ENOBUFS: every buffer was in use; the multishot ended
                    // and is re-armed below once buffers are back.
                    if -result != libc::ENOBUFS {
                        responder.stats().recv_errors.bump();
                    }
                    continue;
                }
                let Some(bid) = cqueue::buffer_select(flags) else {
                    responder.stats().recv_errors.bump();
                    continue;
                };
                if batch == 0 {
                    responder.begin_batch();
                }
                batch += 1;
                self.serve(index, bid, result as usize, responder)?;
                self.buffers[index].recycle(bid);
            }
            if batch > 0 {
                responder.end_batch(batch);
            }
            for br in &self.buffers {
                br.publish();
            }
            for (i, ended) in rearm.iter_mut().enumerate() {
                if std::mem::take(ended) {
                    responder.stats().multishot_rearms.bump();
                    self.make_room(responder)?;
                    self.arm_receive(i)?;
                }
            }
        }
    }

    /// Frees the slots of completed sends and records each reply that went
    /// out for its transmit stamp. True when shutdown was asked for.
    fn complete_sends(&mut self, completions: &[(u64, i32, u32)], responder: &Responder) -> bool {
        let stats = responder.stats();
        let mut shutdown = false;
        for &(data, result, _) in completions {
            let (kind, index) = split_user_data(data);
            match kind {
                KIND_SEND => {
                    let slot = &mut self.slots[index];
                    let tx = &mut self.tx[slot.socket()];
                    let sent = slot.take_sent();
                    if result < 0 {
                        stats.send_errors.bump();
                        tx.failed();
                    } else if let Some((id, reply)) = sent {
                        tx.sent(id, reply, stats);
                    }
                    self.free_slots.push(index as u16);
                }
                KIND_SHUTDOWN => shutdown = true,
                _ => {}
            }
        }
        shutdown
    }

    /// Reads the transmit stamps queued on every socket that sent.
    fn read_tx_stamps(&mut self, responder: &Responder) {
        let departure = &mut self.departure;
        for (socket, tx) in self.sockets.iter().zip(&mut self.tx) {
            self.errors
                .drain(&socket.socket, tx, responder.stats(), |stamped| {
                    responder.transmit_stamped(&stamped);
                    departure.learn(&stamped);
                });
        }
    }

    /// Answers one received datagram, queueing the reply.
    fn serve(
        &mut self,
        socket: usize,
        bid: u16,
        len: usize,
        responder: &mut Responder,
    ) -> io::Result<()> {
        let buffer = self.buffers[socket].filled(bid, len);
        let Ok(msg) = RecvMsgOut::parse(buffer, &self.receive_hdrs[socket]) else {
            responder.stats().recv_errors.bump();
            return Ok(());
        };
        let datagram = Datagram {
            name: msg.name_data(),
            control: msg.control_data(),
            payload: msg.payload_data(),
            truncated: msg.is_payload_truncated(),
        };
        let slot_index = self.free_slots.pop();
        let slot = slot_index.map(|i| &mut self.slots[i as usize]);
        let on = Receiver {
            socket: &self.sockets[socket],
            index: socket,
            drops: &mut self.drops[socket],
            tx: &mut self.tx[socket],
        };
        let queued = serve_datagram(responder, on, &datagram, slot);
        let Some(slot_index) = slot_index else {
            return Ok(());
        };
        if !queued {
            self.free_slots.push(slot_index);
            return Ok(());
        }
        let fd = self.sockets[socket].socket.as_raw_fd();
        let hdr: *const libc::msghdr = self.slots[slot_index as usize].msghdr();
        let entry = opcode::SendMsg::new(Fd(fd), hdr)
            .build()
            .user_data(user_data(KIND_SEND, slot_index as usize));
        self.make_room(responder)?;
        self.push(entry)?;
        self.unsubmitted.push(slot_index);
        if self.unsubmitted.len() >= SENDS_PER_CALL {
            // Out now, stamped at a clock read of its own (SENDS_PER_CALL).
            self.submit_and_wait(responder, 0)?;
        }
        Ok(())
    }
}

/// Runs the worker loop until `shutdown` becomes readable.
pub fn run(
    sockets: &[ListenSocket],
    responder: &mut Responder,
    shutdown: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut worker = Worker::new(sockets)?;
    worker.run(responder, shutdown.as_raw_fd())
}

/// Checks that this kernel (and any sandbox around it) supports what the backend
/// needs, by doing it: a multishot receive over a buffer ring on a loopback socket.
pub fn probe() -> Result<(), String> {
    let run_probe = || -> io::Result<()> {
        let listener = crate::server::io::sockets::open_listen_socket(
            "127.0.0.1:0".parse().unwrap(),
            crate::config::DEFAULT_RCVBUF,
        )?;
        let sockets = [listener];
        let mut worker = Worker::new(&sockets)?;
        worker.arm_receive(0)?;
        let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
        sender.send_to(b"tachyon io_uring probe", sockets[0].local)?;
        let timeout = io_uring::types::Timespec::new().sec(2);
        let args = io_uring::types::SubmitArgs::new().timespec(&timeout);
        worker.ring.submitter().submit_with_args(1, &args)?;
        let cqe = worker
            .ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no completion"))?;
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
        if cqueue::buffer_select(cqe.flags()).is_none() {
            return Err(io::Error::other("completion without a provided buffer"));
        }
        Ok(())
    };
    run_probe().map_err(|e| e.to_string())
}
