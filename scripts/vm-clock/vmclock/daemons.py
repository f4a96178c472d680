"""The two daemons under test, as they run in a guest: tachyond with
`clock system`, and chronyd configured to behave like tachyond's defaults.

Both get the same upstreams (iburst, maxpoll 6 so that losing them is noticed
within a bounded time), a driftfile, the leap second table (tachyond's
`leapfile`, chronyd's `leapsectz right/UTC`: the same tzdata), and serve the
guest's address without rate limiting, so the host can sample them every
second. chronyd's `makestep 0.128 1` is tachyond's rule: step only at the
first clock update, and only beyond 0.128 s.
"""

from .guest import Guest

TACHYOND_LOG = "/tmp/tachyond.log"
CHRONYD_LOG = "/tmp/chronyd.log"
CHRONYD_LOGDIR = "/tmp/chrony"


class Daemon:
    name = ""
    binary = ""
    log = ""

    def __init__(self, guest: Guest, upstreams, holdover: int):
        self.guest = guest
        self.upstreams = list(upstreams)
        self.holdover = holdover

    def config(self) -> str:
        raise NotImplementedError

    def command(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        self.guest.write_file(self.config_path, self.config())
        self.guest.run(f"{self.command()} >>{self.log} 2>&1 &")

    def running(self) -> bool:
        return self.guest.run(f"pidof {self.binary}", check=False).strip() != ""

    def stop(self) -> None:
        """SIGTERM, and wait until it has exited (it writes its driftfile)."""
        self.guest.run(
            f"kill $(pidof {self.binary}); i=0; while pidof {self.binary} >/dev/null && [ $i -lt 300 ]; "
            f"do sleep 0.1; i=$((i+1)); done; ! pidof {self.binary}",
            timeout=60,
        )

    def kill(self) -> None:
        self.guest.run(f"kill -9 $(pidof {self.binary}); sleep 0.5; ! pidof {self.binary}")

    def log_text(self) -> str:
        return self.guest.run(f"cat {self.log}", timeout=60, check=False)


class Tachyond(Daemon):
    name = "tachyond"
    binary = "tachyond"
    log = TACHYOND_LOG
    config_path = "/etc/tachyond.conf"

    def config(self) -> str:
        lines = [f"server {a} iburst maxpoll 6" for a in self.upstreams]
        lines += [
            "driftfile /var/lib/tachyon/drift",
            "leapfile /usr/share/zoneinfo/leap-seconds.list",
            f"listen {self.guest.spec.address}",
            "clock system",
            "workers 1",
            "restrict default nomodify notrap nopeer noquery",
            "metrics 127.0.0.1:9123",
            f"holdover {self.holdover}",
        ]
        return "\n".join(lines) + "\n"

    def command(self) -> str:
        return (
            f"/usr/sbin/tachyond --config {self.config_path} --allow-root "
            "--control-socket /run/tachyon/tachyond.sock --log-level info,tachyon::sync=debug"
        )


class Chronyd(Daemon):
    name = "chronyd"
    binary = "chronyd"
    log = CHRONYD_LOG
    config_path = "/etc/chrony.conf"

    def config(self) -> str:
        lines = [f"server {a} iburst maxpoll 6" for a in self.upstreams]
        lines += [
            "driftfile /var/lib/chrony/drift",
            "makestep 0.128 1",
            "leapsectz right/UTC",
            "allow all",
            f"bindaddress {self.guest.spec.address}",
            "cmdport 0",
            "bindcmdaddress /",
            "pidfile /run/chronyd.pid",
            # Its per-sample view, to set beside tachyond's debug log.
            f"logdir {CHRONYD_LOGDIR}",
            "log measurements statistics tracking",
        ]
        return "\n".join(lines) + "\n"

    def command(self) -> str:
        # -d: stay in the foreground (backgrounded by the shell), log to stderr.
        return f"mkdir -p {CHRONYD_LOGDIR}; /usr/sbin/chronyd -d -u root -f {self.config_path}"

    def log_text(self) -> str:
        """Its log, then its measurements, statistics and tracking logs."""
        return self.guest.run(
            f"cat {self.log}; for f in {CHRONYD_LOGDIR}/*.log; do echo \"== $f\"; cat \"$f\"; done",
            timeout=60,
            check=False,
        )


DAEMONS = {"tachyond": Tachyond, "chronyd": Chronyd}
