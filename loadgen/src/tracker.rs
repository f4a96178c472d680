//! Outstanding requests, one ring per thread.
//!
//! Every request carries a random 64-bit nonce in its transmit timestamp; the
//! server copies it into the origin timestamp of its answer. The low bits of the
//! nonce are the request's slot in the ring (its sequence number modulo the
//! ring size), the high bits are random, so an answer finds its request with one
//! index and one compare, and a forged or stale origin does not match. Slots are
//! reused in send order; the ring is sized so that a slot comes round again only
//! long after its request has timed out, so a late answer is still recognised.

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Never used, or allocated and then not sent.
    Free,
    /// Allocated for a batch being sent.
    Pending,
    /// Sent, waiting for an answer.
    Outstanding,
    /// Answered in time (validly or not).
    Answered,
    /// Timed out; counted lost.
    Expired,
    /// Timed out and later answered.
    AnsweredLate,
}

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub nonce: u64,
    /// Send time T1, nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub t1_ns: i64,
    /// Index of the client (socket) within the thread.
    pub client: u32,
    /// Step of the run during which it was sent.
    pub step: u16,
    pub state: State,
    /// Whether `t1_ns` is a kernel TX timestamp.
    pub kernel_t1: bool,
}

const EMPTY: Entry = Entry {
    nonce: 0,
    t1_ns: 0,
    client: 0,
    step: 0,
    state: State::Free,
    kernel_t1: false,
};

/// In the interleaved mode (RFC 9769) a request carries its nonce twice: as
/// its transmit timestamp, which a basic reply echoes as its origin, and,
/// changed by this mask in the high bits (so still in the same slot), as its
/// receive timestamp, which an interleaved reply echoes instead.
pub const INTERLEAVED_NONCE: u64 = 0x5a5a_0000_0000_0000;

/// Result of looking up the origin timestamp of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Matches a request waiting for its answer: the slot.
    Outstanding(usize),
    /// Matches a request that was already answered.
    Duplicate,
    /// Matches a request that timed out (the first such answer).
    Late,
    /// Matches nothing we sent (or a slot long since reused).
    Unknown,
}

