"""The upstream servers the guests synchronize to, on the bridge's addresses:
chronyd -x (serving this host's clock at stratum 1, never touching it), or,
for the leap second, leap_upstream.py (the host clock shifted to 2016 with the
leap second of 2016-12-31 announced and inserted)."""

import os
import signal
import subprocess
import sys
import time

from .ntp import TimeScale, query_many


class Upstreams:
    def __init__(self, addresses, workdir: str, name: str):
        self.addresses = list(addresses)
        self.workdir = workdir
        self.name = name
        self.processes = []

    def start_chronyd(self) -> None:
        for address in self.addresses:
            directory = os.path.join(self.workdir, f"upstream-{address}")
            os.makedirs(directory, exist_ok=True)
            conf = os.path.join(directory, "chrony.conf")
            with open(conf, "w") as f:
                f.write(
                    "local stratum 1\nallow all\n"
                    f"bindaddress {address}\nport 123\ncmdport 0\nbindcmdaddress /\n"
                    f"pidfile {directory}/chronyd.pid\ndriftfile {directory}/drift\n"
                )
            log = open(os.path.join(directory, "chronyd.log"), "wb")
            # -x: never touch this host's clock; -d: foreground, so we own it.
            self.processes.append(
                subprocess.Popen(["chronyd", "-x", "-d", "-u", "root", "-f", conf], stdout=log, stderr=log)
            )
        self.wait_answering(TimeScale())

    def start_leap(self, scale: TimeScale) -> None:
        script = os.path.join(os.path.dirname(__file__), "leap_upstream.py")
        log = open(os.path.join(self.workdir, f"{self.name}-leap-upstream.log"), "wb")
        args = [sys.executable, script, "--shift", str(scale.shift), "--leap-at", str(scale.leap_at)]
        for a in self.addresses:
            args += ["--address", a]
        self.processes.append(subprocess.Popen(args, stdout=log, stderr=log))
        self.wait_answering(scale)

    def wait_answering(self, scale: TimeScale) -> None:
        deadline = time.monotonic() + 15
        while True:
            replies = query_many([(a, 123, scale) for a in self.addresses])
            if all(r is not None and r.stratum == 1 for r in replies):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"upstreams {self.addresses} do not answer: {replies}")
            time.sleep(0.2)

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        self.processes = []
