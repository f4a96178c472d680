//! NTP time formats (RFC 5905 §6): the 64-bit timestamp and the 32-bit short format.

use std::fmt;

/// Seconds from the NTP prime epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const UNIX_TO_NTP_SECONDS: i64 = 2_208_988_800;

const FRACTION_PER_SECOND: f64 = 4_294_967_296.0; // 2^32
const ERA_SECONDS: i64 = 1 << 32;

/// A 64-bit NTP timestamp: 32 bits of seconds within an era, 32 bits of fraction.
///
/// The era (a 136-year span) is not on the wire; [`NtpTimestamp::to_unix_near`]
/// recovers it from a pivot, and differences between timestamps use wrapping
/// arithmetic so they stay correct across an era boundary (2036-02-07).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    pub const ZERO: NtpTimestamp = NtpTimestamp(0);

    pub const fn from_bits(bits: u64) -> Self {
        NtpTimestamp(bits)
    }

    pub const fn to_bits(self) -> u64 {
        self.0
    }

    pub fn from_be_bytes(bytes: [u8; 8]) -> Self {
        NtpTimestamp(u64::from_be_bytes(bytes))
    }

    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Seconds part (within the era).
    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Fraction part, in units of 2^-32 s.
    pub fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// Converts a Unix time (seconds, nanoseconds) to an NTP timestamp. Any era maps
    /// onto the 32-bit seconds field modulo 2^32, as RFC 5905 requires.
    pub fn from_unix(secs: i64, nanos: u32) -> Self {
        let nanos = nanos.min(999_999_999) as u64;
        let ntp_secs = secs
            .wrapping_add(UNIX_TO_NTP_SECONDS)
            .rem_euclid(ERA_SECONDS) as u64;
        let fraction = (nanos << 32) / 1_000_000_000;
        NtpTimestamp((ntp_secs << 32) | fraction)
    }

    /// Converts back to Unix time, choosing the era that puts the result closest to
    /// `pivot_unix_secs` (for example the local clock's idea of now).
    pub fn to_unix_near(self, pivot_unix_secs: i64) -> (i64, u32) {
        let in_era = self.seconds() as i64 - UNIX_TO_NTP_SECONDS;
        // Choose k so that in_era + k * 2^32 is within half an era of the pivot.
        let delta = pivot_unix_secs - in_era;
        let era = (delta + ERA_SECONDS / 2).div_euclid(ERA_SECONDS);
        let secs = in_era + era * ERA_SECONDS;
        let nanos = ((self.fraction() as u64 * 1_000_000_000) >> 32) as u32;
        (secs, nanos)
    }

    /// `self - earlier` in seconds, correct across an era boundary as long as the two
    /// are less than 68 years apart.
    pub fn seconds_since(self, earlier: NtpTimestamp) -> f64 {
        (self.0.wrapping_sub(earlier.0) as i64) as f64 / FRACTION_PER_SECOND
    }

    /// The timestamp `seconds` later (or earlier, if negative), wrapping at the era.
    pub fn add_seconds(self, seconds: f64) -> Self {
        let delta = (seconds * FRACTION_PER_SECOND) as i64;
        NtpTimestamp(self.0.wrapping_add(delta as u64))
    }
}

impl fmt::Debug for NtpTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NtpTimestamp({}.{:08x})",
            self.seconds(),
            self.fraction()
        )
    }
}

/// The 32-bit NTP short format: 16 bits of seconds, 16 bits of fraction. Used for
/// root delay and root dispersion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NtpShort(pub u32);

impl NtpShort {
    pub fn from_be_bytes(bytes: [u8; 4]) -> Self {
        NtpShort(u32::from_be_bytes(bytes))
    }

    pub fn to_be_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// Converts non-negative seconds, rounding up (a root distance must never be
    /// understated) and saturating at the format's maximum (about 65536 s).
    pub fn from_seconds(seconds: f64) -> Self {
        if seconds.is_nan() || seconds <= 0.0 {
            return NtpShort(0);
        }
        let units = (seconds * 65536.0).ceil();
        if units >= u32::MAX as f64 {
            NtpShort(u32::MAX)
        } else {
            NtpShort(units as u32)
        }
    }

    pub fn to_seconds(self) -> f64 {
        self.0 as f64 / 65536.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_epoch_maps_to_ntp_seconds() {
        let ts = NtpTimestamp::from_unix(0, 0);
        assert_eq!(ts.seconds() as i64, UNIX_TO_NTP_SECONDS);
        assert_eq!(ts.fraction(), 0);
    }

    #[test]
    fn half_second_fraction() {
        let ts = NtpTimestamp::from_unix(1_700_000_000, 500_000_000);
        assert_eq!(ts.fraction(), 1 << 31);
        assert_eq!(ts.to_unix_near(1_700_000_000), (1_700_000_000, 500_000_000));
    }

    #[test]
    fn nanosecond_round_trip_within_one_ns() {
        for nanos in [0u32, 1, 999, 123_456_789, 999_999_999] {
            let ts = NtpTimestamp::from_unix(1_800_000_000, nanos);
            let (s, n) = ts.to_unix_near(1_800_000_000);
            assert_eq!(s, 1_800_000_000);
            assert!(nanos - n <= 1, "{nanos} -> {n}");
        }
    }

    #[test]
    fn era_rollover_2036() {
        // 2036-02-07T06:28:16Z is the first second of era 1.
        let era1_start_unix = (1i64 << 32) - UNIX_TO_NTP_SECONDS;
        let before = NtpTimestamp::from_unix(era1_start_unix - 1, 0);
        let after = NtpTimestamp::from_unix(era1_start_unix + 1, 0);
        assert_eq!(before.seconds(), u32::MAX);
        assert_eq!(after.seconds(), 1);
        assert_eq!(after.seconds_since(before), 2.0);
        assert_eq!(before.seconds_since(after), -2.0);
        assert_eq!(after.to_unix_near(era1_start_unix).0, era1_start_unix + 1);
        assert_eq!(before.to_unix_near(era1_start_unix).0, era1_start_unix - 1);
    }

    #[test]
    fn era_chosen_near_pivot() {
        let t = 4_000_000_000i64; // year 2096, era 1
        let ts = NtpTimestamp::from_unix(t, 0);
        assert_eq!(ts.to_unix_near(t - 1_000_000).0, t);
        assert_eq!(ts.to_unix_near(t + 1_000_000).0, t);
        // A pivot in era 0 far back still picks era 1 when that is nearer.
        assert_eq!(ts.to_unix_near(3_000_000_000).0, t);
    }

    #[test]
    fn add_seconds_and_difference() {
        let a = NtpTimestamp::from_unix(1_700_000_000, 0);
        let b = a.add_seconds(1.25);
        assert!((b.seconds_since(a) - 1.25).abs() < 1e-9);
        let c = a.add_seconds(-0.5);
        assert!((c.seconds_since(a) + 0.5).abs() < 1e-9);
    }

    #[test]
    fn short_format_rounds_up_and_saturates() {
        assert_eq!(NtpShort::from_seconds(0.0), NtpShort(0));
        assert_eq!(NtpShort::from_seconds(-1.0), NtpShort(0));
        assert_eq!(NtpShort::from_seconds(f64::NAN), NtpShort(0));
        assert_eq!(NtpShort::from_seconds(1.0), NtpShort(65536));
        assert_eq!(NtpShort::from_seconds(1e-9), NtpShort(1));
        assert_eq!(NtpShort::from_seconds(1e9), NtpShort(u32::MAX));
        assert!((NtpShort(98304).to_seconds() - 1.5).abs() < 1e-12);
    }
}
