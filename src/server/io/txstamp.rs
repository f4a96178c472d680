//! The kernel's transmit timestamps: when each reply really left.
//!
//! Every listening socket asks for a software transmit timestamp on each
//! datagram (`SOF_TIMESTAMPING_TX_SOFTWARE`, taken as the driver gets the
//! datagram), numbered (`OPT_ID`) and without the datagram looped back
//! (`OPT_TSONLY`). The kernel queues each stamp on the socket's error queue;
//! the worker reads them in batches (`recvmmsg` with `MSG_ERRQUEUE`) right
//! after each send call, when the kernel has usually stamped the whole call,
//! and before it serves the next requests, so that an interleaved request
//! that follows a reply at once still finds the reply's exact stamp.
//!
//! A stamp names its reply by id. Where the kernel takes `SCM_TS_OPT_ID`
//! (Linux 6.13) each reply carries its id; elsewhere the socket numbers the
//! datagrams it sends, every sent datagram taking the next number, and the
//! worker counts along. A send that fails takes no number on Linux 6.2 and
//! later and may on older kernels, so after a failure the worker reads the
//! stamps still queued and starts the count afresh (`restart_tx_count`). A
//! stamp must also fall within a second after its send call began, or it is
//! not believed.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use super::cmsg::{parse_tx_stamp, TxStampMeta};
use super::sockets::{restart_tx_count, TxStampIds};
use crate::server::stats::{StampSource, WorkerStats};
use crate::server::xleave::KeepPair;

/// Replies awaiting their stamp, per socket (a power of two). Stamps come
/// back within microseconds; a reply whose slot comes round again before
/// its stamp did is counted as never stamped.
const IN_FLIGHT: usize = 4096;
/// Error-queue messages read per `recvmmsg`.
const READ_BATCH: usize = 64;
/// Room for one error-queue message's control data: the timestamping
/// message (3 timespecs) and the extended error with its offender address.
const ERR_CONTROL_SPACE: usize = 192;
/// A stamp later than this after its send call began is not believed.
const MAX_STAMP_DELAY_NS: i64 = 1_000_000_000;

/// One reply handed to the kernel, awaiting its stamp.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sent {
    /// When its request arrived (kernel stamp, system clock, Unix ns).
    pub rx_ns: i64,
    /// Its estimated departure: the transmit timestamp a basic reply
    /// carries (system clock, before the served clock's correction).
    pub departure_ns: i64,
    /// When its send call began, and its place in the call.
    pub call_start_ns: i64,
    pub position: u32,
    /// It carried `departure_ns` as its transmit timestamp (a basic reply,
    /// not an interleaved one).
    pub basic: bool,
    /// The pair to keep for the client's next, interleaved, request.
    pub keep: Option<KeepPair>,
}

#[derive(Clone, Copy)]
struct Pending {
    id: u32,
    live: bool,
    sent: Option<Sent>,
}

/// The replies of one socket that await their stamps.
pub struct TxTracker {
    ids: TxStampIds,
    /// `Explicit`: the id the next reply is given. `Counter`: the number the
    /// socket gives its next datagram.
    next_id: u32,
    ring: Box<[Pending]>,
    /// Replies went out since the error queue was last read.
    unread: bool,
    /// A send failed while the socket counts: the count is restarted once
    /// the stamps queued before it are read.
    restart: bool,
}

impl TxTracker {
    pub fn new(ids: TxStampIds) -> TxTracker {
        let empty = Pending {
            id: 0,
            live: false,
            sent: None,
        };
        let slots = if ids == TxStampIds::Off { 0 } else { IN_FLIGHT };
        TxTracker {
            ids,
            next_id: 0,
            ring: vec![empty; slots].into_boxed_slice(),
            unread: false,
            restart: false,
        }
    }

    pub fn ids(&self) -> TxStampIds {
        self.ids
    }

    /// The id to send with the next reply (`SCM_TS_OPT_ID`), where the
    /// kernel takes one.
    pub fn next_explicit_id(&mut self) -> Option<u32> {
        if self.ids != TxStampIds::Explicit {
            return None;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        Some(id)
    }

    /// A reply went out: `explicit_id` is the id it carried, if any.
    pub fn sent(&mut self, explicit_id: Option<u32>, sent: Sent, stats: &WorkerStats) {
        let id = match (self.ids, explicit_id) {
            (TxStampIds::Off, _) => {
                stats.count_stamp(StampSource::None);
                return;
            }
            (TxStampIds::Explicit, Some(id)) => id,
            (TxStampIds::Explicit, None) => {
                stats.count_stamp(StampSource::None);
                return;
            }
            (TxStampIds::Counter, _) => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                id
            }
        };
        let slot = &mut self.ring[id as usize & (IN_FLIGHT - 1)];
        if slot.live {
            // Its stamp never came (dropped by a queue after the stamp
            // point, or lost): it never will now.
            stats.count_stamp(StampSource::None);
        }
        *slot = Pending {
            id,
            live: true,
            sent: Some(sent),
        };
        self.unread = true;
    }

