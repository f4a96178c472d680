#!/usr/bin/env python3
"""Turn the results of bench/compare into tables, a verdict on the design targets,
SVG plots and a raw JSON file.

    python3 bench/compare_report.py RESULTS_DIR [--docs DOCS_DIR]

Without --docs it prints the Markdown section on stdout. With --docs it also
replaces the generated section of DOCS_DIR/benchmarks.md (between its
begin/end markers, or appended when they are missing) and writes the plots and
compare-raw.json (compare-scaling-raw.json in scaling mode) to
DOCS_DIR/benchmarks/. Standard library only.
"""

import argparse
import csv
import glob
import json
import math
import os
import re
import sys

# The servers of a run, in this order; `tachyond_uring` only with --io xdp.
ALL_SERVERS = ["tachyond", "tachyond_uring", "chronyd", "reflector"]
SERVERS = ["tachyond", "chronyd", "reflector"]
LABEL = {
    "tachyond": "tachyond (1 worker, io_uring)",
    "tachyond_uring": "tachyond (1 worker, io_uring)",
    "chronyd": "chronyd -x",
    "reflector": "reference (recvmmsg/sendmmsg)",
}
COLOR = {"tachyond": "#1f6fb4", "tachyond_uring": "#7f4fb4", "chronyd": "#d9541e", "reflector": "#3a9a3a"}
LOSS_LIMIT = 1.0  # % for capacity


# --- loading -------------------------------------------------------------------------------

def load_json(path):
    with open(path) as f:
        return json.load(f)


def metrics_values(path):
    """name{labels} -> value from a Prometheus exposition file (missing file: {})."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def perf_values(path):
    """event -> count from `perf stat -x,` output (missing or failed: {})."""
    out = {}
    if not os.path.exists(path):
        return out
    for row in csv.reader(line for line in open(path) if line.strip() and not line.startswith("#")):
        if len(row) >= 3:
            try:
                out[row[2]] = float(row[0])
            except ValueError:
                pass
    return out


def load_runs(res):
    """server -> phase -> {"blast", "meta", "batch", "busy_s"}."""
    runs = {}
    for meta_path in glob.glob(os.path.join(res, "*", "*.meta.json")):
        server = os.path.basename(os.path.dirname(meta_path))
        phase = os.path.basename(meta_path)[: -len(".meta.json")]
        blast_path = meta_path[: -len(".meta.json")] + ".json"
        try:
            blast = load_json(blast_path)
        except (OSError, ValueError):
            blast = None  # ntp-blast printed nothing: a failed run
        run = {"blast": blast, "meta": load_json(meta_path)}
        m0 = metrics_values(meta_path[: -len(".meta.json")] + ".metrics0")
        m1 = metrics_values(meta_path[: -len(".meta.json")] + ".metrics1")
        if m0 and m1:
            wakeups = m1.get("tachyon_batch_size_count", 0) - m0.get("tachyon_batch_size_count", 0)
            datagrams = m1.get("tachyon_batch_size_sum", 0) - m0.get("tachyon_batch_size_sum", 0)
            run["batch"] = {"wakeups": wakeups, "datagrams": datagrams}
            busy = [k for k in m1 if k.startswith("tachyon_worker_busy_seconds_total")]
            run["busy_s"] = sum(m1[k] - m0.get(k, 0) for k in busy)
        runs.setdefault(server, {})[phase] = run
    for server in runs:
        perf = perf_values(os.path.join(res, server, "perf.csv"))
        if perf and "perf" in runs[server]:
            runs[server]["perf"]["perf"] = perf
    return runs


# --- figures -------------------------------------------------------------------------------

def totals(run):
    return run["blast"]["totals"] if run and run.get("blast") else None


def cpu_per_answer_us(run, key="cpu_s"):
    """µs of CPU per reply: the server's own (cpu_s) or the whole machine's (machine_cpu_s)."""
    if not run or run["meta"]["replies"] <= 0 or run["meta"].get(key) is None:
        return None
    return run["meta"][key] * 1e6 / run["meta"]["replies"]


def step_behind(step):
    """ntp-blast could not offer the step's rate (> 1 % skipped) or dropped answers itself."""
    return step["skipped"] > 0.01 * max(step["offered"], 1) or step["local_drops"] > 0.01 * max(step["sent"], 1)


def capacity(run):
    """(capacity, limited_by_generator, ramp_exhausted) from a ramp run: the highest step with
    < 1 % loss, every step before it too, where ntp-blast kept its schedule. A step where the
    generator fell behind ends the search: the server's limit is then unknown, above."""
    if not run or not run.get("blast"):
        return None, False, False
    best = 0
    for step in run["blast"]["steps"]:
        if step["sent"] == 0:
            return best, False, False
        if step_behind(step):
            return best, True, False
        if step["lost_pct"] >= LOSS_LIMIT:
            return best, False, False
        best = step["rate"]
    return best, False, True


def disturbed(run):
    """Something else used more than 10 % of a core during the run (see other_cpu_s)."""
    m = (run or {}).get("meta", {})
    return m.get("other_cpu_s") is not None and m.get("wall_s", 0) > 0 and m["other_cpu_s"] > 0.1 * m["wall_s"]


def generator_behind(run):
    """ntp-blast skipped more than 1 % of the schedule, or dropped answers itself."""
    t = totals(run)
    return bool(t) and (t["skipped"] > 0.01 * max(t["offered"], 1) or t["local_drops"] > 0.01 * max(t["sent"], 1))


def answered_rate(run):
    t = totals(run)
    if not t:
        return None
    return t["answered"] / run["blast"]["config"]["duration_s"]


def split_phase(phase):
    """'fixed-50000.r2' -> ('fixed-50000', 2); 'ramp' -> ('ramp', 0)."""
    m = re.match(r"^(.*?)(?:\.r(\d+))?$", phase)
    return m.group(1), int(m.group(2) or 0)


