//! The pairs kept for interleaved replies (RFC 9769; the rules are in
//! `proto::interleave`): for each reply to a request that asked for the
//! interleaved mode, its receive timestamp and the kernel's stamp of its
//! departure, until the client's next request names that receive timestamp.
//!
//! One table of fixed memory shared by every worker without locks, like the
//! rate limiter's. An entry is one 64-bit word: a 38-bit tag (a keyed hash of
//! the client's address, the receive timestamp as sent and the clock-step
//! generation) and the 26-bit interval from the request's arrival to the
//! reply's departure in nanoseconds (up to 67 ms; a reply that left later is
//! not kept). The exact transmit timestamp is the client's origin (our
//! receive timestamp) plus that interval. The bucket is chosen by other bits
//! of the same hash, so a pair is told from another by 38 + log2(buckets)
//! bits: a false match, which would give a client another reply's interval,
//! takes about 2^50 lookups at the default size.
//!
//! Entries are written and removed with a compare-and-swap of the whole word,
//! so a reader never sees half an entry, and a pair is taken by exactly one
//! reply (the compare-and-swap to empty) however many requests name it. A
//! full bucket gives up a random way: clients poll at different intervals,
//! and under pressure random replacement keeps some of every age where
//! evicting the oldest would keep none of those polling slower than the
//! table's span. Memory is mapped zeroed, in huge pages where the kernel
//! gives them, and faulted in when the table is made: the first write to a
//! huge page may wait for the kernel to compact memory, not in the hot path. A clock step changes the generation, which makes
//! every pair kept before it unreachable; the first worker to see the step
//! also empties the table.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

#[cfg(tachyon_loom)]
use loom::sync::atomic::AtomicU64;
#[cfg(not(tachyon_loom))]
use std::sync::atomic::AtomicU64;

use crate::proto::NtpTimestamp;

/// Ways per bucket: one cache line.
const WAYS: usize = 8;
/// Bits of an entry that hold the interval, in nanoseconds.
const INTERVAL_BITS: u32 = 26;
/// The longest interval kept (67 ms).
pub const MAX_INTERVAL_NS: i64 = (1 << INTERVAL_BITS) - 1;
/// Tries at keeping a pair before giving up (other workers changed the bucket).
const KEEP_ATTEMPTS: usize = 4;
/// The smallest and largest tables, in entries.
pub const MIN_ENTRIES: usize = if cfg!(tachyon_loom) { WAYS } else { 1024 };
pub const MAX_ENTRIES: usize = 1 << 30;
/// The default: 16 Mi pairs, 128 MiB: the requests of three 64-second polls
/// at 90k interleaved requests/s, or one at 260k/s.
pub const DEFAULT_ENTRIES: usize = 1 << 24;

#[repr(C, align(64))]
struct Bucket {
    ways: [AtomicU64; WAYS],
}

/// What a worker needs to keep the pair of one reply: where it goes and how
/// it is told from others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepPair {
    hash: u64,
}

/// What became of a pair offered to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// Kept in an empty way.
    Kept,
    /// Kept in place of another pair, which is lost.
    Replaced,
    /// Another reply carried the same receive timestamp to the same client:
    /// neither can be told from the other, so neither is kept (as chrony);
    /// the other one is removed.
    Duplicate,
    /// Not kept: the reply left too late, or before its request arrived (a
    /// clock step), or other workers kept changing its bucket.
    NotKept,
}

