//! The receive timestamp (T2) is the kernel's, taken when the datagram arrived,
//! not when a worker got round to reading it: a request is queued on the socket,
//! the worker starts 200 ms later, and the reply's T2 still matches the send time
//! while its T3 is 200 ms later. And the transmit timestamp (T3) of each reply
//! of a batch is its own estimated departure, one send apart, not one clock read
//! for the whole batch. And the kernel's count of requests it dropped for a full
//! receive queue reaches the worker's counters. Checked for both backends.

mod common;

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use tachyon::config::DEFAULT_RCVBUF;
use tachyon::proto::Header;
use tachyon::server::access::{AccessControl, SharedAccess};
use tachyon::server::io::sockets::open_listen_socket;
use tachyon::server::io::{mmsg, uring};
use tachyon::server::responder::Responder;
use tachyon::server::stats::{Outcome, WorkerStats};
use tachyon::server::Backend;
use tachyon::state::{shared_state, ServerState};

use common::{ntp_to_unix_ns, request, uring_available};

/// 300 requests sent to a socket with a 16 KiB receive buffer before its worker
/// starts: the kernel keeps a few dozen and drops the rest. The worker learns
/// how many from the next datagram (SO_RXQ_OVFL) and counts every one.
fn check_socket_drops(backend: Backend) {
    let listener = open_listen_socket("127.0.0.1:0".parse().unwrap(), 16 << 10).unwrap();
    let server = listener.local;
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for nonce in 1..=300u64 {
        client.send_to(&request(4, nonce), server).unwrap();
    }
    let stats = Arc::new(WorkerStats::default());
    let answered = with_worker(backend, listener, stats.clone(), || {
        let mut buf = [0u8; 128];
        let mut answered = 0u64;
        while client.recv_from(&mut buf).is_ok() {
            answered += 1;
        }
        // One more, after the queue drained: it carries the drop count.
        client.send_to(&request(4, 301), server).unwrap();
        client.recv_from(&mut buf).expect("the last reply");
        answered + 1
    });
    let name = backend.name();
    assert!(
        answered < 200,
        "{name}: {answered} answered; no drops to count"
    );
    assert_eq!(
        stats.socket_drops.get(),
        301 - answered,
        "{name}: {answered} of 301 answered"
    );
}

/// Runs a worker of `backend` on `listener` while `client` runs, then stops it.
fn with_worker<T>(
    backend: Backend,
    listener: tachyon::server::io::sockets::ListenSocket,
    stats: Arc<WorkerStats>,
    client: impl FnOnce() -> T,
) -> T {
    let (_publisher, reader) = shared_state(ServerState::unsynchronized(-20));
    let mut responder = Responder::new(reader, SharedAccess::new(AccessControl::open()), stats);
    let shutdown = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
    let wake = shutdown.as_fd().try_clone_to_owned().unwrap();
    let worker = std::thread::spawn(move || {
        let sockets = [listener];
        match backend {
            Backend::Uring => uring::run(&sockets, &mut responder, wake.as_fd()),
            Backend::Mmsg => mmsg::run(&sockets, &mut responder, wake.as_fd()),
            Backend::Xdp => unreachable!("socket backends only"),
        }
    });
    let result = client();
    shutdown.write(1).unwrap();
    worker.join().unwrap().unwrap();
    result
}

/// Eight requests wait on the socket before the worker starts, so it answers
/// them in one batch and one send call: their T3s must follow their T2s in
/// order, each at least half a microsecond after the one before (the departure
/// estimate starts at one microsecond per send), where one clock read per
/// reply as it is built would put them a few tens of nanoseconds apart.
fn check_batch_departures(backend: Backend) {
    let listener = open_listen_socket("127.0.0.1:0".parse().unwrap(), DEFAULT_RCVBUF).unwrap();
    let server = listener.local;
    std::thread::sleep(Duration::from_millis(100));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for nonce in 1..=8u64 {
        client.send_to(&request(4, nonce), server).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let stats = Arc::new(WorkerStats::default());
    let mut replies = with_worker(backend, listener, stats.clone(), || {
        let mut replies = Vec::new();
        let mut buf = [0u8; 128];
        for _ in 0..8 {
            let (len, _) = client.recv_from(&mut buf).expect("reply");
            let h = Header::parse(&buf[..len]).unwrap();
            replies.push((
                ntp_to_unix_ns(h.receive_ts),
                ntp_to_unix_ns(h.transmit_ts),
                h.origin_ts.to_bits(),
            ));
        }
        replies
    });
    let name = backend.name();
    assert_eq!(
        stats.batch_size.count(),
        1,
        "{name}: the eight arrived in one batch"
    );
    replies.sort();
    let nonces: Vec<u64> = replies.iter().map(|r| r.2).collect();
    assert_eq!(
        nonces,
        (1..=8).collect::<Vec<_>>(),
        "{name}: answered in arrival order"
    );
    for pair in replies.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= 500,
            "{name}: consecutive replies' T3 only {gap} ns apart: {replies:?}"
        );
    }
    assert!(replies.iter().all(|&(t2, t3, _)| t3 > t2), "{name}");
}

fn check(backend: Backend) {
    let listener = open_listen_socket("127.0.0.1:0".parse().unwrap(), DEFAULT_RCVBUF).unwrap();
    let server = listener.local;
    // The kernel turns receive timestamping on globally when the first socket asks
    // for it, through deferred work; a datagram that arrives before that is stamped
    // when it is read. Give it time, as a long-running server always has.
    std::thread::sleep(Duration::from_millis(100));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let nonce = 0x0123_4567_89ab_cdef;
    let sent_ns = tachyon::clock::system_unix_ns();
    client.send_to(&request(4, nonce), server).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let stats = Arc::new(WorkerStats::default());
    let mut buf = [0u8; 128];
    let len = with_worker(backend, listener, stats.clone(), || {
        client.recv_from(&mut buf).expect("reply").0
    });
    let h = Header::parse(&buf[..len]).unwrap();
    assert_eq!(h.origin_ts.to_bits(), nonce);
    let t2 = ntp_to_unix_ns(h.receive_ts);
    let t3 = ntp_to_unix_ns(h.transmit_ts);
    let name = backend.name();
    assert!(
        (t2 - sent_ns).abs() < 20_000_000,
        "{name}: T2 is {} ms from the send time",
        (t2 - sent_ns) / 1_000_000
    );
    assert!(
        t3 - t2 >= 190_000_000,
        "{name}: T3 - T2 = {} ms: T2 was taken at read time, not by the kernel",
        (t3 - t2) / 1_000_000
    );
    assert_eq!(stats.rx_stamp_missing.get(), 0, "{name}");
    assert_eq!(stats.outcome_total(Outcome::Answered), 1, "{name}");
    assert_eq!(stats.response_time.count(), 1, "{name}");
}

#[test]
fn io_uring_receive_timestamp_is_the_kernels() {
    if uring_available() {
        check(Backend::Uring);
    }
}

#[test]
fn mmsg_receive_timestamp_is_the_kernels() {
    check(Backend::Mmsg);
}

#[test]
fn io_uring_stamps_each_reply_of_a_batch_at_its_departure() {
    if uring_available() {
        check_batch_departures(Backend::Uring);
    }
}

#[test]
fn mmsg_stamps_each_reply_of_a_batch_at_its_departure() {
    check_batch_departures(Backend::Mmsg);
}

#[test]
fn io_uring_counts_kernel_queue_drops() {
    if uring_available() {
        check_socket_drops(Backend::Uring);
    }
}

#[test]
fn mmsg_counts_kernel_queue_drops() {
    check_socket_drops(Backend::Mmsg);
}
