//! One small NTP server for the tests of both packages (tachyon's
//! integration tests and ntp-blast's, which include this file by path):
//! answers each request in mode 4 from a clock that is the host's plus a
//! chosen offset and frequency error, after a test's hook has seen (and
//! perhaps changed, or dropped) the reply. Loopback only, bounded in time.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tachyon::proto::{Header, LeapIndicator, Mode, NtpShort, NtpTimestamp};

/// What the server does with request number `n` (from 1): it may change the
/// reply, and returns whether to send it.
pub type Hook = Box<dyn FnMut(u64, &mut Header) -> bool + Send>;

/// Sends every reply unchanged.
pub fn honest() -> Hook {
    Box::new(|_, _| true)
}

/// The server's clock: the host's, plus `offset` seconds, running `ppm` fast.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub offset: f64,
    pub ppm: f64,
}

impl Clock {
    pub const HOST: Clock = Clock {
        offset: 0.0,
        ppm: 0.0,
    };

    fn now(&self, started: Instant) -> NtpTimestamp {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let host = NtpTimestamp::from_unix(d.as_secs() as i64, d.subsec_nanos());
        host.add_seconds(self.offset + self.ppm * 1e-6 * started.elapsed().as_secs_f64())
    }
}

/// What the server saw, once stopped.
#[derive(Debug, Default)]
pub struct Seen {
    /// Source addresses of the requests.
    pub peers: HashSet<IpAddr>,
    /// Replies sent.
    pub answered: u64,
}

pub struct FakeNtp {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Seen>>,
}

impl FakeNtp {
    /// Serves on `bind` at `stratum` until stopped (60 s at most).
    pub fn start(
        bind: impl ToSocketAddrs,
        stratum: u8,
        clock: Clock,
        mut hook: Hook,
    ) -> std::io::Result<FakeNtp> {
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let give_up = started + Duration::from_secs(60);
            let mut seen = Seen::default();
            let mut buf = [0u8; 1024];
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) && Instant::now() < give_up {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let t2 = clock.now(started);
                seen.peers.insert(from.ip());
                let Some(request) = Header::parse(&buf[..len]) else {
                    continue;
                };
                n += 1;
                let mut reply = Header {
                    leap: LeapIndicator::NoWarning,
                    version: request.version,
                    mode: Mode::Server,
                    stratum,
                    poll: request.poll,
                    precision: -20,
                    root_delay: NtpShort(0),
                    root_dispersion: NtpShort::from_seconds(0.0001),
                    reference_id: if stratum == 1 {
                        *b"TEST"
                    } else {
                        [127, 0, 0, 1]
                    },
                    reference_ts: t2.add_seconds(-16.0),
                    origin_ts: request.transmit_ts,
                    receive_ts: t2,
                    transmit_ts: NtpTimestamp::ZERO,
                };
                if !hook(n, &mut reply) {
                    continue;
                }
                if reply.transmit_ts.is_zero() {
                    reply.transmit_ts = clock.now(started);
                }
                if socket.send_to(&reply.to_bytes(), from).is_ok() {
                    seen.answered += 1;
                }
            }
            seen
        });
        Ok(FakeNtp {
            addr,
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the server and says what it saw.
    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for FakeNtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