pub struct XleaveTable {
    #[cfg(not(tachyon_loom))]
    buckets: Buckets,
    #[cfg(tachyon_loom)]
    buckets: Box<[Bucket]>,
    mask: u64,
    seed: u64,
    /// The clock-step generation the table was last emptied for.
    emptied_for: AtomicU64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finalizer.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl KeepPair {
    fn tag(self) -> u64 {
        // The high 38 bits, never zero (zero is an empty way).
        (self.hash >> INTERVAL_BITS).max(1)
    }
}

fn entry(tag: u64, interval_ns: u64) -> u64 {
    (tag << INTERVAL_BITS) | interval_ns
}

fn tag_of(word: u64) -> u64 {
    word >> INTERVAL_BITS
}

impl XleaveTable {
    /// A table of at least `entries` pairs (rounded up to a power of two,
    /// within [`MIN_ENTRIES`]..=[`MAX_ENTRIES`]).
    pub fn new(entries: usize) -> XleaveTable {
        let entries = entries.clamp(MIN_ENTRIES, MAX_ENTRIES).next_power_of_two();
        let buckets = entries / WAYS;
        XleaveTable {
            buckets: zeroed_buckets(buckets),
            mask: buckets as u64 - 1,
            // A per-process secret, so nobody can aim pairs at one bucket
            // (fixed in the model test, which must replay each run exactly).
            seed: if cfg!(tachyon_loom) {
                0x71ea
            } else {
                std::collections::hash_map::RandomState::new().hash_one(0x71ea_u64)
            },
            emptied_for: AtomicU64::new(0),
        }
    }

    /// Pairs the table holds at most.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Bytes of table memory.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    /// Where the pair of a reply to `client` with receive timestamp
    /// `receive` (as sent, marked) goes, in clock-step generation `steps`.
    pub fn pair(&self, client: IpAddr, receive: NtpTimestamp, steps: u64) -> KeepPair {
        let address = match client.to_canonical() {
            IpAddr::V4(v4) => u32::from(v4) as u128 | 1 << 64,
            IpAddr::V6(v6) => u128::from(v6),
        };
        let h = mix(self.seed ^ (address >> 64) as u64);
        let h = mix(h ^ address as u64);
        let h = mix(h ^ steps);
        KeepPair {
            hash: mix(h ^ receive.to_bits()),
        }
    }

    fn bucket(&self, pair: KeepPair) -> &Bucket {
        &self.buckets[(pair.hash & self.mask) as usize]
    }

    /// Keeps a reply's pair: the interval from its request's arrival to its
    /// departure.
    pub fn keep(&self, pair: KeepPair, interval_ns: i64) -> Kept {
        if !(0..=MAX_INTERVAL_NS).contains(&interval_ns) {
            return Kept::NotKept;
        }
        let bucket = self.bucket(pair);
        let tag = pair.tag();
        let word = entry(tag, interval_ns as u64);
        for _ in 0..KEEP_ATTEMPTS {
            let seen: [u64; WAYS] = std::array::from_fn(|i| bucket.ways[i].load(Ordering::Relaxed));
            if let Some(way) = seen.iter().position(|&w| w != 0 && tag_of(w) == tag) {
                // If it changed meanwhile it was taken or replaced: gone
                // either way, counted by whoever did it.
                let removed = bucket.ways[way]
                    .compare_exchange(seen[way], 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
                return if removed {
                    Kept::Duplicate
                } else {
                    Kept::NotKept
                };
            }
            let (way, replacing) = match seen.iter().position(|&w| w == 0) {
                Some(empty) => (empty, false),
                // Bits of the hash that chose neither the bucket nor the tag.
                None => (((pair.hash >> 23) as usize) % WAYS, true),
            };
            if bucket.ways[way]
                .compare_exchange(seen[way], word, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return if replacing {
                    Kept::Replaced
                } else {
                    Kept::Kept
                };
            }
        }
        Kept::NotKept
    }

    /// Takes the pair kept for `pair`, once: the interval from the arrival
    /// of the request it answered to the reply's departure, in nanoseconds.
    pub fn take(&self, pair: KeepPair) -> Option<i64> {
        let bucket = self.bucket(pair);
        let tag = pair.tag();
        for way in &bucket.ways {
            let word = way.load(Ordering::Relaxed);
            if word != 0
                && tag_of(word) == tag
                && way
                    .compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return Some((word & MAX_INTERVAL_NS as u64) as i64);
            }
        }
        None
    }

