"""Verdicts: for each scenario and daemon, the figures of the table and the
scenario's bars, from the samples and events sessions.py recorded."""

import calendar
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from . import analysis as A
from .record import Point, Track
from .sessions import LEAP_AT, Pair, Timing


@dataclass
class Row:
    scenario: str
    daemon: str
    settle: Optional[float] = None  # s from the daemon's (re)start to |offset| <= 1 ms for good
    rms: Optional[float] = None  # served offset after settling, s
    peak: Optional[float] = None
    freq_error: Optional[float] = None  # ppm: kernel correction minus what the clock needed
    needed: Optional[float] = None  # ppm the clock needed
    steps: List[Tuple[float, float]] = field(default_factory=list)  # (s after start, size s)
    # The scenario's span, (start, end), and a span left out (the leap itself).
    span: Tuple[float, float] = (0.0, 0.0)
    skip: Optional[Tuple[float, float]] = None
    # RMS over the span from when both daemons had settled, s: the same
    # samples' times for both, so neither is judged on a shorter window.
    rms_common: Optional[float] = None
    checks: List[Tuple[str, bool, str]] = field(default_factory=list)
    # The names of the checks that hold the served time to 1 ms: under TCG
    # the guest's own timekeeping is noisy to hundreds of µs, so these measure
    # the daemon's accuracy on that noise, a benchmark, where the other
    # checks (steps, status bits, the leap, the holdover bound, frequencies
    # within ppm) hold whatever the noise.
    accuracy: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, bool(ok), detail))

    def check_accuracy(self, name: str, ok: bool, detail: str = "") -> None:
        self.accuracy.append(name)
        self.check(name, ok, detail)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    @property
    def behaviour_passed(self) -> bool:
        """Every check but the accuracy ones."""
        return all(ok for name, ok, _ in self.checks if name not in self.accuracy)


def _common(
    row: Row, track: Track, start: float, end: float, bias: Optional[float], since: Optional[float] = None
) -> List[Point]:
    """Fills settle, RMS, max, steps and frequency for [start, end); returns
    the points after settling. Steps are looked for from `since` (default a
    little before `start`: a step right at the start falls between the last
    sample before it and the first after)."""
    points = track.window(start, end)
    row.span = (start, end)
    row.settle, settled = A.settle(points, start, A.min_delays(track.points)[1])
    values = A.precise_served(settled, A.min_delays(track.points)[1])
    row.rms, row.peak = A.rms(values), A.peak(values)
    since = start - 3 if since is None else since
    row.steps = [(t - start, size) for t, size in A.steps(track.window(since, end))]
    if bias is not None:
        rate = A.natural_rate(track.window(track.event("calibrated") or start, end), bias)
        if rate is not None:
            row.needed = -rate * 1e6
            tail = track.window(end - 30, end)
            given = A.median_ppm(tail)
            if given is not None:
                row.freq_error = given - row.needed
    return settled


def bias_of(track: Track) -> Optional[float]:
    return A.raw_bias(track.window(track.event("calibrate") or 0, track.event("calibrated") or 0))


def _fmt_steps(steps) -> str:
    return ", ".join(f"{size:+.4f} s at {t:.0f} s" for t, size in steps) or "none"


def _reference_instant(p: Point) -> Optional[float]:
    return None if p.reference_age is None else p.t - p.reference_age


def _quiet(points: List[Point], i: int) -> bool:
    here = _reference_instant(points[i])
    if here is None or i == 0 or i + 1 == len(points):
        return False
    return all(
        (r := _reference_instant(points[j])) is not None and abs(r - here) < 0.05 for j in (i - 1, i + 1)
    )


