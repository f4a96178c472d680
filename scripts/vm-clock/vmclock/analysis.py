"""Figures from a track's samples: time to |offset| <= 1 ms, RMS and maximum
after that, steps, the frequency the guest's clock needed and the frequency the
daemon gave it."""

import math
import statistics
from typing import List, Optional, Tuple

from .record import Point

BOUND = 1e-3
STA_INS = 0x0010
STA_DEL = 0x0020
STA_UNSYNC = 0x0040
STEP_THRESHOLD = 1e-3


# A sample whose round trip exceeds the path's minimum by x can be off by up
# to x/2 (all of the excess on one leg). Such a sample shows a clock outside
# the bound only when it is outside by more than that; RMS and maximum take
# only samples whose own uncertainty is within this.
PRECISE = 250e-6


def min_delays(points: List[Point]) -> Tuple[float, float]:
    """The lowest round trip seen to the probe and to the daemon."""
    probe = [p.clock_delay for p in points if p.clock_delay is not None]
    served = [p.served_delay for p in points if p.served_delay is not None]
    return (min(probe) if probe else 0.0, min(served) if served else 0.0)


def uncertainty(delay: Optional[float], minimum: float) -> float:
    return max(0.0, (delay or 0.0) - minimum) / 2


def served_good(p: Point, minimum: float) -> bool:
    """The daemon answered, synchronized, not provably beyond the bound."""
    if p.served is None or p.leap == 3:
        return False
    return abs(p.served) - uncertainty(p.served_delay, minimum) <= BOUND


def precise_served(points: List[Point], minimum: float) -> List[float]:
    return [
        p.served
        for p in points
        if p.served is not None and p.leap != 3 and uncertainty(p.served_delay, minimum) <= PRECISE
    ]


def clock_beyond(points: List[Point], minimum: float) -> Tuple[int, float, int]:
    """Samples of the kernel clock provably beyond the bound, the largest
    |offset| among the precise ones, and how many samples there were."""
    beyond, worst, n = 0, 0.0, 0
    for p in points:
        if p.clock is None:
            continue
        n += 1
        e = uncertainty(p.clock_delay, minimum)
        beyond += abs(p.clock) - e > BOUND
        if e <= PRECISE:
            worst = max(worst, abs(p.clock))
    return beyond, worst, n


def settle(points: List[Point], start: float, minimum: float) -> Tuple[Optional[float], List[Point]]:
    """Seconds from `start` until the served offset stays within 1 ms to the
    end of `points` (an unsynchronized answer, or none, counts as outside),
    and the points from then on. (None, []) when it never settles."""
    first_good = None
    for i, p in enumerate(points):
        if not served_good(p, minimum):
            first_good = None
        elif first_good is None:
            first_good = i
    if first_good is None:
        return None, []
    return max(0.0, points[first_good].t - start), points[first_good:]


def rms(values: List[float]) -> Optional[float]:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else None


def peak(values: List[float]) -> Optional[float]:
    return max(abs(v) for v in values) if values else None


def wall_minus_mono(p: Point) -> Optional[int]:
    s = p.state
    return s["real"] - s["mono"] if "real" in s and "mono" in s else None


def steps(points: List[Point]) -> List[Tuple[float, float]]:
    """(host time, seconds) of every jump of CLOCK_REALTIME against
    CLOCK_MONOTONIC between consecutive samples: a step or a leap second.
    Frequency changes and slews move both clocks alike."""
    out = []
    previous = None
    for p in points:
        d = wall_minus_mono(p)
        if d is None:
            continue
        if previous is not None and abs(d - previous) > STEP_THRESHOLD * 1e9:
            out.append((p.t, (d - previous) * 1e-9))
        previous = d
    return out


def kernel_ppm(state: dict) -> Optional[float]:
    """The kernel's frequency correction, ppm: tick (10000 µs nominal) and
    freq (ppm << 16) together."""
    if "tick" not in state or "freq" not in state:
        return None
    return (state["tick"] - 10000) * 100.0 + state["freq"] / 65536.0


def median_ppm(points: List[Point]) -> Optional[float]:
    values = [v for v in (kernel_ppm(p.state) for p in points) if v is not None]
    return statistics.median(values) if values else None


def slope(xs: List[float], ys: List[float]) -> Optional[float]:
    if len(xs) < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def raw_bias(points: List[Point]) -> Optional[float]:
    """d(monotonic - raw)/dt while the kernel applies no correction: the raw
    clock's own scaling error (a few ppm under TCG), dimensionless."""
    xs, ys = [], []
    for p in points:
        s = p.state
        if "mono" in s and "raw" in s:
            xs.append(s["raw"] * 1e-9)
            ys.append((s["mono"] - s["raw"]) * 1e-9)
    return slope(xs, ys)


def natural_rate(points: List[Point], bias: float) -> Optional[float]:
    """How fast the guest's clock runs against the reference with no
    correction, dimensionless (positive: fast). The kernel's corrections and
    steps are taken out of the measured offset with realtime - raw, which
    sums them exactly, whatever the daemon did between two samples."""
    xs, ys = [], []
    for p in points:
        s = p.state
        if p.clock is None or "real" not in s or "raw" not in s:
            continue
        correction = (s["real"] - s["raw"]) * 1e-9 - bias * s["raw"] * 1e-9
        xs.append(p.t)
        ys.append(p.clock - correction)
    if len(xs) < 3:
        return None
    # Outliers from one delayed exchange would tilt a short fit.
    base = slope(xs, ys)
    if base is None:
        return None
    x0, y0 = xs[0], ys[0]
    residuals = [y - y0 - base * (x - x0) for x, y in zip(xs, ys)]
    mid = statistics.median(residuals)
    spread = statistics.median(abs(r - mid) for r in residuals) * 4 + 1e-5
    kept = [(x, y) for (x, y), r in zip(zip(xs, ys), residuals) if abs(r - mid) <= spread]
    return slope([x for x, _ in kept], [y for _, y in kept])