    /// A reply failed to go out.
    pub fn failed(&mut self) {
        if self.ids == TxStampIds::Counter {
            self.restart = true;
        }
    }

    /// The reply a stamp names, once.
    fn take(&mut self, stamp: &TxStampMeta) -> Option<Sent> {
        if self.ring.is_empty() {
            return None;
        }
        let slot = &mut self.ring[stamp.id as usize & (IN_FLIGHT - 1)];
        if !slot.live || slot.id != stamp.id {
            return None;
        }
        slot.live = false;
        slot.sent.take()
    }

    /// Forgets every reply still waiting: after a restart of the count
    /// their stamps could not be told from the new ones.
    fn forget_all(&mut self, stats: &WorkerStats) {
        for slot in self.ring.iter_mut().filter(|s| s.live) {
            slot.live = false;
            stats.count_stamp(StampSource::None);
        }
    }
}

/// A reply and when it left.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stamped {
    pub sent: Sent,
    /// The kernel's software transmit stamp (system clock, Unix ns).
    pub departed_ns: i64,
}

/// Reads stamps off the error queues; one per worker, for all its sockets.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; ERR_CONTROL_SPACE]);

pub struct ErrQueueReader {
    control: Box<[Control]>,
    data: Box<[[u8; 16]]>,
    iov: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers, for
    // which all-zero bytes are a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

impl Default for ErrQueueReader {
    fn default() -> Self {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        ErrQueueReader {
            control: vec![Control([0; ERR_CONTROL_SPACE]); READ_BATCH].into_boxed_slice(),
            data: vec![[0u8; 16]; READ_BATCH].into_boxed_slice(),
            iov: vec![iov; READ_BATCH].into_boxed_slice(),
            hdrs: (0..READ_BATCH).map(|_| zeroed_mmsghdr()).collect(),
        }
    }
}

impl ErrQueueReader {
    /// Reads every stamp queued on `socket` and hands each, matched to its
    /// reply, to `stamped`; restarts the socket's count when a send failed.
    /// Does nothing when no reply went out since the last read.
    pub fn drain(
        &mut self,
        socket: &UdpSocket,
        tracker: &mut TxTracker,
        stats: &WorkerStats,
        mut stamped: impl FnMut(Stamped),
    ) {
        if !tracker.unread && !tracker.restart {
            return;
        }
        tracker.unread = false;
        while let Ok(n) = self.read_batch(socket) {
            for i in 0..n {
                let Some(meta) = self.stamp(i) else {
                    continue;
                };
                let Some(departed_ns) = meta.software_ns else {
                    // A hardware stamp is on the NIC's clock, not ours.
                    stats.count_stamp(StampSource::Hardware);
                    let _ = tracker.take(&meta);
                    continue;
                };
                let Some(sent) = tracker.take(&meta) else {
                    continue;
                };
                let delay = departed_ns.saturating_sub(sent.call_start_ns);
                if !(0..=MAX_STAMP_DELAY_NS).contains(&delay) {
                    stats.count_stamp(StampSource::None);
                    continue;
                }
                stats.count_stamp(StampSource::Kernel);
                stamped(Stamped { sent, departed_ns });
            }
            if n < READ_BATCH {
                break;
            }
        }
        if tracker.restart {
            tracker.restart = false;
            tracker.forget_all(stats);
            tracker.next_id = 0;
            if !restart_tx_count(socket) {
                stats.send_errors.bump();
            }
        }
    }

