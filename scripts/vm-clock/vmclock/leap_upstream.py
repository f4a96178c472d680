"""A stratum 1 NTP server for the leap second scenario: serves this host's
clock shifted by a whole number of seconds (to a time shortly before
2016-12-31 23:59:60 UTC), announces the leap (LI 1) on that day, and inserts
it as Linux does (23:59:59 repeats). chronyd cannot do this here: its
`local stratum` reference never announces a leap, and under faketime its
kernel receive timestamps would not be shifted.

    leap_upstream.py --shift SECONDS --leap-at UNIX --address A [--address B ...]

One process, one thread: the receive time is the kernel's RX timestamp and the
transmit time is read just before sending. It never touches the clock.
"""

import argparse
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vmclock.ntp import (  # noqa: E402
    SO_TIMESTAMPING,
    SOF_RX_SOFTWARE,
    SOF_SOFTWARE,
    TimeScale,
    kernel_stamp,
    unix_to_ntp,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shift", type=int, required=True)
    parser.add_argument("--leap-at", type=int, required=True)
    parser.add_argument("--address", action="append", required=True)
    args = parser.parse_args()
    scale = TimeScale(args.shift, args.leap_at)
    sockets = []
    for address in args.address:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, SOF_RX_SOFTWARE | SOF_SOFTWARE)
        s.bind((address, 123))
        sockets.append(s)
    while True:
        ready, _, _ = select.select(sockets, [], [])
        for s in ready:
            data, ancillary, _, peer = s.recvmsg(1024, 512)
            host_rx = kernel_stamp(ancillary) or time.time()
            if len(data) < 48 or data[0] & 7 != 3:
                continue
            leap = scale.leap_indicator(host_rx)
            header = bytes([(leap << 6) | (data[0] & 0x38) | 4, 1, data[2], 0xEC])
            header += struct.pack("!II", 0, 16)  # root delay 0, root dispersion 244 µs
            header += b"LEAP" + unix_to_ntp(scale.of_host(host_rx) - 1) + data[40:48]
            header += unix_to_ntp(scale.of_host(host_rx))
            s.sendto(header + unix_to_ntp(scale.of_host(time.time())), peer)


if __name__ == "__main__":
    main()
