//! Receive timestamps of the XDP path: the XDP program writes the
//! CLOCK_TAI time it saw a frame into the 16 bytes of XDP metadata in front
//! of it (`struct rx_meta`: the time, then a magic number); the worker reads
//! them and converts the time to the system clock (Unix time).
//!
//! CLOCK_TAI is CLOCK_REALTIME plus the kernel's TAI offset, a whole number
//! of seconds, both slewed and stepped together: the conversion adds no
//! error of its own, as long as the offset is the current one. The worker
//! reads it again before each batch (two vDSO clock reads), so only a frame
//! received before a leap second (or an adjtimex that sets the offset) and
//! converted after it, a window of one batch, is off by that second.
#![forbid(unsafe_code)]

use nix::time::{clock_gettime, ClockId};

/// Bytes of metadata the program writes in front of a frame.
pub const META_LEN: usize = 16;
/// `RX_META_MAGIC` of the program ("NTPX").
const MAGIC: u32 = 0x4e54_5058;
const NS_PER_S: i64 = 1_000_000_000;

/// Takes the program's receive time (CLOCK_TAI, ns) from the metadata in
/// front of the frame data at `data_offset` in `chunk`, and clears it so
/// that a later frame in the same memory without metadata (a driver that
/// refused it) cannot be given this one's time.
pub fn take_stamp(chunk: &mut [u8], data_offset: usize) -> Option<i64> {
    let start = data_offset.checked_sub(META_LEN)?;
    let meta = chunk.get_mut(start..data_offset)?;
    let magic = u32::from_ne_bytes(meta[8..12].try_into().ok()?);
    if magic != MAGIC {
        return None;
    }
    meta[8..12].fill(0);
    let tai = u64::from_ne_bytes(meta[0..8].try_into().ok()?);
    i64::try_from(tai).ok()
}

/// The TAI−UTC offset of the kernel's clocks, as last read.
#[derive(Clone, Copy, Debug)]
pub struct TaiClock {
    offset_ns: i64,
}

fn read_ns(clock: ClockId) -> i64 {
    clock_gettime(clock)
        .map(|t| t.tv_sec() * NS_PER_S + t.tv_nsec())
        .unwrap_or(0)
}

/// The whole seconds between two readings of CLOCK_TAI and CLOCK_REALTIME
/// taken one after the other: the nanoseconds between the reads are
/// rounded away.
pub fn whole_seconds(tai_ns: i64, realtime_ns: i64) -> i64 {
    let difference = tai_ns - realtime_ns;
    (difference + NS_PER_S / 2).div_euclid(NS_PER_S) * NS_PER_S
}

impl TaiClock {
    pub fn new() -> TaiClock {
        let mut clock = TaiClock { offset_ns: 0 };
        clock.refresh();
        clock
    }

    /// Reads the offset again; call before each batch.
    pub fn refresh(&mut self) {
        let realtime = read_ns(ClockId::CLOCK_REALTIME);
        let tai = read_ns(ClockId::CLOCK_TAI);
        self.offset_ns = whole_seconds(tai, realtime);
    }

    /// The Unix time (system clock, ns) of a CLOCK_TAI time.
    pub fn to_unix(&self, tai_ns: i64) -> i64 {
        tai_ns - self.offset_ns
    }
}

impl Default for TaiClock {
    fn default() -> Self {
        TaiClock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_with(meta: Option<(u64, u32)>) -> Vec<u8> {
        let mut chunk = vec![0u8; 64];
        if let Some((t, magic)) = meta {
            chunk[16..24].copy_from_slice(&t.to_ne_bytes());
            chunk[24..28].copy_from_slice(&magic.to_ne_bytes());
        }
        chunk
    }

    #[test]
    fn a_stamp_is_read_once() {
        let mut chunk = chunk_with(Some((1_700_000_037_000_000_123, MAGIC)));
        assert_eq!(take_stamp(&mut chunk, 32), Some(1_700_000_037_000_000_123));
        assert_eq!(take_stamp(&mut chunk, 32), None, "cleared after reading");
    }

    #[test]
    fn no_stamp_without_the_magic_or_room() {
        let mut chunk = chunk_with(Some((5, 0x1234)));
        assert_eq!(take_stamp(&mut chunk, 32), None);
        let mut chunk = chunk_with(None);
        assert_eq!(take_stamp(&mut chunk, 8), None);
        assert_eq!(take_stamp(&mut chunk, 100), None);
    }

    #[test]
    fn the_offset_is_whole_seconds() {
        assert_eq!(whole_seconds(37 * NS_PER_S + 1_500, 0), 37 * NS_PER_S);
        assert_eq!(
            whole_seconds(1_000 + 37 * NS_PER_S - 900, 1_000),
            37 * NS_PER_S
        );
        assert_eq!(whole_seconds(12_345, 12_000), 0);
    }

    #[test]
    fn tai_converts_to_the_system_clock() {
        let clock = TaiClock::new();
        let tai = read_ns(ClockId::CLOCK_TAI);
        let unix = crate::clock::system_unix_ns();
        let converted = clock.to_unix(tai);
        assert!(
            (unix - converted).abs() < 50_000_000,
            "{unix} vs {converted}"
        );
        assert_eq!(clock.offset_ns % NS_PER_S, 0);
    }
}