    /// After a clock step to generation `steps`: empties the table, once per
    /// generation (the first worker to ask does it). Returns how many pairs
    /// it removed, or `None` when another worker did or does it.
    pub fn empty_for_step(&self, steps: u64) -> Option<u64> {
        let before = self.emptied_for.load(Ordering::Relaxed);
        if before >= steps
            || self
                .emptied_for
                .compare_exchange(before, steps, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        let mut removed = 0;
        for bucket in self.buckets.iter() {
            for way in &bucket.ways {
                if way.load(Ordering::Relaxed) != 0 && way.swap(0, Ordering::Relaxed) != 0 {
                    removed += 1;
                }
            }
        }
        Some(removed)
    }

    /// Pairs held now (a full scan: for tests).
    pub fn held(&self) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| b.ways.iter())
            .filter(|w| w.load(Ordering::Relaxed) != 0)
            .count()
    }
}

/// The table's memory: anonymous pages mapped zeroed, in huge pages where
/// the kernel gives them (`MADV_HUGEPAGE`), faulted in when it is made. Lookups land anywhere in the table: with 4 KiB
/// pages each one missed the TLB, and a page walk inside a virtual machine
/// costs more than the rest of the lookup (measured: the table's two
/// operations were 7 % of a worker's time at 50k interleaved requests/s).
#[cfg(not(tachyon_loom))]
struct Buckets {
    buckets: std::ptr::NonNull<Bucket>,
    len: usize,
    map: *mut libc::c_void,
    map_len: usize,
}

#[cfg(not(tachyon_loom))]
impl std::ops::Deref for Buckets {
    type Target = [Bucket];

    fn deref(&self) -> &[Bucket] {
        // SAFETY: `buckets` points at `len` buckets inside the live mapping,
        // zero-initialized by the kernel (a valid value: empty ways), only
        // ever accessed through atomics.
        unsafe { std::slice::from_raw_parts(self.buckets.as_ptr(), self.len) }
    }
}

#[cfg(not(tachyon_loom))]
impl Drop for Buckets {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `zeroed_buckets`, unmapped once; no
        // reference into it outlives `self`.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

// SAFETY: the buckets are atomic words, shared by design; the raw pointers
// are only the mapping's address.
#[cfg(not(tachyon_loom))]
unsafe impl Send for Buckets {}
// SAFETY: as for Send: every access goes through the atomics.
#[cfg(not(tachyon_loom))]
unsafe impl Sync for Buckets {}

/// `buckets` empty buckets (see [`Buckets`]).
#[cfg(not(tachyon_loom))]
fn zeroed_buckets(buckets: usize) -> Buckets {
    const HUGE_PAGE: usize = 2 << 20;
    let len = buckets.max(1);
    let bytes = len * std::mem::size_of::<Bucket>();
    // Room to start the table on a huge page boundary.
    let map_len = bytes + HUGE_PAGE;
    // SAFETY: a fresh private anonymous mapping; no existing memory is
    // touched.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        let layout = std::alloc::Layout::array::<Bucket>(len).expect("table size");
        std::alloc::handle_alloc_error(layout);
    }
    let start = (map as usize).next_multiple_of(HUGE_PAGE);
    // SAFETY: `start..start + bytes` lies inside the mapping; the advice
    // only changes how it is backed (refused where THP is off: no matter).
    unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
    // Faulted in now, not by the first interleaved requests: a huge page's
    // first write may wait for the kernel to compact memory, and did, losing
    // the requests of the 200-400 ms it took (docs/benchmarks.md).
    // SAFETY: as above; populating only faults the pages in, zeroed.
    let populated =
        unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_POPULATE_WRITE) } == 0;
    let table = Buckets {
        buckets: std::ptr::NonNull::new(start as *mut Bucket)
            .expect("mmap gave a non-null address"),
        len,
        map,
        map_len,
    };
    if !populated {
        // Before Linux 5.14: one write per 4 KiB page.
        for bucket in table.iter().step_by(4096 / std::mem::size_of::<Bucket>()) {
            bucket.ways[0].store(0, Ordering::Relaxed);
        }
    }
    table
}

#[cfg(tachyon_loom)]
fn zeroed_buckets(buckets: usize) -> Box<[Bucket]> {
    (0..buckets)
        .map(|_| Bucket {
            ways: std::array::from_fn(|_| AtomicU64::new(0)),
        })
        .collect()
}

