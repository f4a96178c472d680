"""The test network, made inside the namespace scripts/vm-clock-test created
(run.py runs in it): one bridge holding the host side's addresses (the
measuring client and the upstream servers), and one tap per guest on it.
No traffic leaves the namespace."""

import subprocess

BRIDGE = "vmc-br0"
PREFIX = "10.77.0"
MEASURE_ADDRESS = f"{PREFIX}.1"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def make_bridge(addresses) -> None:
    ip("link", "add", BRIDGE, "type", "bridge")
    for a in [MEASURE_ADDRESS, *addresses]:
        ip("addr", "add", f"{a}/24", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def make_tap(name: str) -> None:
    ip("tuntap", "add", "dev", name, "mode", "tap")
    ip("link", "set", name, "master", BRIDGE)
    ip("link", "set", name, "up")
