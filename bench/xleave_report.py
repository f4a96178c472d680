#!/usr/bin/env python3
"""Summarises a bench/xleave results directory: per server and phase, the
median over rounds of CPU per answer, interleaved share, offsets, T4 - T3 and
(tachyond) the T3 error histogram, then the targets of docs/benchmarks.md."""

import json
import os
import re
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def t3_error_quantiles(before, after):
    """p50 and p99 (µs) of tachyon_t3_error_seconds over a run, from its
    cumulative buckets (the bound of the bucket the quantile falls in)."""

    def buckets(path):
        out = {}
        if not os.path.exists(path):
            return out
        for line in open(path):
            m = re.match(r'tachyon_t3_error_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
            if m and m.group(1) != "+Inf":
                out[float(m.group(1))] = int(m.group(2))
        return out

    b0, b1 = buckets(before), buckets(after)
    if not b1:
        return None
    delta = sorted((le, b1[le] - b0.get(le, 0)) for le in b1)
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None

    def q(p):
        for le, cum in delta:
            if cum >= p * total:
                return le * 1e6
        return float("inf")

    return {"count": total, "p50_le": q(0.5), "p99_le": q(0.99)}


def runs(res):
    """{(server, phase): [ {..measures..} per round ]}"""
    out = {}
    for server in sorted(os.listdir(res)):
        d = os.path.join(res, server)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            m = re.match(r"(.+)\.r(\d+)\.json$", f)
            if not m:
                continue
            phase = m.group(1)
            try:
                doc = load(os.path.join(d, f))
                t = doc["totals"]
            except (ValueError, KeyError):
                continue
            steady = [s for s in doc.get("seconds", []) if s.get("second", 0) >= 2]
            steady_answered = sum(s["answered"] for s in steady)
            steady_pct = (
                100.0 * sum(s.get("interleaved", 0) for s in steady) / steady_answered
                if steady_answered
                else None
            )
            meta = load(os.path.join(d, f[:-5] + ".meta.json"))
            r = {
                "answered": t["answered"],
                "answer_rate": t["answer_rate"],
                "cpu_us": 1e6 * meta["cpu_s"] / meta["replies"] if meta["replies"] else None,
                "interleaved_pct": t.get("interleaved_pct", 0.0),
                "steady_pct": steady_pct,
                "ioffset_p50": t["time_error_interleaved_us"]["p50"] if t.get("interleaved") else None,
                "ioffset_p99": t["time_error_interleaved_us"]["p99"] if t.get("interleaved") else None,
                "offset_p50": t["time_error_us"]["p50"] if t["time_error_us"]["count"] else None,
                "offset_p99": t["time_error_us"]["p99"] if t["time_error_us"]["count"] else None,
                "after_t3_p50": t.get("reply_after_t3_us", {}).get("p50"),
                "after_t3_p99": t.get("reply_after_t3_us", {}).get("p99"),
                "lost_pct": t["lost_pct"],
            }
            base = os.path.join(d, f[:-5])
            e = t3_error_quantiles(base + ".metrics0", base + ".metrics1")
            if e:
                r["t3err_p50_le"] = e["p50_le"]
                r["t3err_p99_le"] = e["p99_le"]
            out.setdefault((server, phase), []).append(r)
    return out


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=2):
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def main():
    res = sys.argv[1]
    data = runs(res)
    cols = [
        ("answered/s", "answer_rate", 0),
        ("lost %", "lost_pct", 2),
        ("CPU µs/answer", "cpu_us", 2),
        ("interleaved %", "interleaved_pct", 2),
        ("from 3rd s", "steady_pct", 2),
        ("|offset| xleave p50", "ioffset_p50", 3),
        ("p99", "ioffset_p99", 2),
        ("|offset| basic p50", "offset_p50", 2),
        ("p99", "offset_p99", 2),
        ("T4-T3 p50", "after_t3_p50", 1),
        ("p99", "after_t3_p99", 1),
        ("T3 err p50 ≤", "t3err_p50_le", 1),
        ("p99 ≤", "t3err_p99_le", 1),
    ]
    print("| server | phase | rounds | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for (server, phase), rows in sorted(data.items()):
        cells = [fmt(med(rows, key), d) for _, key, d in cols]
        print(f"| {server} | {phase} | {len(rows)} | " + " | ".join(cells) + " |")
    print()

    def get(server, phase, key):
        return med(data.get((server, phase), []), key)

    on = get("tachyond", "xleave-50000", "cpu_us")
    off = get("tachyond-off", "xleave-50000", "cpu_us")
    on_b = get("tachyond", "basic-50000", "cpu_us")
    off_b = get("tachyond-off", "basic-50000", "cpu_us")
    checks = [
        ("interleaved ≥ 95 % of answers at 50k/s", get("tachyond", "xleave-50000", "interleaved_pct"), 95, ">="),
        ("interleaved ≥ 95 % of answers at 100k/s", get("tachyond", "xleave-100000", "interleaved_pct"), 95, ">="),
        ("interleaved |offset| median ≤ 0.5 µs at 50k/s", get("tachyond", "xleave-50000", "ioffset_p50"), 0.5, "<="),
        ("interleaved |offset| p99 ≤ 5 µs at 50k/s", get("tachyond", "xleave-50000", "ioffset_p99"), 5, "<="),
        ("CPU per answer on/off ≤ 1.15 (interleaved load, 50k/s)", on / off if on and off else None, 1.15, "<="),
        ("CPU per answer on/off ≤ 1.15 (basic load, 50k/s)", on_b / off_b if on_b and off_b else None, 1.15, "<="),
        ("T3 error p99 ≤ 10 µs below saturation (T4-T3, 50k/s)", get("tachyond", "basic-50000", "after_t3_p99"), 10, "<="),
        (
            "T3 error p99 at overload ≤ chronyd's (T4-T3, 200k/s)",
            get("tachyond", "overload-200000", "after_t3_p99"),
            get("chronyd", "overload-200000", "after_t3_p99"),
            "<=",
        ),
    ]
    print("| target | measured | bound | met |")
    print("|---|---|---|---|")
    for name, value, bound, op in checks:
        met = None
        if value is not None and bound is not None:
            met = value >= bound if op == ">=" else value <= bound
        print(f"| {name} | {fmt(value, 3)} | {op} {fmt(bound, 2)} | {'-' if met is None else ('yes' if met else 'no')} |")
    print()
    print("interleaved % from the 3rd second, 16384 clients at 50k/s: tachyond",
          fmt(get("tachyond", "xleave-many-50000", "steady_pct")), "chronyd",
          fmt(get("chronyd", "xleave-many-50000", "steady_pct")))


if __name__ == "__main__":
    main()
