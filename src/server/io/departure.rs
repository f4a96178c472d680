//! When each reply of a batch leaves: the transmit timestamp T3.
//!
//! A worker hands a batch of replies to the kernel in one call, and the kernel
//! sends them one after another. Reading the clock as each reply is built, and
//! sending the batch afterwards, stamps every reply too early by the time the
//! kernel spent on the replies ahead of it: with three or four replies per
//! batch that was a 6-7 µs error in the offset a client measures (ntp-blast's
//! `|offset|` on a shared clock, docs/benchmarks.md), where chronyd, one
//! `sendmsg` per reply, is within 0.1 µs. So the replies are stamped right
//! before the send call instead, reply `i` at `clock + lead + i × (cost of
//! one send)`.
//!
//! Both terms are learned. With the kernel's transmit stamps (`txstamp`),
//! from where each reply really left: `lead` is how long after the clock
//! read the call's first reply reached the driver (entering the kernel,
//! the first send's own path), and the cost of a send is the spacing of the
//! later ones. Without stamps, the cost of a send is the call's length
//! divided by its replies, and the lead is taken as zero.

use super::txstamp::Stamped;

/// Measured cost of one send within a batched send call, the lead before the
/// first, and the departure estimate built on them.
#[derive(Clone, Copy, Debug)]
pub struct DepartureClock {
    /// Nanoseconds per send, times 16 (an exponential average of 1/16 weight).
    per_send_x16: i64,
    /// Nanoseconds from the clock read to the first departure, times 16.
    lead_x16: i64,
    /// Learning from kernel stamps: the call lengths are no longer used.
    stamped: bool,
}

/// No estimate yet: sends cost about this much through the kernel's UDP path.
const INITIAL_PER_SEND_NS: i64 = 1_000;
/// A sample above this is a call that waited for something (a full socket
/// buffer, a preemption) rather than the cost of sending; it is ignored.
const MAX_PER_SEND_NS: i64 = 50_000;
/// A lead above this is a call that waited (preempted between the clock
/// read and the send, or queued behind other traffic): ignored.
const MAX_LEAD_NS: i64 = 100_000;
/// How far one stamp moves the estimate, at most, before the 1/16 gain: an
/// interrupted send (tens of µs late) then shifts it by 125 ns, not by a
/// sixteenth of its delay, and a run of them cannot drag every estimate
/// after it (seen as a ±14 µs p1/p99 T3 error before this bound).
const MAX_STEP_NS: i64 = 2_000;

impl Default for DepartureClock {
    fn default() -> Self {
        DepartureClock {
            per_send_x16: INITIAL_PER_SEND_NS * 16,
            lead_x16: 0,
            stamped: false,
        }
    }
}

impl DepartureClock {
    /// The estimated cost of one send, in nanoseconds.
    pub fn per_send_ns(&self) -> i64 {
        self.per_send_x16 / 16
    }

    /// The estimated time from the clock read to the first departure.
    pub fn lead_ns(&self) -> i64 {
        self.lead_x16 / 16
    }

    /// When the reply at `position` (from 0) of a send call that starts at
    /// `start_ns` leaves.
    #[inline]
    pub fn departure(&self, start_ns: i64, position: usize) -> i64 {
        start_ns
            .saturating_add(self.lead_ns())
            .saturating_add((position as i64).saturating_mul(self.per_send_ns()))
    }

    /// Learns from a send call that handed `sends` replies to the kernel in
    /// `elapsed_ns`. Calls with one reply say little about the per-reply cost
    /// (the call's own overhead dominates) and are left out; so is every
    /// call once kernel stamps tell more.
    #[inline]
    pub fn observe(&mut self, sends: usize, elapsed_ns: i64) {
        if self.stamped || sends < 2 || elapsed_ns <= 0 {
            return;
        }
        let sample = elapsed_ns / sends as i64;
        if sample > MAX_PER_SEND_NS {
            return;
        }
        // x16 fixed point: avg += (sample - avg) / 16.
        self.per_send_x16 += sample - self.per_send_x16 / 16;
    }

