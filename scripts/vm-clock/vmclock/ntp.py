"""NTP on the host side of the VM clock test: one client exchange with kernel
timestamps on both ends, and the time scale the measurements compare with.

T1 and T4 are the host kernel's software TX and RX timestamps (SO_TIMESTAMPING),
so a Python thread that is late to run never shows as clock error.
"""

import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Optional

NTP_UNIX = 2_208_988_800
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = 37
SOF_TX_SOFTWARE = 1 << 1
SOF_RX_SOFTWARE = 1 << 3
SOF_SOFTWARE = 1 << 4
SOF_OPT_TSONLY = 1 << 11


def ntp_to_unix(raw: bytes) -> float:
    sec, frac = struct.unpack("!II", raw)
    return sec - NTP_UNIX + frac / 2**32


def unix_to_ntp(t: float) -> bytes:
    sec = int(t // 1)
    return struct.pack("!II", (sec + NTP_UNIX) & 0xFFFFFFFF, int((t - sec) * 2**32) & 0xFFFFFFFF)


def short_to_seconds(raw: bytes) -> float:
    whole, frac = struct.unpack("!HH", raw)
    return whole + frac / 65536


class TimeScale:
    """The reference: the host clock plus a whole number of seconds (the leap
    scenario's 2016 date), less one second from `leap_at` on (a leap second
    inserted the way Linux does it: 23:59:59 repeats)."""

    def __init__(self, shift: int = 0, leap_at: Optional[int] = None):
        self.shift = shift
        self.leap_at = leap_at

    def of_host(self, host: float) -> float:
        t = host + self.shift
        if self.leap_at is not None and t >= self.leap_at:
            t -= 1.0
        return t

    def unleaped(self, host: float) -> float:
        return host + self.shift

    def leap_indicator(self, host: float) -> int:
        """1 (insert) on the leap's day until the inserted second is over."""
        if self.leap_at is None:
            return 0
        t = self.unleaped(host)
        return 1 if self.leap_at - 86_400 <= t < self.leap_at + 1 else 0


@dataclass
class Reply:
    host_time: float  # host clock at T4
    offset: float  # server clock minus reference, s
    delay: float
    leap: int
    stratum: int
    root_delay: float
    root_dispersion: float
    reference_time: float  # Unix seconds on the server's scale
    transmit: float  # T3, Unix seconds on the server's scale
    text: str  # what follows the 48-byte header (the guest probe's state line)


def kernel_stamp(ancillary) -> Optional[float]:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            if sec:
                return sec + nsec * 1e-9
    return None


class Exchange:
    """One request in flight: open, send, then `collect` when readable."""

    def __init__(self, address: str, port: int, source: str = ""):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flags = SOF_TX_SOFTWARE | SOF_RX_SOFTWARE | SOF_SOFTWARE | SOF_OPT_TSONLY
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
        self.sock.bind((source, 0))
        self.sock.connect((address, port))
        self.sock.setblocking(False)
        self.nonce = os.urandom(8)
        self.t1_kernel: Optional[float] = None
        self.t1_user = time.time()
        self.sock.send(bytes([0x23]) + bytes(39) + self.nonce)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _take_tx_stamp(self) -> None:
        # The TX stamp arrives on the error queue shortly after the send.
        if self.t1_kernel is not None:
            return
        try:
            _, ancillary, _, _ = self.sock.recvmsg(64, 512, socket.MSG_ERRQUEUE)
        except (BlockingIOError, OSError):
            return
        self.t1_kernel = kernel_stamp(ancillary)

    def collect(self, scale: TimeScale):
        """(finished, reply): not finished while only the TX stamp has come
        (the error queue also makes the socket readable)."""
        self._take_tx_stamp()
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1024, 512)
        except BlockingIOError:
            return False, None
        except OSError:
            return True, None
        t4_host = kernel_stamp(ancillary) or time.time()
        self._take_tx_stamp()
        t1_host = self.t1_kernel or self.t1_user
        if len(data) < 48 or data[24:32] != self.nonce or data[0] & 7 != 4:
            return True, None
        t2 = ntp_to_unix(data[32:40])
        t3 = ntp_to_unix(data[40:48])
        t1 = scale.of_host(t1_host)
        t4 = scale.of_host(t4_host)
        if abs((t4 - t1) - (t4_host - t1_host)) > 0.5:
            return True, None  # straddles the reference's leap: no meaningful offset
        return True, Reply(
            host_time=t4_host,
            offset=((t2 - t1) + (t3 - t4)) / 2,
            delay=(t4 - t1) - (t3 - t2),
            leap=data[0] >> 6,
            stratum=data[1],
            root_delay=short_to_seconds(data[4:8]),
            root_dispersion=short_to_seconds(data[8:12]),
            reference_time=ntp_to_unix(data[16:24]) if data[16:24] != bytes(8) else 0.0,
            transmit=t3,
            text=data[48:].decode("ascii", "replace").strip(),
        )

    def close(self) -> None:
        self.sock.close()


def query_many(targets, timeout: float = 0.3, source: str = ""):
    """Sends one request to each (address, port, scale) at once; returns the
    replies in the same order (None where none came). Each reply's offset is
    measured against its own time scale."""
    exchanges = []
    for address, port, _ in targets:
        try:
            exchanges.append(Exchange(address, port, source))
        except OSError:
            exchanges.append(None)
    replies = [None] * len(exchanges)
    pending = {i for i, e in enumerate(exchanges) if e is not None}
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([exchanges[i] for i in pending], [], [], left)
        for e in ready:
            i = exchanges.index(e)
            finished, replies[i] = e.collect(targets[i][2])
            if finished:
                pending.discard(i)
    for e in exchanges:
        if e is not None:
            e.close()
    return replies


def parse_probe(text: str) -> dict:
    """The guest probe's `key=value` state line, as integers."""
    out = {}
    for item in text.split():
        key, _, value = item.partition("=")
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out
