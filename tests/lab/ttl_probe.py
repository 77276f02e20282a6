#!/usr/bin/python3
"""Measure forwarding distances in the lab with real packets, independently of the emulator.

  ttl_probe.py echo ADDR...   (in the IMDS namespace) answer UDP datagrams on port 7007
  ttl_probe.py ttl ADDR       (anywhere) print the TTL / hop limit the answer arrived with,
                              or "none" when no answer came within a second
An answer leaves with TTL 64, so a namespace N forwarding hops away reads 64 - N.
"""

import select
import socket
import sys

PORT = 7007
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # <linux/in.h>; missing in Python 3.11


def echo(addrs: list[str]) -> None:
    socks = []
    for addr in addrs:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((addr, PORT))
        socks.append(s)
    print("ready", flush=True)
    while True:
        for s in select.select(socks, [], [])[0]:
            data, peer = s.recvfrom(64)
            s.sendto(data, peer)


def ttl(addr: str) -> str:
    v6 = ":" in addr
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    try:
        s.sendto(b"distance?", (addr, PORT))
    except OSError as e:
        return f"error {e.errno}"
    if not select.select([s], [], [], 1.0)[0]:
        return "none"
    _, ancdata, _, _ = s.recvmsg(64, socket.CMSG_SPACE(4))
    for level, kind, data in ancdata:
        if (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL),
                             (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)):
            return str(int.from_bytes(data[:4], sys.byteorder))
    return "no-ttl"


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "echo":
        echo(sys.argv[2:])
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "ttl":
        print(ttl(sys.argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
