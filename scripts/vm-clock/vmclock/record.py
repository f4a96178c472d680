"""What the host sees of each guest, once a second: the guest's kernel clock
(through the probe's responder, whatever the daemon is doing) with the kernel
state read at the same instant, and the time the daemon serves (LI, stratum,
root delay and dispersion). Each is the lowest-delay of a few exchanges, as
an NTP client's clock filter would take it."""

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

from .guest import PROBE_PORT, Guest
from .ntp import Reply, TimeScale, parse_probe, query_many

EXCHANGES = 3
ROUND_GAP = 0.05


@dataclass
class Point:
    t: float  # host time
    clock: Optional[float]  # guest kernel clock minus the reference, s
    clock_delay: Optional[float]
    state: dict  # the probe's kernel state (empty when it did not answer)
    served: Optional[float]  # the daemon's served time minus the reference, s
    served_delay: Optional[float]
    leap: Optional[int]
    stratum: Optional[int]
    root_delay: Optional[float]
    root_dispersion: Optional[float]
    reference_age: Optional[float]  # served transmit minus reference time, s


@dataclass
class Track:
    """One guest with one daemon: its samples and what was done to it when."""

    name: str
    daemon: str
    scenario_group: str
    guest: Guest
    scale: TimeScale
    points: List[Point] = field(default_factory=list)
    events: List[Tuple[float, str]] = field(default_factory=list)

    def mark(self, label: str) -> float:
        t = time.time()
        self.events.append((t, label))
        return t

    def event(self, label: str) -> Optional[float]:
        for t, name in self.events:
            if name == label:
                return t
        return None

    def window(self, start: float, end: float) -> List[Point]:
        return [p for p in self.points if start <= p.t < end]

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"events": self.events, "points": [asdict(p) for p in self.points]}, f)


def best(replies) -> Optional[Reply]:
    good = [r for r in replies if r is not None]
    return min(good, key=lambda r: r.delay) if good else None


def point(track: Track, probe: Optional[Reply], served: Optional[Reply]) -> Point:
    first = probe or served
    return Point(
        t=first.host_time if first else time.time(),
        clock=probe.offset if probe else None,
        clock_delay=probe.delay if probe else None,
        state=parse_probe(probe.text) if probe else {},
        served=served.offset if served else None,
        served_delay=served.delay if served else None,
        leap=served.leap if served else None,
        stratum=served.stratum if served else None,
        root_delay=served.root_delay if served else None,
        root_dispersion=served.root_dispersion if served else None,
        reference_age=(served.transmit - served.reference_time) if served and served.reference_time else None,
    )


def sample_all(tracks: List[Track]) -> List[Point]:
    """One point per track: a few rounds, a little apart (a stalled guest
    delays every exchange in flight), each asking every guest's probe and
    daemon at once; the lowest-delay reply of each kind wins."""
    probes = [[] for _ in tracks]
    served = [[] for _ in tracks]
    for k in range(EXCHANGES):
        if k:
            time.sleep(ROUND_GAP)
        targets = []
        for t in tracks:
            address = t.guest.spec.address
            targets += [(address, PROBE_PORT, t.scale), (address, 123, t.scale)]
        replies = query_many(targets)
        for i in range(len(tracks)):
            probes[i].append(replies[2 * i])
            served[i].append(replies[2 * i + 1])
    return [point(t, best(probes[i]), best(served[i])) for i, t in enumerate(tracks)]


class Sampler(threading.Thread):
    def __init__(self, interval: float = 1.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.tracks: List[Track] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def add(self, track: Track) -> None:
        with self.lock:
            self.tracks.append(track)

    def remove(self, track: Track) -> None:
        with self.lock:
            if track in self.tracks:
                self.tracks.remove(track)

    def run(self) -> None:
        next_round = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                tracks = list(self.tracks)
            if tracks:
                for track, p in zip(tracks, sample_all(tracks)):
                    track.points.append(p)
            next_round += self.interval
            time.sleep(max(0.0, next_round - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join()
