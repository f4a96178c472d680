//! The server state the sync thread publishes and every worker reads, per batch,
//! through a seqlock.
//!
//! The seqlock is free of undefined behaviour: every field is an `AtomicU64` word
//! read and written with `Relaxed`, ordered by fences around the sequence counter
//! (docs/architecture.md). A reader never blocks the writer and retries only when a
//! write overlapped its read.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use crate::proto::{LeapIndicator, NtpTimestamp, SystemInfo};

/// A sequence lock over `N` 64-bit words, for one writer and many readers.
pub struct SeqLock<const N: usize> {
    seq: AtomicU64,
    words: [AtomicU64; N],
}

impl<const N: usize> SeqLock<N> {
    pub fn new(initial: [u64; N]) -> Self {
        SeqLock {
            seq: AtomicU64::new(0),
            words: initial.map(AtomicU64::new),
        }
    }

    /// Stores new words. Callers must guarantee a single writer at a time
    /// ([`StatePublisher`] does by being the only handle that can write).
    fn write(&self, values: &[u64; N]) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Readers that see any of the new words below must also see the odd counter.
        fence(Ordering::Release);
        for (word, value) in self.words.iter().zip(values) {
            word.store(*value, Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Returns a consistent copy of the words.
    pub fn read(&self) -> [u64; N] {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            let values: [u64; N] = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
            // The word loads above happen before the second counter load.
            fence(Ordering::Acquire);
            let s2 = self.seq.load(Ordering::Relaxed);
            if s1 & 1 == 0 && s1 == s2 {
                return values;
            }
            std::hint::spin_loop();
        }
    }

    /// How many writes have completed (for tests and metrics).
    pub fn version(&self) -> u64 {
        self.seq.load(Ordering::Acquire) / 2
    }
}

/// The software clock's correction: served time = system time + offset +
/// frequency × (system time − epoch). The system-clock mode publishes zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClockCorrection {
    /// Seconds.
    pub offset: f64,
    /// Dimensionless (1e-6 is 1 ppm).
    pub frequency: f64,
    /// System time (Unix nanoseconds) at which `offset` applies.
    pub epoch_unix_ns: i64,
}

impl ClockCorrection {
    /// The served time, in Unix nanoseconds, for a system time in Unix nanoseconds.
    pub fn apply(&self, system_unix_ns: i64) -> i64 {
        if self.offset == 0.0 && self.frequency == 0.0 {
            return system_unix_ns;
        }
        let elapsed = (system_unix_ns - self.epoch_unix_ns) as f64 * 1e-9;
        let correction = self.offset + self.frequency * elapsed;
        system_unix_ns.saturating_add((correction * 1e9).round() as i64)
    }

    /// The served time as an NTP timestamp.
    pub fn served_timestamp(&self, system_unix_ns: i64) -> NtpTimestamp {
        unix_ns_to_ntp(self.apply(system_unix_ns))
    }
}

