//! The kernel's transmit timestamps and the interleaved mode (RFC 9769), on a
//! real worker of each backend: every reply's stamp comes back and is matched
//! to it, whether the replies name their stamp's id (Linux 6.13) or the socket
//! counts them; the T3 error histogram counts every basic reply; a client that
//! follows RFC 9769 gets an interleaved reply from its third exchange, with
//! the exact departure of the reply before, never twice for one origin, and
//! not across a clock step; with the mode off it gets basic replies only.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use tachyon::config::DEFAULT_RCVBUF;
use tachyon::proto::{Header, NtpTimestamp};
use tachyon::server::access::{AccessControl, SharedAccess};
use tachyon::server::io::sockets::{open_listen_socket, ListenSocket, TxStampIds};
use tachyon::server::io::{mmsg, uring};
use tachyon::server::responder::Responder;
use tachyon::server::stats::{StampSource, WorkerStats};
use tachyon::server::xleave::XleaveTable;
use tachyon::server::Backend;
use tachyon::state::{shared_state, ServerState, StatePublisher};
use tachyon::telemetry::signed::SignedSnapshot;

use common::{ntp_to_unix_ns, request, uring_available};

/// A worker running on one socket, and what a test needs of it.
struct Running {
    server: SocketAddr,
    stats: Arc<WorkerStats>,
    publisher: StatePublisher,
    shutdown: EventFd,
    worker: std::thread::JoinHandle<std::io::Result<()>>,
}

fn start(backend: Backend, listener: ListenSocket, xleave: Option<Arc<XleaveTable>>) -> Running {
    let server = listener.local;
    let (publisher, reader) = shared_state(ServerState::unsynchronized(-20));
    let stats = Arc::new(WorkerStats::default());
    let mut responder = Responder::new(
        reader,
        SharedAccess::new(AccessControl::open()),
        stats.clone(),
    )
    .with_xleave(xleave);
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
    // Receive timestamping is turned on globally through deferred work.
    std::thread::sleep(Duration::from_millis(100));
    Running {
        server,
        stats,
        publisher,
        shutdown,
        worker,
    }
}

impl Running {
    fn stop(self) -> Arc<WorkerStats> {
        // The last replies' stamps are read right after their send call.
        std::thread::sleep(Duration::from_millis(50));
        self.shutdown.write(1).unwrap();
        self.worker.join().unwrap().unwrap();
        self.stats
    }
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Mmsg];
    if uring_available() {
        b.push(Backend::Uring);
    }
    b
}

/// 200 requests in bursts of four: each burst is answered in one send call.
fn check_every_reply_is_stamped(backend: Backend, ids: Option<TxStampIds>) {
    let mut listener = open_listen_socket("127.0.0.1:0".parse().unwrap(), DEFAULT_RCVBUF).unwrap();
    assert_ne!(
        listener.tx_ids,
        TxStampIds::Off,
        "no transmit timestamps here"
    );
    if let Some(ids) = ids {
        listener.tx_ids = ids;
    }
    let ids = listener.tx_ids;
    let run = start(backend, listener, None);
    let c = client();
    let mut buf = [0u8; 128];
    for burst in 0..50u64 {
        for i in 0..4 {
            c.send_to(&request(4, 1 + burst * 4 + i), run.server)
                .unwrap();
        }
        for _ in 0..4 {
            c.recv_from(&mut buf).expect("reply");
        }
    }
    let stats = run.stop();
    let name = format!("{} ({ids:?})", backend.name());
    assert_eq!(stats.stamps(StampSource::Kernel), 200, "{name}");
    assert_eq!(stats.stamps(StampSource::None), 0, "{name}");
    assert_eq!(stats.t3_error.count(), 200, "{name}");
    let errors = SignedSnapshot::merge(&[&stats.t3_error]);
    let p50 = errors.quantile(0.5).unwrap();
    // Learned from the stamps: the estimate is within microseconds. (A
    // debug build on a busy machine: a loose bound.)
    assert!(p50.abs() < 20_000, "{name}: median T3 error {p50} ns");
}

#[test]
fn every_reply_is_stamped_and_matched() {
    for backend in backends() {
        check_every_reply_is_stamped(backend, None);
    }
}

#[test]
fn a_socket_that_counts_its_datagrams_matches_them_too() {
    for backend in backends() {
        check_every_reply_is_stamped(backend, Some(TxStampIds::Counter));
    }
}

/// One exchange of a client that follows RFC 9769.
struct Exchange {
    reply: Header,
    /// The request's receive and transmit timestamps.
    receive: NtpTimestamp,
    transmit: NtpTimestamp,
}