    /// Learns from where a reply really left (its kernel transmit stamp).
    #[inline]
    pub fn learn(&mut self, stamped: &Stamped) {
        self.stamped = true;
        let sent = &stamped.sent;
        let since_start = stamped.departed_ns.saturating_sub(sent.call_start_ns);
        if sent.position == 0 {
            if (0..=MAX_LEAD_NS).contains(&since_start) {
                let step = (since_start - self.lead_ns()).clamp(-MAX_STEP_NS, MAX_STEP_NS);
                self.lead_x16 += step;
            }
            return;
        }
        let sample = (since_start - self.lead_ns()) / sent.position as i64;
        if (0..=MAX_PER_SEND_NS).contains(&sample) {
            let step = (sample - self.per_send_ns()).clamp(-MAX_STEP_NS, MAX_STEP_NS);
            self.per_send_x16 += step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::io::txstamp::Sent;

    fn stamped(call_start_ns: i64, position: u32, departed_ns: i64) -> Stamped {
        Stamped {
            sent: Sent {
                rx_ns: 0,
                departure_ns: 0,
                call_start_ns,
                position,
                basic: true,
                keep: None,
            },
            departed_ns,
        }
    }

    #[test]
    fn replies_leave_one_send_apart() {
        let mut clock = DepartureClock::default();
        for _ in 0..200 {
            clock.observe(4, 4 * 2_500);
        }
        assert!(
            (clock.per_send_ns() - 2_500).abs() <= 20,
            "{}",
            clock.per_send_ns()
        );
        let start = 1_700_000_000_000_000_000;
        assert_eq!(clock.departure(start, 0), start);
        let third = clock.departure(start, 2) - start;
        assert!((third - 5_000).abs() <= 40, "{third}");
    }

    #[test]
    fn single_sends_and_stalls_do_not_move_the_estimate() {
        let mut clock = DepartureClock::default();
        let before = clock.per_send_ns();
        clock.observe(1, 40_000);
        clock.observe(0, 0);
        clock.observe(3, -5);
        clock.observe(8, 8 * 2_000_000); // a call that waited 16 ms
        assert_eq!(clock.per_send_ns(), before);
    }

    #[test]
    fn the_estimate_follows_a_changed_cost() {
        let mut clock = DepartureClock::default();
        for _ in 0..100 {
            clock.observe(10, 10 * 4_000);
        }
        assert!((clock.per_send_ns() - 4_000).abs() < 100);
        for _ in 0..100 {
            clock.observe(10, 10 * 700);
        }
        assert!(
            (clock.per_send_ns() - 700).abs() < 50,
            "{}",
            clock.per_send_ns()
        );
    }

    #[test]
    fn kernel_stamps_teach_the_lead_and_the_spacing() {
        // The first reply leaves 1.8 µs after the clock read, the others
        // 1.2 µs apart.
        let mut clock = DepartureClock::default();
        let start = 1_000_000_000;
        for _ in 0..300 {
            for i in 0..4u32 {
                clock.learn(&stamped(start, i, start + 1_800 + 1_200 * i as i64));
            }
        }
        assert!((clock.lead_ns() - 1_800).abs() <= 20, "{}", clock.lead_ns());
        assert!(
            (clock.per_send_ns() - 1_200).abs() <= 20,
            "{}",
            clock.per_send_ns()
        );
        let third = clock.departure(start, 2) - start;
        assert!((third - 4_200).abs() <= 60, "{third}");
        // Call lengths no longer count.
        let before = clock.per_send_ns();
        clock.observe(4, 4 * 9_000);
        assert_eq!(clock.per_send_ns(), before);
    }

    #[test]
    fn waits_do_not_teach_the_lead() {
        let mut clock = DepartureClock::default();
        clock.learn(&stamped(0, 0, 5_000_000)); // preempted for 5 ms
        clock.learn(&stamped(0, 0, -10)); // before the call: not a departure
        clock.learn(&stamped(0, 3, 30_000_000));
        assert_eq!(clock.lead_ns(), 0);
        assert_eq!(clock.per_send_ns(), INITIAL_PER_SEND_NS);
    }

    #[test]
    fn an_interrupted_send_barely_moves_the_estimate() {
        let mut clock = DepartureClock::default();
        for _ in 0..400 {
            clock.learn(&stamped(0, 0, 1_500));
            clock.learn(&stamped(0, 1, 2_500));
        }
        let (lead, per_send) = (clock.lead_ns(), clock.per_send_ns());
        assert!((lead - 1_500).abs() <= 20 && (per_send - 1_000).abs() <= 20);
        // Interrupted for 60 µs, twice.
        clock.learn(&stamped(0, 0, 61_500));
        clock.learn(&stamped(0, 1, 62_500));
        clock.learn(&stamped(0, 0, 61_500));
        assert!(clock.lead_ns() - lead <= 300, "{}", clock.lead_ns());
        assert!(
            clock.per_send_ns() - per_send <= 150,
            "{}",
            clock.per_send_ns()
        );
    }

    #[test]
    fn far_positions_do_not_overflow() {
        let clock = DepartureClock::default();
        assert_eq!(clock.departure(i64::MAX - 10, 5), i64::MAX);
    }
}