/// Converts Unix nanoseconds to an NTP timestamp.
pub fn unix_ns_to_ntp(unix_ns: i64) -> NtpTimestamp {
    NtpTimestamp::from_unix(
        unix_ns.div_euclid(1_000_000_000),
        unix_ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Everything the workers need from the sync thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerState {
    pub system: SystemInfo,
    pub correction: ClockCorrection,
    /// How many times the clock was stepped since the start: timestamps
    /// kept from before a step are not to be served after it.
    pub clock_steps: u64,
}

impl ServerState {
    pub fn unsynchronized(precision: i8) -> Self {
        ServerState {
            system: SystemInfo::unsynchronized(precision),
            correction: ClockCorrection::default(),
            clock_steps: 0,
        }
    }
}

const WORDS: usize = 8;

fn encode(state: &ServerState) -> [u64; WORDS] {
    let sys = &state.system;
    let head = (sys.leap as u64)
        | (sys.stratum as u64) << 8
        | (sys.precision as u8 as u64) << 16
        | (u32::from_be_bytes(sys.reference_id) as u64) << 32;
    [
        head,
        sys.root_delay.to_bits(),
        sys.root_dispersion.to_bits(),
        sys.reference_time.to_bits(),
        state.correction.offset.to_bits(),
        state.correction.frequency.to_bits(),
        state.correction.epoch_unix_ns as u64,
        state.clock_steps,
    ]
}

fn decode(words: &[u64; WORDS]) -> ServerState {
    let head = words[0];
    ServerState {
        system: SystemInfo {
            leap: LeapIndicator::from_bits(head as u8),
            stratum: (head >> 8) as u8,
            precision: (head >> 16) as u8 as i8,
            reference_id: ((head >> 32) as u32).to_be_bytes(),
            root_delay: f64::from_bits(words[1]),
            root_dispersion: f64::from_bits(words[2]),
            reference_time: NtpTimestamp::from_bits(words[3]),
        },
        correction: ClockCorrection {
            offset: f64::from_bits(words[4]),
            frequency: f64::from_bits(words[5]),
            epoch_unix_ns: words[6] as i64,
        },
        clock_steps: words[7],
    }
}

/// The only handle that can publish state; not `Clone`, so there is one writer.
pub struct StatePublisher {
    lock: Arc<SeqLock<WORDS>>,
}

/// A cheap, cloneable read handle for workers and the control plane.
#[derive(Clone)]
pub struct StateReader {
    lock: Arc<SeqLock<WORDS>>,
}

/// Creates the publisher and a reader for an initial state.
pub fn shared_state(initial: ServerState) -> (StatePublisher, StateReader) {
    let lock = Arc::new(SeqLock::new(encode(&initial)));
    (StatePublisher { lock: lock.clone() }, StateReader { lock })
}

impl StatePublisher {
    pub fn publish(&mut self, state: &ServerState) {
        self.lock.write(&encode(state));
    }

    pub fn reader(&self) -> StateReader {
        StateReader {
            lock: self.lock.clone(),
        }
    }
}

impl StateReader {
    pub fn read(&self) -> ServerState {
        decode(&self.lock.read())
    }

    pub fn version(&self) -> u64 {
        self.lock.version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_for(n: u64) -> ServerState {
        ServerState {
            system: SystemInfo {
                leap: LeapIndicator::from_bits((n % 3) as u8),
                stratum: (n % 15) as u8 + 1,
                precision: -((n % 30) as i8),
                root_delay: n as f64 * 0.5,
                root_dispersion: n as f64 * 0.25,
                reference_id: (n as u32).to_be_bytes(),
                reference_time: NtpTimestamp::from_bits(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            },
            correction: ClockCorrection {
                offset: -(n as f64),
                frequency: n as f64 * 1e-9,
                epoch_unix_ns: n as i64 * 3,
            },
            clock_steps: n / 7,
        }
    }

    /// Recovers n from a state and checks every field agrees with it.
    fn check_consistent(s: &ServerState) -> u64 {
        let n = (s.system.root_delay * 2.0) as u64;
        assert_eq!(*s, state_for(n), "torn read: fields from different writes");
        n
    }

    #[test]
    fn encode_decode_round_trip() {
        for n in [0u64, 1, 7, 1 << 20, u32::MAX as u64] {
            assert_eq!(decode(&encode(&state_for(n))), state_for(n));
        }
        let unsync = ServerState::unsynchronized(-20);
        assert_eq!(decode(&encode(&unsync)), unsync);
    }

    #[test]
    fn publish_then_read() {
        let (mut publisher, reader) = shared_state(state_for(0));
        assert_eq!(reader.read(), state_for(0));
        publisher.publish(&state_for(5));
        assert_eq!(reader.read(), state_for(5));
        assert_eq!(reader.version(), 1);
    }

    /// One writer, several readers, millions of reads: no torn state, and each
    /// reader sees versions only move forward.
    #[test]
    fn seqlock_torture() {
        use std::sync::atomic::AtomicBool;
        const READERS: usize = 3;
        const READS_PER_READER: usize = 1_000_000;
        let (mut publisher, reader) = shared_state(state_for(0));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let reader = reader.clone();
                std::thread::spawn(move || {
                    let mut last = 0u64;
                    let mut distinct = 0u64;
                    for _ in 0..READS_PER_READER {
                        let n = check_consistent(&reader.read());
                        assert!(n >= last, "went back from {last} to {n}");
                        if n != last {
                            distinct += 1;
                        }
                        last = n;
                    }
                    distinct
                })
            })
            .collect();
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    publisher.publish(&state_for(n));
                }
                n
            })
        };
        let seen: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().unwrap();
        assert!(writes > 0);
        // The readers really did race the writer.
        assert!(seen > 0, "readers never observed a new state");
        eprintln!("seqlock torture: {writes} writes, {seen} state changes observed by {READERS}x{READS_PER_READER} reads");
    }

    #[test]
    fn correction_applies_offset_and_frequency() {
        let c = ClockCorrection {
            offset: 0.5,
            frequency: 10e-6,
            epoch_unix_ns: 1_000_000_000_000,
        };
        // 100 s after the epoch: 0.5 s + 10 ppm x 100 s = 0.501 s.
        let t = 1_000_000_000_000 + 100_000_000_000;
        assert_eq!(c.apply(t) - t, 501_000_000);
        assert_eq!(ClockCorrection::default().apply(t), t);
    }

    #[test]
    fn unix_ns_to_ntp_handles_negative_and_fraction() {
        let ts = unix_ns_to_ntp(1_700_000_000_250_000_000);
        assert_eq!(ts.fraction(), 1 << 30);
        let before_epoch = unix_ns_to_ntp(-500_000_000);
        assert_eq!(
            before_epoch.seconds() as i64,
            super::super::proto::time::UNIX_TO_NTP_SECONDS - 1
        );
        assert_eq!(before_epoch.fraction(), 1 << 31);
    }
}
