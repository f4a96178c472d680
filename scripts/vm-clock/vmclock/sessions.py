"""The timelines: each session boots one guest per daemon (tachyond and
chronyd, side by side, same upstreams, same clock errors, same instants),
does to both what its scenarios say, and marks when. The verdicts are in
scenarios.py; nothing here judges."""

import calendar
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

from . import network
from .daemons import DAEMONS, Daemon
from .guest import PROBE_PORT, Guest, GuestSpec
from .ntp import TimeScale, query_many
from .record import Sampler, Track, best
from .upstreams import Upstreams

PAIR = ("tachyond", "chronyd")
# 2016-12-31 23:59:60 UTC, in leap-seconds.list and right/UTC: the leap
# second is inserted before this instant (2017-01-01 00:00:00).
LEAP_AT = calendar.timegm((2017, 1, 1, 0, 0, 0))


@dataclass
class Context:
    artifacts: str
    workdir: str
    kvm: bool
    sampler: Sampler
    holdover: int
    # Boots and guest commands take longer under TCG.
    slow: float


@dataclass
class Timing:
    """Phase lengths, seconds."""

    calibrate: float = 12
    scenario1: float = 75
    dead: float = 5
    scenario6: float = 75
    scenario2: float = 300
    scenario3: float = 90
    settle5: float = 90
    after_unsync: float = 20
    leap_lead: float = 180
    leap_after: float = 30


def upstream_addresses(index: int) -> List[str]:
    return [f"{network.PREFIX}.{20 + 10 * index + k}" for k in range(1, 4)]


class Pair:
    """The two guests of one session and their tracks."""

    def __init__(self, ctx: Context, group: str, index: int, scale: TimeScale):
        self.ctx = ctx
        self.group = group
        self.scale = scale
        self.upstreams = Upstreams(upstream_addresses(index), ctx.workdir, group)
        self.specs = {
            d: GuestSpec(
                name=f"{group}-{d}",
                address=f"{network.PREFIX}.{100 + 10 * index + k}",
                tap=f"vmc{index}{d[0]}",
                mac=f"52:54:00:77:{index:02x}:{k:02x}",
            )
            for k, d in enumerate(PAIR, 1)
        }
        self.tracks: Dict[str, Track] = {}
        self.daemons: Dict[str, Daemon] = {}
        self.guests: Dict[str, Guest] = {}

    def boot(self) -> None:
        for d, spec in self.specs.items():
            network.make_tap(spec.tap)
            self.guests[d] = Guest(spec, self.ctx.artifacts, self.ctx.workdir, self.ctx.kvm)
        for d, guest in self.guests.items():
            seconds = guest.wait_ready(60 * self.ctx.slow)
            track = Track(name=guest.spec.name, daemon=d, scenario_group=self.group, guest=guest, scale=self.scale)
            track.mark(f"booted in {seconds:.1f} s")
            self.tracks[d] = track
            self.daemons[d] = DAEMONS[d](guest, self.upstreams.addresses, self.ctx.holdover)
            self.ctx.sampler.add(track)

    def each(self, action: Callable[[str], None]) -> None:
        """Runs `action(daemon)` for both guests at once."""
        errors = []

        def run(d: str) -> None:
            try:
                action(d)
            except Exception as e:  # reported below, with the guest's name
                errors.append(f"{self.specs[d].name}: {e}")

        threads = [threading.Thread(target=run, args=(d,)) for d in PAIR]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError("; ".join(errors))

    def mark(self, label: str) -> None:
        for track in self.tracks.values():
            track.mark(label)

    def align(self, d: str) -> None:
        """Sets the guest's clock to the reference (within 2 ms: the scenarios'
        clock errors are that much larger), measuring as the sampler does:
        the lowest-delay reply of a few rounds."""
        guest = self.guests[d]
        deadline = time.monotonic() + 30 * self.ctx.slow
        while True:
            replies = []
            for _ in range(3):  # a booting neighbour can stall one round
                replies += query_many([(guest.spec.address, PROBE_PORT, self.scale)] * 5, timeout=1.0)
                time.sleep(0.2)
            reply = best(replies)
            if reply is not None and abs(reply.offset) < 2e-3:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot align the clock ({reply.offset if reply else 'no answer'})")
            if reply is not None:
                guest.run(f"/bin/probe shift {-reply.offset:.9f}", timeout=10 * self.ctx.slow)

    def prepare(self, timing: Timing) -> None:
        """Boot, align both clocks to the reference, and sample them free-running
        for a while (the raw clock's bias, see analysis.raw_bias)."""
        self.boot()
        self.each(self.align)
        self.mark("calibrate")
        time.sleep(timing.calibrate)
        self.mark("calibrated")

    def start(self, label: str = "start") -> None:
        # Marked first: tachyond may step within milliseconds of starting.
        self.mark(label)
        self.each(lambda d: self.daemons[d].start())

    def shutdown(self) -> None:
        for d, track in self.tracks.items():
            self.ctx.sampler.remove(track)
            try:
                with open(os.path.join(self.ctx.workdir, f"{track.name}.daemon.log"), "w") as f:
                    f.write(self.daemons[d].log_text())
            except Exception as e:  # the log is for reading later, not a verdict
                track.mark(f"log unavailable: {e}")
            track.dump(os.path.join(self.ctx.workdir, f"{track.name}.samples.json"))
        for guest in self.guests.values():
            guest.stop()
        self.upstreams.stop()


