"""One KVM guest: qemu with the test kernel and initramfs, virtio-net on a tap
in the test's network namespace, the kernel console in a log file, and a
shell on the second serial port that runs the commands the scenarios send."""

import base64
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

PROBE_PORT = 4123


@dataclass
class GuestSpec:
    name: str  # short: it names the tap and the files
    address: str
    tap: str
    mac: str


class GuestError(RuntimeError):
    pass


class Guest:
    def __init__(self, spec: GuestSpec, artifacts: str, workdir: str, kvm: bool):
        self.spec = spec
        self.workdir = workdir
        self.console_log = os.path.join(workdir, f"{spec.name}.console.log")
        self.control_path = os.path.join(workdir, f"{spec.name}.control.sock")
        self.lock = threading.Lock()
        self.buffer = b""
        self.sequence = 0
        # kvm-clock under KVM. Under TCG the TSC is the host's, scaled by a
        # frequency the guest calibrates (hundreds of ppm off): the HPET
        # follows the host's monotonic clock at its nominal rate instead.
        clock_args = "" if kvm else "clocksource=hpet"
        args = [
            "qemu-system-x86_64",
            "-name", spec.name,
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-m", "256", "-smp", "1",
            "-kernel", os.path.join(artifacts, "vmlinuz"),
            "-initrd", os.path.join(artifacts, "initrd.gz"),
            "-append", f"console=ttyS0 loglevel=5 panic=-1 {clock_args} vmclock.addr={spec.address}",
            "-serial", f"file:{self.console_log}",
            "-chardev", f"socket,id=control,path={self.control_path},server=on,wait=off",
            "-serial", "chardev:control",
            "-netdev", f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={spec.mac}",
        ]
        args += ["-accel", "kvm", "-cpu", "host,-arch-capabilities"] if kvm else ["-accel", "tcg", "-cpu", "max"]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(workdir, f"{spec.name}.qemu.log"), "wb"),
        )
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise GuestError(f"{self.spec.name}: qemu exited with {self.process.returncode}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.control_path)
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.spec.name}: no control socket")
                time.sleep(0.05)

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise GuestError(
                    f"{self.spec.name}: no {marker!r} within {timeout:.0f} s; "
                    f"got {self.buffer[-400:]!r}; console tail: {self.console_tail()}"
                )
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise GuestError(f"{self.spec.name}: control channel closed")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def wait_ready(self, timeout: float) -> float:
        """Waits for /init's ready line; returns the boot time in seconds."""
        start = time.monotonic()
        with self.lock:
            self._read_until(b"@@ready\n", timeout)
        return time.monotonic() - start

    def run(self, command: str, timeout: float = 30.0, check: bool = True) -> str:
        """Runs a shell command in the guest; returns its output (stdout and
        stderr). Raises on a non-zero status when `check`."""
        with self.lock:
            self.sequence += 1
            marker = f"@@end{self.sequence}"
            # A newline, not `;`, closes the group: the command may end with `&`.
            line = f'{{ {command}\n}} </dev/null 2>&1; echo "{marker} $?"\n'
            self.sock.sendall(line.encode())
            out = self._read_until(marker.encode() + b" ", timeout)
            status = self._read_until(b"\n", 5).strip()
        if check and status != b"0":
            raise GuestError(f"{self.spec.name}: `{command}` exited {status.decode()}: {out.decode()}")
        return out.decode(errors="replace")

    def write_file(self, path: str, text: str) -> None:
        data = base64.b64encode(text.encode()).decode()
        self.run(f"echo {data} | base64 -d > {path}")

    def console_tail(self, lines: int = 15) -> str:
        try:
            with open(self.console_log, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.sock.close()