def _kernel_consistency(row: Row, track: Track, settled: List[Point]) -> None:
    """maxerror bounds the true error; it is never below the root distance
    replies serve (root delay / 2 + root dispersion, which grows 15 ppm a
    second) nor above it by more than the kernel's own growth since the last
    update (500 ppm a second, in 500 µs steps); esterror is within maxerror."""
    bound_broken, below, above, est_bad, checked = 0, 0, 0, 0, 0
    minimum = A.min_delays(track.points)[0]
    for i, p in enumerate(settled):
        s = p.state
        if "maxerror" not in s or p.clock is None or p.leap == 3 or p.root_delay is None:
            continue
        # The probe's and the daemon's answers are milliseconds apart, in
        # either order: only samples with no clock update near them compare
        # the kernel's state with the one served (same reference time in the
        # samples before and after).
        if not _quiet(settled, i):
            continue
        checked += 1
        maxerror, esterror = s["maxerror"] * 1e-6, s["esterror"] * 1e-6
        bound_broken += abs(p.clock) - A.uncertainty(p.clock_delay, minimum) > maxerror
        est_bad += esterror > maxerror
        distance = p.root_delay / 2 + p.root_dispersion
        # Root delay and dispersion travel as 16.16 fixed point (15.3 µs).
        below += maxerror < distance - 35e-6
        if p.reference_age is not None:
            above += maxerror > distance + 485e-6 * p.reference_age + 0.6e-3
    row.check(
        "maxerror >= |true offset|, esterror <= maxerror",
        checked > 0 and bound_broken == 0 and est_bad == 0,
        f"{checked} samples, {bound_broken} beyond maxerror, {est_bad} esterror > maxerror",
    )
    row.check(
        "served root distance <= maxerror <= it + 485 ppm x age since the update",
        checked > 0 and below == 0 and above == 0,
        f"of {checked} samples {below} below, {above} above",
    )


def _clock_within(track: Track, points: List[Point]) -> Tuple[bool, str]:
    beyond, worst, n = A.clock_beyond(points, A.min_delays(track.points)[0])
    if not n:
        return False, "no samples"
    return beyond == 0, f"{beyond} of {n} samples beyond 1 ms; max |clock offset| {worst * 1e3:.3f} ms (precise samples)"


def scenario1(track: Track, timing: Timing, bars: dict) -> Row:
    row = Row("1 0.5 s off at boot", track.daemon)
    start, end = track.event("start"), track.event("s1-end")
    _common(row, track, start, end, bias_of(track), since=track.event("offset") + 1.5)
    big = [s for s in row.steps if abs(s[1]) > 0.1]
    row.check(
        "one step at start (-0.5 s), no other",
        len(row.steps) == 1 and len(big) == 1 and big[0][0] < 15 and abs(big[0][1] + 0.5) < 0.01,
        _fmt_steps(row.steps),
    )
    row.check_accuracy(f"|offset| <= 1 ms within {bars['s1']:.0f} s", row.settle is not None and row.settle <= bars["s1"])
    tail = track.window(end - 10, end)
    row.check(
        "STA_UNSYNC cleared",
        bool(tail) and all(p.state and not p.state["status"] & A.STA_UNSYNC for p in tail),
    )
    # The bounds hold whether or not the served time is within 1 ms yet:
    # judged from a couple of seconds after the start-up step.
    after_step = start + max((t for t, _ in row.steps), default=0.0) + 2
    _kernel_consistency(row, track, track.window(after_step, end))
    return row


def scenario6(track: Track, timing: Timing, bars: dict) -> Row:
    row = Row("6 kill -9, restart", track.daemon)
    kill, restart, end = track.event("kill"), track.event("restart-after-kill"), track.event("s6-end")
    _common(row, track, restart, end, bias_of(track))
    before = A.median_ppm(track.window(kill - 30, kill))
    dead = track.window(kill + 1.5, restart)
    left = A.median_ppm(dead)
    sane = (
        bool(dead)
        and all(p.state and not p.state["status"] & (A.STA_INS | A.STA_DEL) for p in dead)
        and before is not None
        and left is not None
        and abs(left - before) <= 30
    )
    row.check(
        "kernel sane after kill -9 (no leap bits, frequency within 30 ppm of before)",
        sane,
        f"frequency {before if before is None else round(before, 3)} ppm before, "
        f"{left if left is None else round(left, 3)} ppm left by the killed daemon",
    )
    steps = A.steps(track.window(kill, end))
    row.check("no step after the kill and restart", not steps, _fmt_steps([(t - kill, s) for t, s in steps]))
    ok, detail = _clock_within(track, track.window(kill, end))
    row.check_accuracy("|clock offset| <= 1 ms throughout", ok, detail)
    return row


def scenario2(track: Track, timing: Timing, bars: dict) -> Row:
    row = Row("2 oscillator +200 ppm", track.daemon)
    start, end = track.event("start"), track.event("s2-end")
    _common(row, track, start, end, bias_of(track))
    row.check("no step", not row.steps, _fmt_steps(row.steps))
    row.check_accuracy(f"|offset| <= 1 ms within {bars['s2']:.0f} s", row.settle is not None and row.settle <= bars["s2"])
    row.check(
        "kernel frequency within 10 ppm of the correction needed",
        row.freq_error is not None and abs(row.freq_error) <= 10,
        f"needed {row.needed if row.needed is None else round(row.needed, 2)} ppm",
    )
    return row