#[cfg(all(test, tachyon_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Run with `RUSTFLAGS="--cfg tachyon_loom" cargo test --lib --release loom`.
    ///
    /// One worker keeps a pair while two requests naming it are answered on
    /// two other workers (a retransmission, or a replay): whatever the
    /// interleaving, at most one of them gets the pair, it gets the interval
    /// that was kept, and once the keep is done and both lookups failed the
    /// pair is still there.
    #[test]
    fn a_pair_is_taken_once_and_intact() {
        loom::model(|| {
            let table = Arc::new(XleaveTable::new(WAYS));
            let client: IpAddr = "192.0.2.5".parse().unwrap();
            let pair = table.pair(client, NtpTimestamp(0xE8F0_0000_0000_0001), 0);
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let table = table.clone();
                    loom::thread::spawn(move || table.take(pair))
                })
                .collect();
            assert_eq!(table.keep(pair, 12_345), Kept::Kept);
            let got: Vec<Option<i64>> = takers.into_iter().map(|t| t.join().unwrap()).collect();
            let taken: Vec<i64> = got.iter().flatten().copied().collect();
            assert!(taken.len() <= 1, "{got:?}");
            assert!(taken.iter().all(|&i| i == 12_345), "{got:?}");
            if taken.is_empty() {
                assert_eq!(table.take(pair), Some(12_345));
            }
        });
    }

    /// Two workers keep different pairs in one full bucket at once: each
    /// lookup afterwards finds its own interval or nothing, never the
    /// other's.
    #[test]
    fn racing_keeps_never_mix_pairs() {
        loom::model(|| {
            let table = Arc::new(XleaveTable::new(WAYS));
            let client: IpAddr = "192.0.2.6".parse().unwrap();
            let pairs: Vec<KeepPair> = (0..WAYS as u64 + 2)
                .map(|i| table.pair(client, NtpTimestamp(2 * i + 1), 0))
                .collect();
            for (i, p) in pairs.iter().take(WAYS).enumerate() {
                assert_eq!(table.keep(*p, i as i64), Kept::Kept);
            }
            let (a, b) = (pairs[WAYS], pairs[WAYS + 1]);
            let other = {
                let table = table.clone();
                loom::thread::spawn(move || table.keep(a, 1_000))
            };
            table.keep(b, 2_000);
            other.join().unwrap();
            assert!(matches!(table.take(a), None | Some(1_000)));
            assert!(matches!(table.take(b), None | Some(2_000)));
            for (i, p) in pairs.iter().take(WAYS).enumerate() {
                let got = table.take(*p);
                assert!(got.is_none() || got == Some(i as i64), "{got:?}");
            }
        });
    }
}

#[cfg(all(test, not(tachyon_loom)))]
mod tests {
    use super::*;

    fn client(i: u32) -> IpAddr {
        IpAddr::V4((0xc000_0200 + i).into())
    }

    fn rx(i: u64) -> NtpTimestamp {
        NtpTimestamp(0xE8F0_0000_0000_0001 + 2 * i)
    }

