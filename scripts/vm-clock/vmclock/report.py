"""The table (Markdown, so docs/sync.md can take it as printed), the
tachyond-versus-chronyd bar, and every check with its detail."""

from typing import Dict, List, Optional, Tuple

from .scenarios import Row

# "Equal" allows for the sampling: one sample a second, and an RMS that two
# runs of the same daemon do not reproduce to better than about 10%, plus a
# floor for the measurement's own noise (tens of µs under TCG, where the host
# side's exchanges with a guest vary by hundreds of µs; a few µs with KVM).
SETTLE_TOLERANCE = 2.0
RMS_RATIO = 1.10
RMS_FLOOR = {True: 5e-6, False: 25e-6}  # by KVM


def _seconds(v: Optional[float]) -> str:
    return "never" if v is None else f"{v:.0f} s"


def _us(v: Optional[float]) -> str:
    return "-" if v is None else f"{v * 1e6:.0f} µs"


def _ppm(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:+.2f} ppm"


def table(rows: List[Row]) -> str:
    lines = [
        "| scenario | daemon | time to \\|offset\\| ≤ 1 ms | RMS after | max after | RMS, both settled "
        "| frequency error | steps | bars |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    previous = None
    for r in rows:
        failed = [name for name, ok, _ in r.checks if not ok]
        verdict = "all met" if not failed else "missed: " + "; ".join(failed)
        steps = ", ".join(f"{size:+.3f} s" for _, size in r.steps) or "none"
        lines.append(
            f"| {r.scenario if r.scenario != previous else ''} | {r.daemon} | {_seconds(r.settle)} | "
            f"{_us(r.rms)} | {_us(r.peak)} | {_us(r.rms_common)} | {_ppm(r.freq_error)} | {steps} | {verdict} |"
        )
        previous = r.scenario
    return "\n".join(lines)


def comparisons(rows: List[Row], kvm: bool) -> List[Tuple[str, bool, str]]:
    """tachyond equal to or better than chronyd, per scenario, on time to
    1 ms and on RMS after settling (over the same span for both: from when
    both had settled)."""
    by: Dict[str, Dict[str, Row]] = {}
    for r in rows:
        by.setdefault(r.scenario, {})[r.daemon] = r
    out = []
    for scenario, pair in by.items():
        t, c = pair.get("tachyond"), pair.get("chronyd")
        if t is None or c is None:
            continue
        if t.settle is None:
            ok_time = False
        else:
            ok_time = c.settle is None or t.settle <= c.settle + SETTLE_TOLERANCE
        out.append(
            (f"{scenario}: time to 1 ms", ok_time, f"tachyond {_seconds(t.settle)}, chronyd {_seconds(c.settle)}")
        )
        if t.settle is not None and c.settle is None:
            ok_rms, detail = True, f"tachyond {_us(t.rms)}, chronyd never settled"
        elif t.rms_common is None or c.rms_common is None:
            # Too little time with both settled: each over its own span.
            ok_rms = t.rms is not None and (c.rms is None or t.rms <= c.rms * RMS_RATIO + RMS_FLOOR[kvm])
            detail = f"own spans (too short together): tachyond {_us(t.rms)}, chronyd {_us(c.rms)}"
        else:
            tr, cr = t.rms_common, c.rms_common
            ok_rms = tr is not None and (cr is None or tr <= cr * RMS_RATIO + RMS_FLOOR[kvm])
            detail = f"tachyond {_us(tr)}, chronyd {_us(cr)} (own spans: {_us(t.rms)}, {_us(c.rms)})"
        out.append((f"{scenario}: RMS after settling", ok_rms, detail))
    return out


def details(rows: List[Row]) -> str:
    lines = []
    for r in rows:
        needed = "" if r.needed is None else f" (the clock needed {r.needed:+.2f} ppm)"
        lines.append(f"{r.scenario}, {r.daemon}{needed}:")
        for name, ok, detail in r.checks:
            lines.append(f"  [{'ok' if ok else 'MISSED'}] {name}" + (f": {detail}" if detail else ""))
        for note in r.notes:
            lines.append(f"  note: {note}")
    return "\n".join(lines)