/// Sends a request with `origin`, a receive timestamp of its own and a
/// nonce, and returns the reply.
fn exchange(c: &UdpSocket, server: SocketAddr, origin: NtpTimestamp, n: u64) -> Exchange {
    let mut req = request(4, 0x5ee0_0000_0000_0000 | n);
    req[24..32].copy_from_slice(&origin.to_be_bytes());
    let receive = NtpTimestamp(0x7000_0000_0000_0000 | n << 8);
    req[32..40].copy_from_slice(&receive.to_be_bytes());
    c.send_to(&req, server).unwrap();
    let mut buf = [0u8; 128];
    let (len, _) = c.recv_from(&mut buf).expect("reply");
    // Leave time for the stamp to be read before the next request.
    std::thread::sleep(Duration::from_millis(2));
    Exchange {
        reply: Header::parse(&buf[..len]).unwrap(),
        receive,
        transmit: NtpTimestamp::from_be_bytes(req[40..48].try_into().unwrap()),
    }
}

fn is_interleaved(e: &Exchange) -> bool {
    assert!(
        e.reply.origin_ts == e.receive || e.reply.origin_ts == e.transmit,
        "origin is neither the request's receive nor its transmit: {:?}",
        e.reply
    );
    e.reply.origin_ts == e.receive
}

fn check_interleaved_exchanges(backend: Backend) {
    let listener = open_listen_socket("127.0.0.1:0".parse().unwrap(), DEFAULT_RCVBUF).unwrap();
    let table = Arc::new(XleaveTable::new(1 << 12));
    let run = start(backend, listener, Some(table.clone()));
    let c = client();
    let name = backend.name();
    // 1: basic, origin zero. 2: names reply 1's receive stamp, which was not
    // kept (request 1 did not ask): basic, and reply 2's pair is kept.
    let first = exchange(&c, run.server, NtpTimestamp::ZERO, 1);
    assert!(!is_interleaved(&first), "{name}");
    let second = exchange(&c, run.server, first.reply.receive_ts, 2);
    assert!(!is_interleaved(&second), "{name}");
    // 3 on: interleaved, carrying the exact departure of the reply before.
    let mut previous = second;
    for n in 3..=10 {
        let e = exchange(&c, run.server, previous.reply.receive_ts, n);
        assert!(is_interleaved(&e), "{name}: exchange {n} {:?}", e.reply);
        let exact = ntp_to_unix_ns(e.reply.transmit_ts);
        let received = ntp_to_unix_ns(previous.reply.receive_ts);
        assert!(
            (1..10_000_000).contains(&(exact - received)),
            "{name}: the reply before left {} ns after its request arrived",
            exact - received
        );
        if n == 3 {
            // The reply before was basic: its own transmit timestamp was
            // the estimate of what the kernel stamped.
            let estimated = ntp_to_unix_ns(previous.reply.transmit_ts);
            assert!(
                (exact - estimated).abs() < 1_000_000,
                "{name}: exact {exact} vs estimated {estimated}"
            );
        }
        assert_ne!(e.reply.transmit_ts, e.reply.receive_ts);
        previous = e;
    }
    // The same origin again (a retransmission, a replay): the pair was
    // taken, so the reply is basic.
    let again = exchange(&c, run.server, previous.reply.receive_ts, 11);
    assert!(is_interleaved(&again), "{name}: the first to name it");
    let replay = exchange(&c, run.server, previous.reply.receive_ts, 12);
    assert!(!is_interleaved(&replay), "{name}: a pair serves one reply");
    // A clock step: pairs kept before it are not served after it.
    let before_step = exchange(&c, run.server, replay.reply.receive_ts, 13);
    assert!(is_interleaved(&before_step), "{name}");
    let mut stepped = ServerState::unsynchronized(-20);
    stepped.clock_steps = 1;
    let mut publisher = run.publisher;
    publisher.publish(&stepped);
    let after_step = exchange(&c, run.server, before_step.reply.receive_ts, 14);
    assert!(!is_interleaved(&after_step), "{name}: served across a step");
    let resumed = exchange(&c, run.server, after_step.reply.receive_ts, 15);
    assert!(is_interleaved(&resumed), "{name}: resumes after the step");
    let run = Running { publisher, ..run };
    let stats = run.stop();
    let x = &stats.xleave;
    assert_eq!(x.interleaved.get(), 8 + 1 + 1 + 1, "{name}");
    assert_eq!(
        x.missed.get(),
        1 + 1 + 1,
        "{name}: exchange 2, the replay, after the step"
    );
    assert!(table.held() <= 2, "{name}: {}", table.held());
}

#[test]
fn an_rfc_9769_client_gets_interleaved_replies_from_its_third_exchange() {
    for backend in backends() {
        check_interleaved_exchanges(backend);
    }
}

#[test]
fn with_the_mode_off_every_reply_is_basic() {
    for backend in backends() {
        let listener = open_listen_socket("127.0.0.1:0".parse().unwrap(), DEFAULT_RCVBUF).unwrap();
        let run = start(backend, listener, None);
        let c = client();
        let mut previous = exchange(&c, run.server, NtpTimestamp::ZERO, 1);
        for n in 2..6 {
            let e = exchange(&c, run.server, previous.reply.receive_ts, n);
            assert!(!is_interleaved(&e), "{}", backend.name());
            previous = e;
        }
        let stats = run.stop();
        assert_eq!(stats.xleave.interleaved.get(), 0);
        assert_eq!(stats.xleave.kept.get(), 0);
    }
}