def by_base(r):
    """phase base -> [(round, run), ...] sorted by round."""
    out = {}
    for phase, run in r.items():
        base, rnd = split_phase(phase)
        out.setdefault(base, []).append((rnd, run))
    return {k: sorted(v, key=lambda x: x[0]) for k, v in out.items()}


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def spread(xs):
    """{"median", "min", "max", "values"} of the non-missing values (values by round)."""
    vals = [x for x in xs if x is not None]
    return {"median": median(vals), "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "values": xs}


def summarize(runs, fixed_rates, overload_rates):
    s = {}
    for server in SERVERS:
        r = runs.get(server, {})
        rb = by_base(r)
        d = {"cpu_us": {}, "machine_us": {}, "lost_pct": {}, "wakeup_batch": {}, "overload": {}, "queue_drops": {}}
        for rate in fixed_rates:
            rs = [run for _, run in rb.get(f"fixed-{rate}", [])]
            d["cpu_us"][rate] = spread([cpu_per_answer_us(run) for run in rs])
            d["machine_us"][rate] = spread([cpu_per_answer_us(run, "machine_cpu_s") for run in rs])
            d["lost_pct"][rate] = spread([totals(run)["lost_pct"] if totals(run) else None for run in rs])
            d["queue_drops"][rate] = sum(run["meta"].get("server_queue_drops", 0) for run in rs)
            b = [run["batch"]["datagrams"] / run["batch"]["wakeups"] for run in rs
                 if run.get("batch") and run["batch"]["wakeups"] > 0]
            if b:
                d["wakeup_batch"][rate] = median(b)
            if rate == 100000:
                hs = [totals(run)["server_us"] for run in rs if totals(run)]
                d["t3t2_100k"] = {k: spread([h.get(k) for h in hs]) for k in ("mean", "p50", "p99", "p999")}
                es = [totals(run)["time_error_us"] for run in rs if totals(run) and "time_error_us" in totals(run)]
                d["offset_100k"] = {k: spread([e.get(k) for e in es]) for k in ("p50", "p99")}
        cap, limited, exhausted = capacity(r.get("ramp"))
        d.update(capacity=cap, capacity_generator_limited=limited, capacity_ramp_exhausted=exhausted)
        lat = r.get("latency")
        if totals(lat):
            d["latency"] = {
                "rate": lat["blast"]["config"]["rate"],
                "server_us": totals(lat)["server_us"],
                "rtt_us": totals(lat)["rtt_us"],
                "lost_pct": totals(lat)["lost_pct"],
                "generator_behind": generator_behind(lat),
                "disturbed": disturbed(lat),
            }
        for rate in overload_rates:
            rs = [run for _, run in rb.get(f"overload-{rate}", []) if totals(run)]
            if not rs:
                continue
            d["queue_drops"][rate] = sum(run["meta"].get("server_queue_drops", 0) for run in rs)
            d["overload"][rate] = {
                "answered_rate": spread([answered_rate(run) for run in rs]),
                "answered_pct": spread([100.0 * totals(run)["answered"] / max(totals(run)["offered"], 1)
                                        for run in rs]),
                "generator_behind": any(generator_behind(run) for run in rs),
                "disturbed": len(rs) == 1 and disturbed(rs[0]),
                "rounds": len(rs),
            }
        perf_run = r.get("perf")
        if perf_run and perf_run.get("perf") and perf_run["meta"]["replies"] > 0:
            p, n = perf_run["perf"], perf_run["meta"]["replies"]
            d["perf"] = {
                "answers": n,
                "task_clock_us_per_answer": p.get("task-clock", 0) * 1e3 / n,
                "context_switches_per_answer": p.get("context-switches", 0) / n,
                "cpu_migrations": p.get("cpu-migrations", 0),
                "syscalls_per_answer": p.get("raw_syscalls:sys_enter", 0) / n if "raw_syscalls:sys_enter" in p else None,
            }
            if perf_run.get("batch") and perf_run["batch"]["wakeups"] > 0:
                d["perf"]["answers_per_wakeup"] = perf_run["batch"]["datagrams"] / perf_run["batch"]["wakeups"]
        rss = [run["meta"].get("rss_kb") for run in r.values() if run["meta"].get("rss_kb")]
        hwm = [run["meta"].get("hwm_kb") for run in r.values() if run["meta"].get("hwm_kb")]
        d["rss_kb"] = max(rss) if rss else None
        d["hwm_kb"] = max(hwm) if hwm else None
        d["steal_s"] = sum(run["meta"].get("steal_s", 0) for run in r.values())
        s[server] = d
    return s


def targets(s):
    """The design targets of issue 3, judged on this run: on the medians over the
    rounds, and round by round (each round runs the three servers back to back). Each row:
    (name, {server: median of the metric}, bound, met, (rounds met, rounds) or None)."""
    t, c, f = s.get("tachyond", {}), s.get("chronyd", {}), s.get("reflector", {})
    out = []

    def check(name, metric, value, ref, factor, better="lower"):
        """metric(server summary) -> spread; value, ref: the spreads compared."""
        shown = {srv: (metric(s.get(srv, {})) or {}).get("median") for srv in SERVERS}
        if not value or not ref or value["median"] is None or ref["median"] is None:
            out.append((name, shown, None, None, None))
            return
        ok = (lambda v, r: v <= factor * r) if better == "lower" else (lambda v, r: v >= factor * r)
        pairs = [(v, r) for v, r in zip(value["values"], ref["values"]) if v is not None and r is not None]
        # Round by round only where both sides ran in every round.
        same = len(value["values"]) == len(ref["values"]) > 1
        rounds = (sum(ok(v, r) for v, r in pairs), len(pairs)) if same else None
        bound = f"{'≤' if better == 'lower' else '≥'} {num(factor * ref['median'])}"
        out.append((name, shown, bound, ok(value["median"], ref["median"]), rounds))

    for rate in (50000, 100000):
        k = f"{rate // 1000}k/s"
        cpu = lambda d, rate=rate: d.get("cpu_us", {}).get(rate)
        check(f"CPU per answer at {k} ≤ chronyd's (µs)", cpu, cpu(t), cpu(c), 1.0)
        check(f"CPU per answer at {k} ≤ 1.05 × reference's (µs)", cpu, cpu(t), cpu(f), 1.05)
    o = lambda d, rate: (d.get("overload", {}).get(rate) or {}).get("answered_rate")
    check("offered 200k/s: answered ≥ 1.3 × chronyd's (/s)", lambda d: o(d, 200000), o(t, 200000), o(c, 200000),
          1.3, better="higher")
    over = sorted(t.get("overload", {}))
    if len(over) >= 2:
        hi, lo = over[-1], over[-2]
        check(f"offered {fmt_rate(hi)}/s: answered ≥ 0.95 × its own at {fmt_rate(lo)}/s, no collapse (/s)",
              lambda d: o(d, hi), o(t, hi), o(t, lo), 0.95, better="higher")
    for key in ("mean", "p99"):
        t32 = lambda d, key=key: (d.get("t3t2_100k") or {}).get(key)
        check(f"T3−T2 {key} at 100k/s ≤ 0.5 × chronyd's (µs)", t32, t32(t), t32(c), 0.5)
    return out


# --- SVG -----------------------------------------------------------------------------------

class Svg:
    def __init__(self, width, height):
        self.w, self.h, self.items = width, height, []

    def add(self, s):
        self.items.append(s)

    def text(self, x, y, s, size=12, anchor="start", color="#222", rotate=None, weight="normal"):
        s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        rot = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'fill="{color}" font-weight="{weight}"{rot}>{s}</text>')

    def line(self, x1, y1, x2, y2, color="#222", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
                 f'stroke-width="{width}"{d}/>')

    def rect(self, x, y, w, h, color, opacity=1.0):
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
                 f'fill="{color}" fill-opacity="{opacity}"/>')

    def polyline(self, pts, color, width=2):
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.add(f'<polyline points="{p}" fill="none" stroke="{color}" stroke-width="{width}"/>')

    def circle(self, x, y, r, color, hollow=False):
        fill = f'fill="white" stroke="{color}" stroke-width="1.5"' if hollow else f'fill="{color}"'
        self.add(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" {fill}/>')

    def render(self):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" font-family="sans-serif">\n'
                f'<rect width="{self.w}" height="{self.h}" fill="white"/>\n'
                + "\n".join(self.items) + "\n</svg>\n")