def scenario3(track: Track, timing: Timing, bars: dict) -> Row:
    row = Row("3 restart with driftfile", track.daemon)
    stopped, restart, end = track.event("stopped"), track.event("restart"), track.event("s3-end")
    _common(row, track, restart, end, bias_of(track))
    before = A.median_ppm(track.window(stopped - 30, stopped))
    idle = A.median_ppm(track.window(stopped + 1.5, restart))
    after = A.median_ppm(track.window(restart, end))
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    row.check(
        "stopped: kernel left at its frequency, no slew running (+-1 ppm)",
        before is not None and idle is not None and abs(idle - before) <= 1,
        f"{fmt(before)} ppm before the stop, {fmt(idle)} ppm while stopped",
    )
    # The median over the minutes after the restart: what the estimator
    # made of the new samples as much as what it restored, so under TCG's
    # noise an accuracy figure (once 8.6 ppm off in a noisy run).
    row.check_accuracy(
        "frequency back within 1 ppm",
        before is not None and after is not None and abs(after - before) <= 1,
        f"{fmt(after)} ppm after the restart",
    )
    steps = A.steps(track.window(stopped, end))
    row.check("no step", not steps, _fmt_steps([(t - stopped, s) for t, s in steps]))
    ok, detail = _clock_within(track, track.window(stopped, end))
    row.check_accuracy("|clock offset| <= 1 ms throughout", ok, detail)
    return row


def _log_time(text: str, pattern: str) -> Optional[float]:
    """Host time of the first log line matching `pattern` (env_logger's
    RFC 3339 UTC timestamps are the guest's clock, which is the reference)."""
    for line in text.splitlines():
        if re.search(pattern, line):
            m = re.match(r"\[(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?Z", line)
            if m:
                parts = [int(x) for x in m.groups()[:6]]
                frac = float(m.group(7) or 0)
                return calendar.timegm(tuple(parts)) + frac
    return None


def scenario5(track: Track, timing: Timing, bars: dict, holdover: int, log: str) -> Row:
    row = Row("5 upstreams gone", track.daemon)
    start, gone, end = track.event("start"), track.event("upstreams-gone"), track.event("s5-end")
    _common(row, track, start, gone, bias_of(track))
    after = track.window(gone, end)
    unsync = next((p.t for p in after if p.leap == 3), None)
    during = [p for p in after if unsync is None or p.t < unsync]
    row.check(
        "synchronized in holdover",
        bool(during) and all(p.leap is not None and p.leap != 3 for p in during),
        f"unsynchronized {unsync - gone:.0f} s after the upstreams went" if unsync else "never unsynchronized",
    )
    row.notes.append(
        f"served LI 3 from {unsync - gone:.0f} s after the upstreams went" if unsync else "still synchronized at the end"
    )
    if track.daemon == "tachyond":
        no_selection = _log_time(log, r"no selection:")
        ok = unsync is not None and no_selection is not None
        detail = "no unsynchronized answer or no `no selection` log line"
        if ok:
            ok = gone + holdover - 1 <= unsync <= no_selection + holdover + 3
            detail = (
                f"LI 3 from {unsync - gone:.1f} s after the upstreams went, "
                f"{unsync - no_selection:.1f} s after the first failed selection (holdover {holdover} s)"
            )
        row.check("unsynchronized at the holdover bound", ok, detail)
    if unsync is not None:
        late = [p for p in after if p.t > unsync + 2]
        row.check(
            "then LI 3 served and STA_UNSYNC set",
            bool(late) and all(p.leap in (3, None) and p.state and p.state["status"] & A.STA_UNSYNC for p in late),
        )
    row.check("no step", not A.steps(track.window(start, end)))
    ok, detail = _clock_within(track, during)
    row.check_accuracy("|clock offset| <= 1 ms in holdover", ok, detail)
    return row