    #[test]
    fn a_kept_pair_is_found_once() {
        let t = XleaveTable::new(1 << 12);
        let p = t.pair(client(1), rx(1), 0);
        assert_eq!(t.keep(p, 25_000), Kept::Kept);
        assert_eq!(t.held(), 1);
        assert_eq!(t.take(p), Some(25_000));
        assert_eq!(t.take(p), None, "never reused");
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn pairs_are_told_apart_by_address_and_receive_stamp() {
        let t = XleaveTable::new(1 << 12);
        assert_eq!(t.keep(t.pair(client(1), rx(1), 0), 100), Kept::Kept);
        assert_eq!(t.take(t.pair(client(2), rx(1), 0)), None);
        assert_eq!(t.take(t.pair(client(1), rx(2), 0)), None);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(t.keep(t.pair(v6, rx(1), 0), 200), Kept::Kept);
        assert_eq!(t.take(t.pair(v6, rx(1), 0)), Some(200));
        assert_eq!(t.take(t.pair(client(1), rx(1), 0)), Some(100));
    }

    #[test]
    fn the_same_receive_stamp_twice_keeps_neither() {
        let t = XleaveTable::new(1 << 12);
        let p = t.pair(client(3), rx(7), 0);
        assert_eq!(t.keep(p, 100), Kept::Kept);
        assert_eq!(t.keep(p, 200), Kept::Duplicate);
        assert_eq!(t.take(p), None);
    }

    #[test]
    fn intervals_out_of_range_are_not_kept() {
        let t = XleaveTable::new(1 << 12);
        let p = t.pair(client(4), rx(1), 0);
        assert_eq!(t.keep(p, -1), Kept::NotKept);
        assert_eq!(t.keep(p, MAX_INTERVAL_NS + 1), Kept::NotKept);
        assert_eq!(t.keep(p, MAX_INTERVAL_NS), Kept::Kept);
        assert_eq!(t.take(p), Some(MAX_INTERVAL_NS));
        assert_eq!(t.keep(p, 0), Kept::Kept);
        assert_eq!(t.take(p), Some(0));
    }

    #[test]
    fn a_full_table_replaces_pairs_and_keeps_its_size() {
        let t = XleaveTable::new(1 << 12);
        let memory = t.memory_bytes();
        assert_eq!(memory, (1 << 12) * 8);
        let n = 1u64 << 16;
        let mut replaced = 0;
        for i in 0..n {
            match t.keep(t.pair(client(i as u32), rx(i), 0), i as i64) {
                Kept::Replaced => replaced += 1,
                Kept::Kept => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(t.memory_bytes(), memory);
        assert_eq!(t.held(), t.capacity());
        assert_eq!(replaced, n - t.capacity() as u64);
        // Whatever is found is the right interval; recent pairs mostly are.
        let mut found = 0;
        for i in n - 1024..n {
            if let Some(interval) = t.take(t.pair(client(i as u32), rx(i), 0)) {
                assert_eq!(interval, i as i64);
                found += 1;
            }
        }
        assert!(found > 700, "{found} of the last 1024");
    }

    #[test]
    fn a_clock_step_makes_old_pairs_unreachable_and_empties_the_table() {
        let t = XleaveTable::new(1 << 12);
        for i in 0..100 {
            t.keep(t.pair(client(i), rx(i as u64), 0), 5);
        }
        // After the step, the same receive stamps name nothing.
        assert_eq!(t.take(t.pair(client(1), rx(1), 1)), None);
        assert_eq!(t.empty_for_step(1), Some(100));
        assert_eq!(t.empty_for_step(1), None, "once per step");
        assert_eq!(t.held(), 0);
        assert_eq!(t.take(t.pair(client(2), rx(2), 0)), None);
    }

    #[test]
    fn sizes_are_powers_of_two_within_bounds() {
        assert_eq!(XleaveTable::new(0).capacity(), MIN_ENTRIES);
        assert_eq!(XleaveTable::new(5000).capacity(), 8192);
        assert_eq!(XleaveTable::new(DEFAULT_ENTRIES).memory_bytes(), 128 << 20);
    }

    #[test]
    fn many_threads_take_each_pair_once() {
        let t = std::sync::Arc::new(XleaveTable::new(1 << 16));
        let pairs: Vec<KeepPair> = (0..10_000u64)
            .map(|i| t.pair(client(i as u32 % 7), rx(i), 0))
            .collect();
        for (i, p) in pairs.iter().enumerate() {
            t.keep(*p, i as i64);
        }
        let kept = t.held();
        assert!(kept > 9_900, "{kept}");
        let pairs = std::sync::Arc::new(pairs);
        let taken: usize = (0..4)
            .map(|_| {
                let (t, pairs) = (t.clone(), pairs.clone());
                std::thread::spawn(move || {
                    pairs
                        .iter()
                        .enumerate()
                        .filter(|(i, p)| match t.take(**p) {
                            Some(interval) => {
                                assert_eq!(interval, *i as i64);
                                true
                            }
                            None => false,
                        })
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(taken, kept);
        assert_eq!(t.held(), 0);
    }
}