def legend(svg):
    x = 80
    for srv in SERVERS:
        svg.rect(x, 10, 14, 10, COLOR[srv])
        svg.text(x + 20, 19, LABEL[srv], 12)
        x += 20 + 7 * len(LABEL[srv]) + 40


def nice_ticks(hi, n=5):
    if hi <= 0:
        return [0, 1]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(hi / step)) + 1)]


def fmt_rate(v):
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


def rate_points(runs, server):
    """(offered, answered/s, loss %) for every run of one server, by offered rate."""
    pts = []
    r = runs.get(server, {})
    for phase, run in r.items():
        if not run.get("blast") or phase == "perf":
            continue
        if phase == "ramp":
            for st in run["blast"]["steps"]:
                # A step cut short by --stop-on-loss says nothing about its rate.
                if st["sent"] > 0 and st["duration_s"] > 0 and st["sending_s"] >= 0.9 * st["duration_s"]:
                    pts.append((st["rate"], st["answered"] / st["duration_s"], st["lost_pct"], step_behind(st)))
        else:
            t, cfg = run["blast"]["totals"], run["blast"]["config"]
            if cfg.get("rate"):
                pts.append((cfg["rate"], t["answered"] / cfg["duration_s"], t["lost_pct"], generator_behind(run)))
    return sorted(pts)


def plot_rates(runs, path):
    svg = Svg(960, 420)
    allpts = {s: rate_points(runs, s) for s in SERVERS}
    xmax = max([p[0] for pts in allpts.values() for p in pts] + [1])
    xt = nice_ticks(xmax)
    panels = [("answered requests/s", 1, max(xt[-1], 1)), ("lost % of sent", 2, None)]
    for i, (title, idx, ymax) in enumerate(panels):
        x0, y0, pw, ph = 80 + i * 470, 40, 360, 300
        if ymax is None:
            ymax = max([p[2] for pts in allpts.values() for p in pts] + [1])
        yt = nice_ticks(ymax)
        ymax = yt[-1]
        sx = lambda v: x0 + pw * v / xt[-1]
        sy = lambda v: y0 + ph - ph * v / ymax
        for v in xt:
            svg.line(sx(v), y0, sx(v), y0 + ph, "#ddd")
            svg.text(sx(v), y0 + ph + 16, fmt_rate(v), 11, "middle")
        for v in yt:
            svg.line(x0, sy(v), x0 + pw, sy(v), "#ddd")
            svg.text(x0 - 6, sy(v) + 4, fmt_rate(v) if idx == 1 else f"{v:g}", 11, "end")
        svg.line(x0, y0 + ph, x0 + pw, y0 + ph)
        svg.line(x0, y0, x0, y0 + ph)
        if idx == 1:
            top = min(xt[-1], ymax)
            svg.line(sx(0), sy(0), sx(top), sy(top), "#888", 1, "4,4")
            svg.text(sx(top) - 4, sy(top) + 14, "answered = offered", 10, "end", "#888")
        else:
            svg.line(sx(0), sy(LOSS_LIMIT), sx(xt[-1]), sy(LOSS_LIMIT), "#888", 1, "4,4")
            svg.text(sx(xt[-1]) - 4, sy(LOSS_LIMIT) - 4, "1 % (capacity)", 10, "end", "#888")
        svg.text(x0 + pw / 2, y0 + ph + 36, "offered requests/s", 12, "middle")
        svg.text(x0 - 56, y0 + ph / 2, title, 12, "middle", rotate=-90)
        for s in SERVERS:
            pts = [(sx(p[0]), sy(min(p[idx], ymax)), p[3]) for p in allpts[s]]
            if pts:
                svg.polyline([(x, y) for x, y, _ in pts], COLOR[s], 1.5)
                for x, y, behind in pts:
                    svg.circle(x, y, 3.5 if behind else 2.5, COLOR[s], hollow=behind)
    legend(svg)
    svg.text(480, 410, "Server on one core, ntp-blast on another; fixed-rate runs, ramp steps and overload runs "
             "together. Hollow: ntp-blast fell behind its schedule.", 11, "middle", "#555")
    open(path, "w").write(svg.render())