def scenario4(track: Track, timing: Timing, bars: dict) -> Row:
    row = Row("4 leap second", track.daemon)
    start, end = track.event("start"), track.event("s4-end")
    scale = track.scale
    leap_host = LEAP_AT - scale.shift  # host time of the leap
    before = track.window(start, leap_host)
    minimum = A.min_delays(track.points)[1]
    row.span, row.skip = (start, end), (leap_host - 2, leap_host + 2)
    row.settle, settled = A.settle(before, start, minimum)
    values = A.precise_served(settled, minimum) + A.precise_served(track.window(leap_host + 2, end), minimum)
    row.rms, row.peak = A.rms(values), A.peak(values)
    all_points = track.window(start, end)
    steps = [(t - start, s) for t, s in A.steps(all_points)]
    row.steps = steps
    leap_steps = [s for s in steps if abs(s[0] - (leap_host - start)) < 3]
    row.check(
        "the kernel inserts the second (one -1 s step at midnight), no other step",
        len(steps) == 1 and len(leap_steps) == 1 and abs(leap_steps[0][1] + 1) < 0.01,
        _fmt_steps(steps),
    )
    ins = next((p.t for p in before if p.state and p.state["status"] & A.STA_INS), None)
    row.check(
        "STA_INS set in time (>= 10 s before)",
        ins is not None and ins <= leap_host - 10,
        f"set {leap_host - ins:.0f} s before the leap" if ins else "never set",
    )
    announce = [p for p in before if ins is not None and p.t >= ins and p.leap is not None]
    row.check(
        "LI 1 served before the leap",
        bool(announce) and all(p.leap == 1 for p in announce),
        f"{sum(p.leap == 1 for p in announce)} of {len(announce)} answers",
    )
    # The leap table also gives the kernel TAI - UTC (CLOCK_TAI): 36 s before
    # this leap, 37 s after (the kernel adds the inserted second itself).
    tai_before = {p.state.get("tai") for p in before if p.state and p.t >= start + 30}
    tai_after = {p.state.get("tai") for p in track.window(leap_host + 10, end) if p.state}
    row.check(
        "kernel TAI offset 36 s before the leap, 37 s after",
        tai_before == {36} and tai_after == {37},
        f"before {sorted(tai_before, key=str)}, after {sorted(tai_after, key=str)}",
    )
    late = track.window(leap_host + 10, end)
    row.check(
        "LI 0 served and STA_INS cleared after",
        bool(late) and all(p.leap == 0 and p.state and not p.state["status"] & A.STA_INS for p in late),
    )
    around = [p for p in track.window(leap_host - 20, leap_host + 20) if p.served is not None]
    outside = [p for p in around if not A.served_good(p, minimum)]
    row.check_accuracy(
        "served time continuous across the leap (|offset| <= 1 ms)",
        bool(around) and not outside,
        f"{len(outside)} of {len(around)} answers outside",
    )
    row.check_accuracy(f"|offset| <= 1 ms within {bars['s4']:.0f} s", row.settle is not None and row.settle <= bars["s4"])
    return row


MIN_COMMON_SAMPLES = 10


def common_rms(rows: List[Row], tracks: dict) -> None:
    """Fills rms_common for the two daemons' rows of each scenario."""
    by = {}
    for r in rows:
        by.setdefault(r.scenario, []).append(r)
    for pair in by.values():
        if len(pair) != 2 or any(r.settle is None for r in pair):
            continue
        offset = max(r.settle for r in pair)
        for r in pair:
            start, end = r.span
            points = tracks[r.daemon].window(start + offset, end)
            if r.skip:
                points = [p for p in points if not r.skip[0] <= p.t < r.skip[1]]
            values = A.precise_served(points, A.min_delays(tracks[r.daemon].points)[1])
            # A span of a few samples (one daemon settled at the very end) says nothing.
            r.rms_common = A.rms(values) if len(values) >= MIN_COMMON_SAMPLES else None


def verdicts(group: str, pair: Pair, timing: Timing, bars: dict, holdover: int) -> List[Row]:
    rows = []
    for d in ("tachyond", "chronyd"):
        track = pair.tracks[d]
        if group == "offset":
            rows.append(scenario1(track, timing, bars))
        elif group == "skew":
            rows += [scenario2(track, timing, bars), scenario6(track, timing, bars), scenario3(track, timing, bars)]
        elif group == "holdover":
            log = ""
            try:
                with open(f"{pair.ctx.workdir}/{track.name}.daemon.log") as f:
                    log = f.read()
            except OSError:
                pass
            rows.append(scenario5(track, timing, bars, holdover, log))
        elif group == "leap":
            rows.append(scenario4(track, timing, bars))
    common_rms(rows, pair.tracks)
    return rows
