#!/usr/bin/python3
"""A hostile process inside a container namespace (Docker's default capabilities include
CAP_NET_RAW): whenever the IMDS's SYN-ACK reaches this namespace, it sends a forged SYN-ACK
and a forged data segment to the same local address and port over `lo`, with the source
address and port of the IMDS and TTL 64, as if the IMDS were zero hops away. A probe that
trusts any segment from the IMDS's address reads the forged TTLs.

The forged segments come after the real SYN-ACK (which resets what a port has shown) and,
with the emulator's `delay_ms` fault, long before the real answer's data.

Usage (inside the namespace): forge_imds_segments.py
Prints "ready" once it listens, and "forged N" when it gets SIGTERM.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
PACKET_HOST = 0
IMDS = {4: ipaddress.ip_address("169.254.169.254").packed,
        6: ipaddress.ip_address("fd00:ec2::254").packed}
IMDS_PORT = 80
FORGED_TTL = 64
PAYLOAD = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def tcp(source_port: int, destination_port: int, flags: int, payload: bytes) -> bytes:
    # Sequence numbers and checksum are left zero: the kernel's TCP drops the segment, and
    # a packet socket sees it before TCP does.
    return struct.pack("!HHIIBBHHH", source_port, destination_port, 0, 0, 5 << 4, flags,
                       65535, 0, 0) + payload


def ipv4(source: bytes, destination: bytes, segment: bytes) -> bytes:
    # IP_HDRINCL: the kernel fills in the total length and the header checksum.
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, FORGED_TTL, socket.IPPROTO_TCP, 0,
                       source, destination) + segment


def ipv6(source: bytes, destination: bytes, segment: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(segment), socket.IPPROTO_TCP, FORGED_TTL,
                       source, destination) + segment


def main() -> int:
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    raw = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
           6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)}
    forged = 0

    def stop(_signum: int, _frame: object) -> None:
        print(f"forged {forged}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while True:
        packet, (ifname, _proto, pkttype, _hatype, _addr) = sniff.recvfrom(256)
        if ifname == "lo" or pkttype != PACKET_HOST or not packet:
            continue
        version = packet[0] >> 4
        if version == 4 and len(packet) >= 40 and packet[9] == socket.IPPROTO_TCP:
            header = (packet[0] & 0x0F) * 4
            source, destination = packet[12:16], packet[16:20]
        elif version == 6 and len(packet) >= 60 and packet[6] == socket.IPPROTO_TCP:
            header = 40
            source, destination = packet[8:24], packet[24:40]
        else:
            continue
        if source != IMDS[version] or len(packet) < header + 14:
            continue
        sport, dport = struct.unpack("!HH", packet[header:header + 4])
        flags = packet[header + 13]
        if sport != IMDS_PORT or flags & 0x12 != 0x12:  # SYN-ACKs only
            continue
        # To one of this namespace's own addresses: the kernel sends it over lo.
        build = ipv4 if version == 4 else ipv6
        target = (ipaddress.ip_address(destination).compressed, 0)
        for segment in (tcp(IMDS_PORT, dport, 0x12, b""), tcp(IMDS_PORT, dport, 0x18, PAYLOAD)):
            raw[version].sendto(build(IMDS[version], destination, segment), target)
            forged += 1


if __name__ == "__main__":
    sys.exit(main())