/// A small, fast generator for nonces (xorshift64*). Not cryptographic: the
/// nonces only need to be unpredictable enough that a stray packet does not match.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // SplitMix64 of the seed, so close seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// A seed from the process's random hash keys, the time and `salt`.
    pub fn seed_from_entropy(salt: u64) -> u64 {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        h.finish()
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Largest ring: 8 s of requests at a million per second, which is about
/// what one thread can send.
const MAX_SLOTS: usize = 1 << 23;

pub struct Tracker {
    ring: Vec<Entry>,
    mask: u64,
    /// Sequence number of the next request.
    next: u64,
    /// Oldest sequence number that may still be outstanding.
    oldest: u64,
    outstanding: usize,
    rng: Rng,
}

impl Tracker {
    /// A ring of at least `min_slots` slots, rounded up to a power of two,
    /// within 1024..=2^23 (24 bytes a slot: 192 MiB at most).
    pub fn new(min_slots: usize, seed: u64) -> Self {
        let slots = min_slots.clamp(1024, MAX_SLOTS).next_power_of_two();
        Tracker {
            ring: vec![EMPTY; slots],
            mask: slots as u64 - 1,
            next: 0,
            oldest: 0,
            outstanding: 0,
            rng: Rng::new(seed),
        }
    }

    /// Slots needed so that a slot is not reused within `reuse_after_s` seconds
    /// at `rate` requests per second.
    pub fn slots_for(rate: f64, reuse_after_s: f64) -> usize {
        (rate * reuse_after_s).ceil().min(MAX_SLOTS as f64) as usize
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Takes the next slot for a request of `client` in `step` and returns the
    /// slot and its nonce. If that slot still holds an outstanding request (the
    /// ring is too small for the rate and timeout), it is expired first and
    /// returned so that the caller counts it lost.
    pub fn alloc(&mut self, client: u32, step: u16) -> (usize, u64, Option<Entry>) {
        let slot = (self.next & self.mask) as usize;
        self.next += 1;
        let evicted = match self.ring[slot].state {
            State::Outstanding => {
                self.outstanding -= 1;
                Some(self.ring[slot])
            }
            _ => None,
        };
        if self.oldest + (self.ring.len() as u64) < self.next {
            self.oldest = self.next - self.ring.len() as u64;
        }
        let mut nonce = (self.rng.next_u64() & !self.mask) | slot as u64;
        if nonce >> 32 == 0 {
            // Keep the seconds field non-zero: a zero transmit timestamp is
            // "unknown" to some servers.
            nonce |= 1 << 63;
        }
        self.ring[slot] = Entry {
            nonce,
            t1_ns: 0,
            client,
            step,
            state: State::Pending,
            kernel_t1: false,
        };
        (slot, nonce, evicted)
    }

    /// The request in `slot` went out at `t1_ns`.
    pub fn commit(&mut self, slot: usize, t1_ns: i64) {
        let e = &mut self.ring[slot];
        if e.state == State::Pending {
            e.state = State::Outstanding;
            e.t1_ns = t1_ns;
            self.outstanding += 1;
        }
    }

    /// The request in `slot` was not sent after all.
    pub fn cancel(&mut self, slot: usize) {
        let e = &mut self.ring[slot];
        if e.state == State::Pending {
            e.state = State::Free;
        }
    }

    /// Replaces the send time of `slot` with a kernel TX timestamp, if the slot
    /// still holds the request with `nonce`.
    pub fn set_kernel_t1(&mut self, slot: usize, nonce: u64, t1_ns: i64) -> bool {
        let e = &mut self.ring[slot];
        if e.nonce == nonce && e.state != State::Free && e.state != State::Pending {
            e.t1_ns = t1_ns;
            e.kernel_t1 = true;
            true
        } else {
            false
        }
    }

    pub fn entry(&self, slot: usize) -> &Entry {
        &self.ring[slot]
    }

    /// Finds the request an origin timestamp answers, and marks it answered
    /// (so a second answer is a duplicate).
    #[cfg(test)]
    pub fn lookup(&mut self, origin: u64) -> Lookup {
        self.lookup_reply(origin, false).0
    }

    /// Like [`Tracker::lookup`]; with `interleaved`, an origin equal to a
    /// request's second nonce ([`INTERLEAVED_NONCE`]) also matches, and the
    /// second value says it was that one (an interleaved reply).
    pub fn lookup_reply(&mut self, origin: u64, interleaved: bool) -> (Lookup, bool) {
        let slot = (origin & self.mask) as usize;
        let e = &mut self.ring[slot];
        let by_receive = interleaved && e.nonce ^ INTERLEAVED_NONCE == origin;
        if e.nonce != origin && !by_receive {
            return (Lookup::Unknown, false);
        }
        let found = match e.state {
            State::Outstanding => {
                e.state = State::Answered;
                self.outstanding -= 1;
                Lookup::Outstanding(slot)
            }
            State::Answered | State::AnsweredLate => Lookup::Duplicate,
            State::Expired => {
                e.state = State::AnsweredLate;
                Lookup::Late
            }
            State::Free | State::Pending => Lookup::Unknown,
        };
        (found, by_receive)
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.ring.len()
    }

    /// Expires every request sent at or before `deadline_ns` (T1 + timeout has
    /// passed) and still unanswered, calling `lost` for each. Sweeps in send
    /// order and stops at the first request still in time.
    pub fn expire(&mut self, deadline_ns: i64, mut lost: impl FnMut(&Entry)) {
        while self.oldest < self.next {
            let slot = (self.oldest & self.mask) as usize;
            let e = &mut self.ring[slot];
            match e.state {
                State::Outstanding => {
                    if e.t1_ns > deadline_ns {
                        return;
                    }
                    e.state = State::Expired;
                    self.outstanding -= 1;
                    lost(e);
                }
                State::Pending => return,
                _ => {}
            }
            self.oldest += 1;
        }
    }

    /// Expires everything still outstanding (end of the run).
    pub fn expire_all(&mut self, lost: impl FnMut(&Entry)) {
        self.expire(i64::MAX, lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_late_duplicate_unknown() {
        let mut t = Tracker::new(1024, 42);
        let (a, na, ev) = t.alloc(0, 0);
        assert!(ev.is_none());
        t.commit(a, 1_000);
        let (b, nb, _) = t.alloc(1, 0);
        t.commit(b, 2_000);
        let (c, _nc, _) = t.alloc(1, 0);
        t.cancel(c);
        assert_eq!(t.outstanding(), 2);
        assert_ne!(na, nb);
        assert_eq!(na & 1023, a as u64);

        assert_eq!(t.lookup(na), Lookup::Outstanding(a));
        assert_eq!(t.lookup(na), Lookup::Duplicate);
        assert_eq!(t.lookup(na ^ (1 << 40)), Lookup::Unknown);
        assert_eq!(t.outstanding(), 1);

        let mut lost = Vec::new();
        t.expire(1_500, |e| lost.push(e.nonce));
        assert!(lost.is_empty()); // b was sent at 2000, after the deadline
        t.expire(2_000, |e| lost.push(e.nonce));
        assert_eq!(lost, [nb]);
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.lookup(nb), Lookup::Late);
        assert_eq!(t.lookup(nb), Lookup::Duplicate);
    }

    #[test]
    fn reused_slot_forgets_the_old_nonce() {
        let mut t = Tracker::new(1024, 7);
        let (s0, n0, _) = t.alloc(0, 0);
        t.commit(s0, 0);
        t.expire_all(|_| {});
        for _ in 1..1024 {
            let (s, _, _) = t.alloc(0, 0);
            t.commit(s, 0);
        }
        // The 1025th request takes slot 0 again; the old answer is now unknown.
        let (s, n, evicted) = t.alloc(0, 1);
        assert_eq!(s, s0);
        assert!(evicted.is_none()); // it had expired
        t.commit(s, 5);
        assert_eq!(t.lookup(n0), Lookup::Unknown);
        assert_eq!(t.lookup(n), Lookup::Outstanding(s));
    }

    #[test]
    fn ring_too_small_evicts_outstanding() {
        let mut t = Tracker::new(1024, 9);
        for _ in 0..1024 {
            let (s, _, _) = t.alloc(0, 0);
            t.commit(s, 0);
        }
        let (_, _, evicted) = t.alloc(0, 0);
        assert!(evicted.is_some());
        assert_eq!(t.outstanding(), 1023);
    }

    #[test]
    fn an_interleaved_reply_is_found_by_the_second_nonce() {
        let mut t = Tracker::new(1024, 5);
        let (s, n, _) = t.alloc(0, 0);
        t.commit(s, 0);
        let second = n ^ INTERLEAVED_NONCE;
        assert_eq!(second & 1023, s as u64, "same slot");
        assert_eq!(t.lookup(second), Lookup::Unknown, "only when asked for");
        assert_eq!(t.lookup_reply(second, true), (Lookup::Outstanding(s), true));
        assert_eq!(t.lookup_reply(n, true), (Lookup::Duplicate, false));
    }

    #[test]
    fn entries_stay_small() {
        assert!(std::mem::size_of::<Entry>() <= 24);
        assert_eq!(Tracker::new(1, 0).ring.len(), 1024);
        assert_eq!(Tracker::new(usize::MAX, 0).ring.len(), MAX_SLOTS);
        assert_eq!(Tracker::new(5000, 0).ring.len(), 8192);
    }

    #[test]
    fn nonces_look_random_and_non_zero() {
        let mut t = Tracker::new(1 << 16, 1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let (s, n, _) = t.alloc(0, 0);
            t.commit(s, 0);
            assert_ne!(n >> 32, 0);
            assert!(seen.insert(n >> 16));
        }
    }
}