    fn read_batch(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for i in 0..READ_BATCH {
            self.iov[i].iov_base = self.data[i].as_mut_ptr().cast();
            self.iov[i].iov_len = self.data[i].len();
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = self.control[i].0.as_mut_ptr().cast();
            h.msg_controllen = ERR_CONTROL_SPACE as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` with the
        // lengths given; READ_BATCH headers are available.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                READ_BATCH as libc::c_uint,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The stamp in message `i` of the last batch.
    fn stamp(&self, i: usize) -> Option<TxStampMeta> {
        let len = self.hdrs[i].msg_hdr.msg_controllen.min(ERR_CONTROL_SPACE);
        parse_tx_stamp(&self.control[i].0[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(rx_ns: i64) -> Sent {
        Sent {
            rx_ns,
            departure_ns: rx_ns + 10_000,
            call_start_ns: rx_ns + 9_000,
            position: 0,
            basic: true,
            keep: None,
        }
    }

    fn meta(id: u32) -> TxStampMeta {
        TxStampMeta {
            id,
            software_ns: Some(1),
            hardware_ns: None,
        }
    }

    #[test]
    fn explicit_ids_find_their_replies_in_any_order() {
        let stats = WorkerStats::default();
        let mut t = TxTracker::new(TxStampIds::Explicit);
        let ids: Vec<u32> = (0..3).map(|_| t.next_explicit_id().unwrap()).collect();
        assert_eq!(ids, [0, 1, 2]);
        t.sent(Some(0), sent(100), &stats);
        // The reply with id 1 failed to go out and was never recorded.
        t.failed();
        t.sent(Some(2), sent(300), &stats);
        assert_eq!(t.take(&meta(2)).map(|s| s.rx_ns), Some(300));
        assert_eq!(t.take(&meta(1)), None);
        assert_eq!(t.take(&meta(0)).map(|s| s.rx_ns), Some(100));
        assert_eq!(t.take(&meta(0)), None, "once");
        assert!(!t.restart, "ids given with each reply need no restart");
    }

    #[test]
    fn a_counting_socket_numbers_the_replies_sent() {
        let stats = WorkerStats::default();
        let mut t = TxTracker::new(TxStampIds::Counter);
        assert_eq!(t.next_explicit_id(), None);
        for rx in [100, 200, 300] {
            t.sent(None, sent(rx), &stats);
        }
        assert_eq!(t.take(&meta(1)).map(|s| s.rx_ns), Some(200));
        t.failed();
        assert!(t.restart);
    }

    #[test]
    fn a_reply_whose_stamp_never_came_is_counted_once_its_slot_comes_round() {
        let stats = WorkerStats::default();
        let mut t = TxTracker::new(TxStampIds::Counter);
        for i in 0..IN_FLIGHT as i64 + 5 {
            t.sent(None, sent(i), &stats);
        }
        assert_eq!(stats.stamps(StampSource::None), 5);
        // The first five are gone; their slots hold later replies.
        assert_eq!(t.take(&meta(3)), None);
        assert_eq!(
            t.take(&meta(IN_FLIGHT as u32 + 3)).map(|s| s.rx_ns),
            Some(IN_FLIGHT as i64 + 3)
        );
        t.forget_all(&stats);
        assert_eq!(stats.stamps(StampSource::None), IN_FLIGHT as u64 + 4);
    }

    /// A real socket: three datagrams counted 0, 1, 2; a failed send
    /// restarts the count, and the next two, counted 0 and 1 again, find
    /// their own replies, not the first ones.
    #[test]
    fn a_restarted_count_matches_the_next_datagrams() {
        use crate::server::io::sockets::open_socket;
        let listener = open_socket("127.0.0.1:0".parse().unwrap(), 64 << 10, true).unwrap();
        assert_ne!(listener.tx_ids, TxStampIds::Off);
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sink.local_addr().unwrap();
        let stats = WorkerStats::default();
        let mut tracker = TxTracker::new(TxStampIds::Counter);
        let mut reader = ErrQueueReader::default();
        let now = crate::clock::system_unix_ns();
        let send = |tracker: &mut TxTracker, rx: i64| {
            listener.socket.send_to(&[0u8; 48], to).unwrap();
            let mut s = sent(rx);
            s.call_start_ns = now;
            tracker.sent(None, s, &stats);
        };
        for rx in [1, 2, 3] {
            send(&mut tracker, rx);
        }
        let mut seen = Vec::new();
        reader.drain(&listener.socket, &mut tracker, &stats, |s| {
            seen.push(s.sent.rx_ns)
        });
        assert_eq!(seen, [1, 2, 3]);
        tracker.failed();
        reader.drain(&listener.socket, &mut tracker, &stats, |s| {
            seen.push(s.sent.rx_ns)
        });
        for rx in [4, 5] {
            send(&mut tracker, rx);
        }
        reader.drain(&listener.socket, &mut tracker, &stats, |s| {
            seen.push(s.sent.rx_ns)
        });
        assert_eq!(seen, [1, 2, 3, 4, 5]);
        assert_eq!(stats.stamps(StampSource::Kernel), 5);
        assert_eq!(stats.stamps(StampSource::None), 0);
    }

    #[test]
    fn without_stamps_every_reply_counts_as_unstamped() {
        let stats = WorkerStats::default();
        let mut t = TxTracker::new(TxStampIds::Off);
        assert_eq!(t.next_explicit_id(), None);
        t.sent(None, sent(1), &stats);
        t.sent(None, sent(2), &stats);
        assert_eq!(stats.stamps(StampSource::None), 2);
        assert_eq!(t.take(&meta(0)), None);
    }
}