def session_offset(ctx: Context, timing: Timing, index: int, keep: dict) -> Pair:
    """Scenario 1: the guest's clock 0.5 s ahead when the daemon starts."""
    pair = keep["offset"] = Pair(ctx, "offset", index, TimeScale())
    pair.upstreams.start_chronyd()
    pair.prepare(timing)
    pair.each(lambda d: pair.guests[d].run("/bin/probe shift 0.5"))
    pair.mark("offset")
    # Samples of the shifted clock before the daemon starts, so that the
    # shift and the daemon's step never fall between the same two samples.
    time.sleep(3)
    pair.start()
    time.sleep(timing.scenario1)
    pair.mark("s1-end")
    return pair


def session_skew(ctx: Context, timing: Timing, index: int, keep: dict) -> Pair:
    """Scenario 2 (oscillator 200 ppm fast), then 6 (kill -9 and restart),
    then 3 (stop, and restart with the driftfile): a restart matters most
    on a clock that needs a large correction."""
    pair = keep["skew"] = Pair(ctx, "skew", index, TimeScale())
    pair.upstreams.start_chronyd()
    pair.prepare(timing)
    # tick 10002 µs per 10 ms: the guest's clock runs 200 ppm fast.
    pair.each(lambda d: pair.guests[d].run("/bin/probe tick 10002"))
    pair.mark("skew")
    pair.start()
    time.sleep(timing.scenario2)
    pair.mark("s2-end")
    pair.mark("kill")
    pair.each(lambda d: pair.daemons[d].kill())
    time.sleep(timing.dead)
    pair.start("restart-after-kill")
    time.sleep(timing.scenario6)
    pair.mark("s6-end")
    pair.mark("stopped")
    pair.each(lambda d: pair.daemons[d].stop())
    time.sleep(timing.dead)
    pair.start("restart")
    time.sleep(timing.scenario3)
    pair.mark("s3-end")
    return pair


def session_holdover(ctx: Context, timing: Timing, index: int, keep: dict) -> Pair:
    """Scenario 5: every upstream gone; holdover, then unsynchronized."""
    pair = keep["holdover"] = Pair(ctx, "holdover", index, TimeScale())
    pair.upstreams.start_chronyd()
    pair.prepare(timing)
    pair.start()
    time.sleep(timing.settle5)
    pair.upstreams.stop()
    pair.mark("upstreams-gone")
    # Unreachable after 3 unanswered polls (maxpoll 6: 64 s each), then the
    # holdover; a little more to see the state after it.
    deadline = time.time() + 3 * 64 + ctx.holdover + 60
    tachyond = pair.tracks["tachyond"]
    while time.time() < deadline:
        recent = tachyond.points[-3:]
        if len(recent) == 3 and all(p.leap == 3 for p in recent):
            break
        time.sleep(1)
    time.sleep(timing.after_unsync)
    pair.mark("s5-end")
    return pair


def session_leap(ctx: Context, timing: Timing, index: int, keep: dict) -> Pair:
    """Scenario 4: the leap second at the end of 2016-12-31, the guests'
    clocks and the upstreams set to a few minutes before it."""
    margin = 20  # boot, alignment, calibration
    shift = int(LEAP_AT - timing.leap_lead - margin - time.time())
    scale = TimeScale(shift, LEAP_AT)
    pair = keep["leap"] = Pair(ctx, "leap", index, scale)
    pair.upstreams.start_leap(scale)
    pair.prepare(timing)
    pair.start()
    end = LEAP_AT + timing.leap_after - shift
    while time.time() < end:
        time.sleep(1)
    pair.mark("s4-end")
    return pair


SESSIONS = {
    "offset": session_offset,
    "skew": session_skew,
    "holdover": session_holdover,
    "leap": session_leap,
}