def plot_latency(s, path):
    groups = []
    marked = {srv for srv in SERVERS if (s[srv].get("latency") or {}).get("disturbed")}
    for key, title in (("server_us", "T3 − T2, half capacity"), ("rtt_us", "round trip, half capacity")):
        groups.append((title, {srv: (s[srv].get("latency") or {}).get(key) for srv in SERVERS}))
    groups.append(("T3 − T2 at 100k/s (median of rounds)",
                   {srv: {k: v["median"] for k, v in (s[srv].get("t3t2_100k") or {}).items()} for srv in SERVERS}))
    pcts = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
    vals = [h[k] for _, g in groups for h in g.values() if h for k, _ in pcts if h.get(k)]
    if not vals:
        return
    lo = 10 ** math.floor(math.log10(max(min(vals), 0.1)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    svg = Svg(960, 400)
    x0, y0, pw, ph = 70, 40, 860, 280
    sy = lambda v: y0 + ph - ph * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    d = lo
    while d <= hi * 1.001:
        svg.line(x0, sy(d), x0 + pw, sy(d), "#ddd")
        svg.text(x0 - 6, sy(d) + 4, f"{d:g}", 11, "end")
        d *= 10
    svg.line(x0, y0 + ph, x0 + pw, y0 + ph)
    svg.line(x0, y0, x0, y0 + ph)
    svg.text(x0 - 48, y0 + ph / 2, "µs (log scale)", 12, "middle", rotate=-90)
    gw = pw / len(groups)
    bw = gw / (len(pcts) * (len(SERVERS) + 1) + 1)
    for gi, (title, hs) in enumerate(groups):
        gx = x0 + gi * gw
        svg.text(gx + gw / 2, y0 + ph + 34, title, 12, "middle", weight="bold")
        for pi, (k, name) in enumerate(pcts):
            px = gx + bw + pi * (len(SERVERS) + 1) * bw
            svg.text(px + bw * len(SERVERS) / 2, y0 + ph + 16, name, 11, "middle")
            for si, srv in enumerate(SERVERS):
                h = hs.get(srv)
                if h and h.get(k):
                    y = sy(h[k])
                    svg.rect(px + si * bw, y, bw * 0.9, y0 + ph - y, COLOR[srv])
                    if gi < 2 and srv in marked:
                        svg.text(px + si * bw + bw * 0.45, y - 4, "†", 12, "middle")
        if gi:
            svg.line(gx, y0, gx, y0 + ph, "#bbb")
    legend(svg)
    if marked:
        svg.text(480, 392, "†: something else on the machine used more than 10 % of a core during that run.", 11,
                 "middle", "#555")
    open(path, "w").write(svg.render())


# --- Markdown ------------------------------------------------------------------------------

def num(v):
    """3 significant digits, thousands separated, no exponent."""
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{max(0, 2 - int(math.floor(math.log10(abs(v)))))}f}" if v else "0"


def f1(v, digits=2, suffix=""):
    return "–" if v is None else f"{v:,.{digits}f}{suffix}"


def kb(v):
    return "–" if v is None else f"{v / 1024:.1f} MiB"


def machine_lines(m, mode):
    return [
        f"Run {m['date']} on `{m['host']}`: {m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}; "
        f"{mode}.",
        f"Versions: tachyond {m['tachyond'].split()[-1]} at `{m['git']}`; {m['chronyd'].split(' (+')[0]} "
        f"(Debian); {m['rustc']}; reference built with {m['gcc']}.",
        f"Load average (1, 5, 15 min) at start {' '.join(m['loadavg_start'])}, at end "
        f"{' '.join(m.get('loadavg_end', ['?']))}.",
    ]


def spread_s(sp, digits=2):
    """'median (min–max)' of a spread; just the median for one round."""
    if not sp or sp["median"] is None:
        return "–"
    if sp["min"] == sp["max"]:
        return f1(sp["median"], digits)
    return f"{f1(sp['median'], digits)} ({f1(sp['min'], digits)}–{f1(sp['max'], digits)})"


def compare_section(m, runs, s, fixed_rates, overload_rates, have_docs_assets):
    rounds = max([split_phase(p)[1] for r in runs.values() for p in r] + [1])
    L = []
    mode = "`--quick` (short steps: a smoke run, not figures to quote)" if m.get("quick") else "full run"
    L.append("<!-- bench/compare:begin (generated by bench/compare; edits inside are overwritten) -->")
    L.append("## bench/compare: tachyond, chronyd and the kernel's floor, in network namespaces")
    L.append("")
    L += machine_lines(m, mode)
    L.append("")
    L.append("Each server in turn in network namespace `tcmp-srv` (10.123.0.1, pinned to core 0), ntp-blast in "
             "`tcmp-cli` (10.123.0.2, pinned to core 1, 64 client sockets, one thread), joined by a veth pair: "
             "tachyond with one io_uring worker (`clock software`, `local stratum 1`), Debian's `chronyd -x` "
             "(`local stratum 1`), and `bench/reflector.c`, a bare `recvmmsg`/`sendmmsg` responder (kernel RX "
             "stamp as T2, one clock read per batch as T3). Server CPU is utime+stime from `/proc/PID/stat` over "
             "the ntp-blast run, divided by the replies the server's veth sent.")
    L.append("")
    dur = {}
    for srv in runs.values():
        for phase, run in srv.items():
            if run.get("blast"):
                dur.setdefault(re.sub(r"-\d+$", "", split_phase(phase)[0]), run["blast"]["config"]["duration_s"])
    L.append("### Server CPU per answered request")
    L.append("")
    L.append(f"µs of server CPU per reply: the median of {rounds} round{'s' if rounds > 1 else ''} "
             f"({dur.get('fixed', '?')} s per rate, the three servers back to back in each round)"
             + (", with the lowest and highest round" if rounds > 1 else "") + "; and the median loss.")
    L.append("")
    L.append("| server | " + " | ".join(f"{fmt_rate(r)}/s" for r in fixed_rates) + " |")
    L.append("|---|" + "---:|" * len(fixed_rates))
    for srv in SERVERS:
        d = s[srv]
        cells = [f"{spread_s(d['cpu_us'].get(r))}; {f1((d['lost_pct'].get(r) or {}).get('median'), 2)} % lost"
                 for r in fixed_rates]
        L.append(f"| {LABEL[srv]} | " + " | ".join(cells) + " |")
    L.append("")
    if any(s[srv].get("perf") for srv in SERVERS):
        L.append(f"`perf stat` of the server during a separate {fmt_rate(50000)}/s run "
                 f"({dur.get('perf', '?')} s; perf's tracepoint counting would bias the CPU figures above):")
        L.append("")
        L.append("| server | task-clock µs/answer | context switches/answer | syscalls/answer | answers per wake-up |")
        L.append("|---|---:|---:|---:|---:|")
        for srv in SERVERS:
            p = s[srv].get("perf")
            if not p:
                L.append(f"| {LABEL[srv]} | – | – | – | – |")
                continue
            apw = p.get("answers_per_wakeup")
            if apw is None and p["context_switches_per_answer"] > 0:
                apw_s = f"≈ {1 / p['context_switches_per_answer']:.2f} (1 / context switches)"
            else:
                apw_s = f"{f1(apw)} (tachyond's metrics)" if apw is not None else "–"
            L.append(f"| {LABEL[srv]} | {f1(p['task_clock_us_per_answer'])} | "
                     f"{f1(p['context_switches_per_answer'], 3)} | {f1(p['syscalls_per_answer'], 3)} | {apw_s} |")
        L.append("")
    L.append("### Capacity, overload and memory")
    L.append("")
    ramp_cfg = next((run["blast"]["config"]["ramp"] for srv in runs.values() for ph, run in srv.items()
                     if ph == "ramp" and run.get("blast")), None)
    ramp_s = ""
    if ramp_cfg:
        ramp_s = (f" (ramp {ramp_cfg.get('start'):g}/s ×{ramp_cfg.get('mult'):g} every "
                  f"{ramp_cfg.get('step_s', '?')} s)" if isinstance(ramp_cfg, dict) else f" (ramp `{ramp_cfg}`)")
    L.append(f"Capacity: the highest ramp step with < 1 % loss, every step before it too, where ntp-blast "
             f"kept its schedule{ramp_s}. "
             f"Overload: offered rates held for {dur.get('overload', '?')} s. Memory: the largest VmRSS seen "
             "after a run, and VmHWM.")
    L.append("")
    L.append("| server | capacity | " + " | ".join(f"offered {fmt_rate(r)}/s: answered/s" for r in overload_rates)
             + " | dropped at the server's socket ³ | VmRSS | VmHWM |")
    L.append("|---|---:|" + "---:|" * len(overload_rates) + "---:|---:|---:|")
    notes = []
    for srv in SERVERS:
        d = s[srv]
        cap = d.get("capacity")
        cap_s = "–" if cap is None else f"{cap:,.0f}/s"
        if disturbed(runs.get(srv, {}).get("ramp")):
            cap_s += " †"
        if d.get("capacity_ramp_exhausted"):
            cap_s = f"≥ {cap_s} (end of ramp)"
        elif d.get("capacity_generator_limited"):
            cap_s = f"≥ {cap_s} ¹"
            notes.append(srv)
        cells = []
        for r in overload_rates:
            o = d["overload"].get(r)
            if not o:
                cells.append("–")
                continue
            mark = (" ²" if o["generator_behind"] else "") + (" †" if o["disturbed"] else "")
            cells.append(f"{spread_s(o['answered_rate'], 0)} ({o['answered_pct']['median']:.1f} %){mark}")
        drops = " / ".join(f"{d['queue_drops'].get(r, 0):,}" for r in fixed_rates + overload_rates)
        L.append(f"| {LABEL[srv]} | {cap_s} | " + " | ".join(cells)
                 + f" | {drops} | {kb(d['rss_kb'])} | {kb(d['hwm_kb'])} |")
    L.append("")
    if notes:
        L.append("¹ At the next step ntp-blast itself fell behind (it skipped more than 1 % of the schedule, or "
                 "dropped answers) before the server lost 1 %: the server's limit is higher, and unknown here.")
        L.append("")
    if any(o["generator_behind"] for srv in SERVERS for o in s[srv]["overload"].values()):
        L.append("² ntp-blast could not send the full offered rate (more than 1 % of the schedule skipped); "
                 "the percentage is of the offered rate.")
        L.append("")
    L.append("³ UDP `RcvbufErrors` in the server's namespace during the "
             + ", ".join(f"{fmt_rate(r)}/s" for r in fixed_rates + overload_rates)
             + " runs (all rounds together): requests the kernel dropped because the server's socket queue was full. tachyond runs with "
             "its default `rcvbuf` (1 MiB since 2026-11-27, 4 MiB before), the reference asks for 4 MiB, and "
             "chronyd runs with the kernel's default (`net.core.rmem_default`).")
    L.append("")
    if any(disturbed(run) for r in runs.values() for ph, run in r.items() if split_phase(ph)[1] == 0):
        L.append("† Something else on the machine used more than 10 % of a core during this (single) run: see "
                 "[Noise](#noise-in-this-run).")
        L.append("")
    L.append("### Latency")
    L.append("")
    L.append("At half of each server's own capacity (one run, kernel TX stamps for T1: `--tx-timestamp kernel`), "
             "and in the 100k/s runs (median over the rounds): T3 − T2, and the offset the client measured with "
             "the server on the same clock — ideally 0, so its size is the asymmetry of the server's "
             "timestamps (a T3 taken too early or too late); µs.")
    L.append("")
    L.append("| server | rate | T3−T2 mean | p50 | p99 | p99.9 | RTT p50 | p99 | p99.9 | T3−T2 at 100k/s: mean | p99 "
             "| \\|offset\\| at 100k/s: p50 | p99 |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for srv in SERVERS:
        d = s[srv]
        lat = d.get("latency")
        h = (lat or {}).get("server_us") or {}
        rt = (lat or {}).get("rtt_us") or {}
        h1 = {k: v["median"] for k, v in (d.get("t3t2_100k") or {}).items()}
        e1 = {k: v["median"] for k, v in (d.get("offset_100k") or {}).items()}
        rate = (f"{lat['rate']:,.0f}/s" + (" †" if lat["disturbed"] else "")) if lat else "–"
        L.append(f"| {LABEL[srv]} | {rate} | {f1(h.get('mean'), 1)} | {f1(h.get('p50'), 1)} | {f1(h.get('p99'), 1)} "
                 f"| {f1(h.get('p999'), 1)} | {f1(rt.get('p50'), 1)} | {f1(rt.get('p99'), 1)} "
                 f"| {f1(rt.get('p999'), 1)} | {f1(h1.get('mean'), 1)} | {f1(h1.get('p99'), 1)} "
                 f"| {f1(e1.get('p50'), 2)} | {f1(e1.get('p99'), 2)} |")
    if any((s[srv].get("latency") or {}).get("disturbed") for srv in SERVERS):
        L.append("")
        L.append("† Something else on the machine used more than 10 % of a core during this run: see "
                 "[Noise](#noise-in-this-run).")
    L.append("")
    L.append("### Design targets in this run")
    L.append("")
    L.append("On the medians over the rounds, and round by round (in each round the three servers ran back to "
             "back); chronyd's and the reference's figures for scale.")
    L.append("")
    L.append("| target (issue 3) | tachyond | bound | met (medians) | rounds met | chronyd | reference |")
    L.append("|---|---:|---:|:---:|:---:|---:|---:|")
    for name, shown, bound, ok, per_round in targets(s):
        oks = "–" if ok is None else ("yes" if ok else "**no**")
        rs = "–" if per_round is None else f"{per_round[0]} of {per_round[1]}"
        L.append(f"| {name} | {num(shown['tachyond'])} | {bound if bound is not None else '–'} | {oks} | {rs} "
                 f"| {num(shown['chronyd'])} | {num(shown['reflector'])} |")
    L.append("| many-core scaling ≥ 0.8 × N | – | needs a many-core machine: see the `--scaling` section | – | – | – | – |")
    L.append("")
    if have_docs_assets:
        L.append("![offered vs answered rate and loss](benchmarks/compare-rate.svg)")
        L.append("")
        L.append("![latency percentiles](benchmarks/compare-latency.svg)")
        L.append("")
        L.append("Raw results (ntp-blast's JSON without its per-second rows, with the CPU, reply, memory, perf "
                 "and tachyond metrics around each run): [compare-raw.json](benchmarks/compare-raw.json).")
        L.append("")
    steal = sum(s[srv]["steal_s"] for srv in SERVERS)
    behind = [f"{srv} {ph}" for srv, r in runs.items() for ph, run in r.items()
              if ph != "ramp" and generator_behind(run)]
    others = [(srv, ph, run["meta"]["other_cpu_s"], run["meta"]["wall_s"]) for srv, r in runs.items()
              for ph, run in r.items() if run["meta"].get("other_cpu_s") is not None]
    busy = sorted(f"{srv} {ph} ({o / w:.0%} of a core)" for srv, ph, o, w in others if w > 0 and o > 0.1 * w)
    L.append("### Noise in this run")
    L.append("")
    if others:
        L.append("CPU used by anything but the server and ntp-blast (other processes, kernel threads), over the "
                 f"measured runs: {sum(o for _, _, o, _ in others):.1f} s in {sum(w for _, _, _, w in others):.0f} s. "
                 + (f"Runs where it exceeded 10 % of a core: {', '.join(busy)}; their figures are suspect. "
                    if busy else "It stayed under 10 % of a core in every run. "))
        L.append("")
    L.append(f"CPU time stolen by the hypervisor during the measured runs: {steal:.2f} s (both cores). "
             + (f"ntp-blast fell behind its schedule (> 1 % skipped or dropped) in: {', '.join(sorted(behind))}. "
                if behind else "ntp-blast kept its schedule in every fixed-rate, latency and overload run. ")
             + "The servers ran one after another, not interleaved, so a build that started or stopped on the "
             "machine in between shifts one server's figures against another's; compare ratios, rerun before "
             "drawing conclusions from a difference of a few percent.")
    L.append("")
    L.append("Reproduce: `sudo bench/compare` (about 7 minutes; `--quick` for a smoke run).")
    L.append("<!-- bench/compare:end -->")
    return "\n".join(line.rstrip() for line in L) + "\n"


def xdp_targets(s):
    """The targets of issue 15 (AF_XDP), judged on this run: (name, value, bound, met, rounds)."""
    x, u, f = s.get("tachyond", {}), s.get("tachyond_uring", {}), s.get("reflector", {})
    out = []

    def check(name, value, ref, factor, better="lower"):
        if not value or not ref or value.get("median") is None or ref.get("median") is None:
            out.append((name, None, None, None, None))
            return
        ok = (lambda v, r: v <= factor * r) if better == "lower" else (lambda v, r: v >= factor * r)
        pairs = [(v, r) for v, r in zip(value["values"], ref["values"]) if v is not None and r is not None]
        same = len(value["values"]) == len(ref["values"]) > 1
        rounds = (sum(ok(v, r) for v, r in pairs), len(pairs)) if same else None
        bound = f"{'≤' if better == 'lower' else '≥'} {num(factor * ref['median'])}"
        out.append((name, value["median"], bound, ok(value["median"], ref["median"]), rounds))

    m100 = lambda d: d.get("machine_us", {}).get(100000)
    check("machine CPU per answer at 100k/s ≤ 0.8 × the reference's (µs)", m100(x), m100(f), 0.8)
    check("machine CPU per answer at 100k/s ≤ 0.8 × tachyond io_uring's (µs)", m100(x), m100(u), 0.8)
    cap = lambda d: {"median": d.get("capacity"), "values": [d.get("capacity")]}
    check("capacity (< 1 % loss) ≥ 1.5 × tachyond io_uring's (/s)", cap(x), cap(u), 1.5, better="higher")
    return out


def xdp_section(m, runs, s, fixed_rates, overload_rates, have_docs_assets):
    rounds = max([split_phase(p)[1] for r in runs.values() for p in r] + [1])
    mode = "`--io xdp --quick` (short steps: a smoke run, not figures to quote)" if m.get("quick") else "`--io xdp`"
    L = ["<!-- bench/compare-xdp:begin (generated by bench/compare --io xdp; edits inside are overwritten) -->",
         "## bench/compare --io xdp: AF_XDP against the kernel's UDP path", ""]
    L += machine_lines(m, mode)
    L.append("")
    L.append("As in bench/compare (each server in turn in `tcmp-srv`, pinned to core 0; ntp-blast in `tcmp-cli`, "
             "pinned to core 1, 64 client sockets), with four servers: tachyond on AF_XDP (`io xdp tcmp-s`: the "
             "XDP program on the server's veth end, native XDP, copy mode, one queue and one worker), tachyond "
             "on io_uring, chronyd and the recvmmsg/sendmmsg reference. On veth the XDP program and the copy "
             "into the socket's memory run in the sending side's softirq, on ntp-blast's core, where the "
             "server's own CPU time misses them: the **machine** column counts every core's busy time "
             "(user, system, irq, softirq in `/proc/stat`; ntp-blast's share included, so the same load costs "
             "every server the same there) per reply; the **server** column the server process's own "
             "utime+stime per reply.")
    L.append("")
    L.append(f"### CPU per answer ({rounds} round{'s' if rounds > 1 else ''}, median"
             + (" (lowest–highest round)" if rounds > 1 else "") + ", µs)")
    L.append("")
    L.append("| server | " + " | ".join(f"{fmt_rate(r)}/s: machine | server | lost" for r in fixed_rates) + " |")
    L.append("|---|" + "---:|---:|---:|" * len(fixed_rates))
    for srv in SERVERS:
        d = s[srv]
        cells = []
        for r in fixed_rates:
            cells += [spread_s(d["machine_us"].get(r)), spread_s(d["cpu_us"].get(r)),
                      f"{f1((d['lost_pct'].get(r) or {}).get('median'), 2)} %"]
        L.append(f"| {LABEL[srv]} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("### Capacity and overload")
    L.append("")
    L.append("Capacity: the highest ramp step with < 1 % loss, every step before it too, where ntp-blast kept its "
             "schedule. Overload: the answered rate at offered rates past capacity.")
    L.append("")
    L.append("| server | capacity | " + " | ".join(f"offered {fmt_rate(r)}/s: answered/s" for r in overload_rates)
             + " |")
    L.append("|---|---:|" + "---:|" * len(overload_rates))
    for srv in SERVERS:
        d = s[srv]
        cap = d.get("capacity")
        cap_s = "–" if cap is None else f"{cap:,.0f}/s"
        if d.get("capacity_ramp_exhausted"):
            cap_s = f"≥ {cap_s} (end of ramp)"
        elif d.get("capacity_generator_limited"):
            cap_s = f"≥ {cap_s} (ntp-blast fell behind first)"
        cells = []
        for r in overload_rates:
            o = d["overload"].get(r)
            cells.append("–" if not o else
                         f"{spread_s(o['answered_rate'], 0)} ({o['answered_pct']['median']:.1f} %)"
                         + (" ²" if o["generator_behind"] else ""))
        L.append(f"| {LABEL[srv]} | {cap_s} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("² ntp-blast could not send the full offered rate; the percentage is of the offered rate.")
    L.append("")
    L.append("### Latency")
    L.append("")
    L.append("At half of each server's capacity: T3 − T2 and the client's round trip (kernel TX stamps), µs; "
             "and T3 − T2 in the 100k/s runs.")
    L.append("")
    L.append("| server | rate | T3−T2 p50 | p99 | RTT p50 | p99 | T3−T2 at 100k/s: mean | p99 |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for srv in SERVERS:
        d = s[srv]
        lat = d.get("latency")
        h = (lat or {}).get("server_us") or {}
        rt = (lat or {}).get("rtt_us") or {}
        h1 = {k: v["median"] for k, v in (d.get("t3t2_100k") or {}).items()}
        rate = f"{lat['rate']:,.0f}/s" if lat else "–"
        L.append(f"| {LABEL[srv]} | {rate} | {f1(h.get('p50'), 1)} | {f1(h.get('p99'), 1)} | {f1(rt.get('p50'), 1)} "
                 f"| {f1(rt.get('p99'), 1)} | {f1(h1.get('mean'), 1)} | {f1(h1.get('p99'), 1)} |")
    L.append("")
    if any(s[srv].get("perf") for srv in SERVERS):
        L.append("`perf stat` of the server process at 50k/s (its own CPU only):")
        L.append("")
        L.append("| server | task-clock µs/answer | context switches/answer | syscalls/answer |")
        L.append("|---|---:|---:|---:|")
        for srv in SERVERS:
            p = s[srv].get("perf")
            if p:
                L.append(f"| {LABEL[srv]} | {f1(p['task_clock_us_per_answer'])} | "
                         f"{f1(p['context_switches_per_answer'], 3)} | {f1(p['syscalls_per_answer'], 3)} |")
        L.append("")
    L.append("### Targets of issue 15 in this run")
    L.append("")
    L.append("| target | tachyond AF_XDP | bound | met (medians) | rounds met |")
    L.append("|---|---:|---:|:---:|:---:|")
    for name, value, bound, ok, per_round in xdp_targets(s):
        oks = "–" if ok is None else ("yes" if ok else "**no**")
        rs = "–" if per_round is None else f"{per_round[0]} of {per_round[1]}"
        L.append(f"| {name} | {num(value)} | {bound or '–'} | {oks} | {rs} |")
    L.append("| veth with N queues, N workers: ≥ 0.8 × N to 8 | – | needs a many-core machine (none here) | – | – |")
    L.append("")
    if have_docs_assets:
        L.append("Raw results: [compare-xdp-raw.json](benchmarks/compare-xdp-raw.json).")
        L.append("")
    L.append("Reproduce: `sudo bench/compare --io xdp` (about 10 minutes; `--quick` for a smoke run).")
    L.append("<!-- bench/compare-xdp:end -->")
    return "\n".join(line.rstrip() for line in L) + "\n"


def scaling_rows(runs):
    """[(server, workers, scale run, overload run)] in the order they ran: chronyd, then tachyond."""
    rows = []
    for srv in ("chronyd", "tachyond"):
        phases = sorted((int(p.split("-")[1]), run) for p, run in runs.get(srv, {}).items() if p.startswith("scale-"))
        for n, run in phases:
            rows.append((srv, n, run, runs[srv].get(f"scaleover-{n}")))
    return rows


def scaling_section(m, runs, have_plot=False):
    L = ["<!-- bench/compare-scaling:begin (generated by bench/compare --scaling; edits inside are overwritten) -->",
         "## bench/compare --scaling: workers against capacity", ""]
    L += machine_lines(m, "`--scaling`" + (" `--quick`" if m.get("quick") else "")
                       + f"; tachyond's `io {m.get('io', 'uring')}` backend")[:1]
    L.append(f"Versions: tachyond {m['tachyond'].split()[-1]} at `{m['git']}`; {m['chronyd'].split(' (+')[0]}; "
             f"{m['rustc']}.")
    L.append("")
    L.append("One chronyd on core 0, then tachyond with N workers pinned to cores 0..N−1; ntp-blast with one "
             "thread per remaining core, in the other namespace of the veth pair. Capacity: the highest ramp "
             "step with < 1 % loss. Overload: every server offered twice chronyd's capacity for a few seconds.")
    L.append("")
    rows = scaling_rows(runs)
    over_rate = next((o["blast"]["config"]["rate"] for _, _, _, o in rows if o and o.get("blast")), None)
    over_h = f"answered at {over_rate:,.0f}/s offered" if over_rate else "answered in overload"
    L.append(f"| server | workers | ntp-blast threads | capacity | per worker | vs 1 worker | {over_h} "
             "| vs chronyd | generator-limited |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|:---:|")
    base = None
    chrony_over = None
    targets = []
    for srv, n, run, over in rows:
        cap, limited, exhausted = capacity(run)
        threads = run["blast"]["config"]["threads"] if run.get("blast") else "–"
        if srv == "tachyond" and n == 1:
            base = cap
        ans = answered_rate(over)
        if srv == "chronyd":
            chrony_over = ans
        rel = f"{cap / base:.2f} ×" if base and cap is not None and srv == "tachyond" else "–"
        cap_s = "–" if cap is None else ("≥ " if exhausted or limited else "") + f"{cap:,.0f}/s"
        per = "–" if cap is None else f"{cap / n:,.0f}/s"
        over_behind = over is not None and generator_behind(over)
        ans_s = "–" if ans is None else f"{ans:,.0f}/s" + (" (ntp-blast behind)" if over_behind else "")
        vs = f"{ans / chrony_over:.2f} ×" if ans is not None and chrony_over and srv == "tachyond" else "–"
        L.append(f"| {srv} | {n} | {threads} | {cap_s} | {per} | {rel} | {ans_s} | {vs} | "
                 f"{'yes' if limited else 'no'} |")
        if srv == "tachyond" and base and cap is not None and n > 1:
            met = cap >= 0.8 * n * base
            targets.append(f"{n} workers: {cap / base:.2f} × one worker's capacity (target ≥ {0.8 * n:.1f} ×): "
                           + ("met" if met else ("not met, and ntp-blast was the limit" if limited else "not met")))
    L.append("")
    L.append("Target: capacity ≥ 0.8 × N × the one-worker capacity, while one chronyd stays flat. "
             "A generator-limited row is a lower bound: ntp-blast fell behind its schedule before the server lost 1 %.")
    L += [f"- {t}" for t in targets]
    if have_plot:
        L.append("")
        L.append("![answered against offered rate, by worker count](benchmarks/compare-scaling.svg)")
    L.append("")
    L.append("Reproduce: `sudo bench/compare --scaling` on a machine with 16 cores or more.")
    L.append("<!-- bench/compare-scaling:end -->")
    return "\n".join(line.rstrip() for line in L) + "\n"


def plot_scaling(runs, path):
    """Answered against offered rate along each ramp, one line per server and worker count."""
    rows = scaling_rows(runs)
    series = []
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f", "#bcbd22"]
    for i, (srv, n, run, _) in enumerate(rows):
        if not run.get("blast"):
            continue
        pts = [(st["rate"], st["answered"] / max(st["duration_s"], 1e-9), step_behind(st))
               for st in run["blast"]["steps"]
               if st["sent"] > 0 and st["duration_s"] > 0 and st["sending_s"] >= 0.9 * st["duration_s"]]
        label = "chronyd" if srv == "chronyd" else f"tachyond × {n}"
        series.append((label, COLOR["chronyd"] if srv == "chronyd" else palette[i % len(palette)], pts))
    if not series:
        return
    top = max([max(p[0], p[1]) for _, _, pts in series for p in pts] + [1])
    ticks = nice_ticks(top)
    svg = Svg(720, 460)
    x0, y0, pw, ph = 90, 30, 440, 360
    sx = lambda v: x0 + pw * v / ticks[-1]
    sy = lambda v: y0 + ph - ph * v / ticks[-1]
    for v in ticks:
        svg.line(sx(v), y0, sx(v), y0 + ph, "#ddd")
        svg.text(sx(v), y0 + ph + 16, fmt_rate(v), 11, "middle")
        svg.line(x0, sy(v), x0 + pw, sy(v), "#ddd")
        svg.text(x0 - 6, sy(v) + 4, fmt_rate(v), 11, "end")
    svg.line(x0, y0 + ph, x0 + pw, y0 + ph)
    svg.line(x0, y0, x0, y0 + ph)
    svg.line(sx(0), sy(0), sx(ticks[-1]), sy(ticks[-1]), "#888", 1, "4,4")
    svg.text(x0 + pw / 2, y0 + ph + 36, "offered requests/s (ramp steps)", 12, "middle")
    svg.text(x0 - 62, y0 + ph / 2, "answered requests/s", 12, "middle", rotate=-90)
    for k, (label, color, pts) in enumerate(series):
        xy = [(sx(a), sy(b), behind) for a, b, behind in pts]
        svg.polyline([(x, y) for x, y, _ in xy], color, 1.5)
        for x, y, behind in xy:
            svg.circle(x, y, 3.5 if behind else 2.5, color, hollow=behind)
        svg.line(x0 + pw + 20, y0 + 10 + 18 * k, x0 + pw + 40, y0 + 10 + 18 * k, color, 2)
        svg.text(x0 + pw + 46, y0 + 14 + 18 * k, label, 11)
    svg.text(360, 450, "Each ramp stops at its first step with ≥ 1 % loss. Hollow: ntp-blast fell behind its schedule.",
             11, "middle", "#555")
    open(path, "w").write(svg.render())


def replace_section(doc_path, section, tag):
    begin, end = f"<!-- {tag}:begin", f"<!-- {tag}:end -->"
    text = open(doc_path).read() if os.path.exists(doc_path) else "# Benchmarks\n"
    i = text.find(begin)
    j = text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + section.rstrip("\n") + text[j + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    if not text.endswith("\n"):
        text += "\n"
    with open(doc_path, "w") as f:
        f.write(text)


def raw_json(m, runs, s):
    """Everything measured, without ntp-blast's per-second rows (and without the one step row of a
    fixed-rate run, which repeats its totals)."""
    slim = {}
    for srv, r in runs.items():
        for phase, run in r.items():
            b = dict(run["blast"]) if run.get("blast") else None
            if b:
                b.pop("seconds", None)
                if len(b.get("steps", [])) == 1:
                    b.pop("steps")
            slim.setdefault(srv, {})[phase] = {k: v for k, v in dict(run, blast=b).items()}
    return {"machine": m, "summary": {k: v for k, v in s.items()}, "runs": slim}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--docs", help="docs directory to update")
    a = ap.parse_args()
    m = load_json(os.path.join(a.results, "machine.json"))
    runs = load_runs(a.results)
    if m.get("scaling"):
        section = scaling_section(m, runs, bool(a.docs))
        if a.docs:
            os.makedirs(os.path.join(a.docs, "benchmarks"), exist_ok=True)
            plot_scaling(runs, os.path.join(a.docs, "benchmarks", "compare-scaling.svg"))
            with open(os.path.join(a.docs, "benchmarks", "compare-scaling-raw.json"), "w") as f:
                json.dump(raw_json(m, runs, {}), f, separators=(",", ":"))
                f.write("\n")
            replace_section(os.path.join(a.docs, "benchmarks.md"), section, "bench/compare-scaling")
        print(section)
        return
    SERVERS[:] = [srv for srv in ALL_SERVERS if srv in runs] or SERVERS
    if m.get("io") == "xdp":
        LABEL["tachyond"] = "tachyond (1 worker, AF_XDP)"
    elif m.get("io") == "mmsg":
        LABEL["tachyond"] = "tachyond (1 worker, recvmmsg)"
    fixed = sorted({int(split_phase(p)[0].split("-")[1]) for r in runs.values() for p in r if p.startswith("fixed-")})
    over = sorted({int(split_phase(p)[0].split("-")[1]) for r in runs.values() for p in r
                   if p.startswith("overload-")})
    s = summarize(runs, fixed, over)
    if m.get("io") == "xdp":
        section = xdp_section(m, runs, s, fixed, over, bool(a.docs))
        if a.docs:
            assets = os.path.join(a.docs, "benchmarks")
            os.makedirs(assets, exist_ok=True)
            with open(os.path.join(assets, "compare-xdp-raw.json"), "w") as f:
                json.dump(raw_json(m, runs, s), f, separators=(",", ":"), default=str)
                f.write("\n")
            replace_section(os.path.join(a.docs, "benchmarks.md"), section, "bench/compare-xdp")
        print(section)
        return
    section = compare_section(m, runs, s, fixed, over, bool(a.docs))
    if a.docs:
        assets = os.path.join(a.docs, "benchmarks")
        os.makedirs(assets, exist_ok=True)
        plot_rates(runs, os.path.join(assets, "compare-rate.svg"))
        plot_latency(s, os.path.join(assets, "compare-latency.svg"))
        with open(os.path.join(assets, "compare-raw.json"), "w") as f:
            json.dump(raw_json(m, runs, s), f, separators=(",", ":"), default=str)
            f.write("\n")
        replace_section(os.path.join(a.docs, "benchmarks.md"), section, "bench/compare")
        print(f"bench/compare: wrote {a.docs}/benchmarks.md and {assets}/compare-*.{{svg,json}}", file=sys.stderr)
    print(section)


if __name__ == "__main__":
    main()
