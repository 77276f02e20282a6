#!/usr/bin/python3
"""Who closes an IMDS connection first: the client, which the emulator tells
`Connection: close`. The side that closes first keeps the connection in TIME_WAIT for 60 s;
were that the emulator, every (client address, port) pair would stay taken at the server,
and in the lab, where NAT gives the host and all its containers one client address, a new
connection from a port the server still holds lost its SYN to the PAWS check
(TcpExtPAWSTimewait): about one exchange in a thousand got no answer at all.

Runs the real imds-emulator on 127.0.0.1 (no privileges) with raw sockets as clients."""

import os
import select
import shutil
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback_test  # noqa: E402  (the Emulator harness)

REQUEST = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
TIME_WAIT = "06"


def read_response(sock, timeout=5.0):
    """Reads one response with a Content-Length; returns (head, body)."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete response head: {data!r}")
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"closed before the head was complete: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError("closed before the body was complete")
        body += chunk
    return head.decode(), body


def closed_by_peer_within(sock, seconds):
    """True when the peer's FIN (end of stream) arrives within `seconds`."""
    readable, _, _ = select.select([sock], [], [], seconds)
    return bool(readable) and sock.recv(1) == b""


def time_wait_pairs():
    """(local port, remote port) of IPv4 sockets in TIME_WAIT between 127.0.0.1 and itself."""
    pairs = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, local_port = fields[1].split(":")
            remote, remote_port = fields[2].split(":")
            if fields[3] == TIME_WAIT and local == remote == "0100007F":
                pairs.add((int(local_port, 16), int(remote_port, 16)))
    return pairs


class CloseOrder(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = loopback_test.Emulator([])

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def setUp(self):
        self.emu.control_call("POST", "/faults", {})

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.emu.port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    def test_the_client_closes_first_and_the_emulator_keeps_no_time_wait(self):
        sock = self.connect()
        client_port = sock.getsockname()[1]
        sock.sendall(REQUEST)
        head, body = read_response(sock)
        self.assertIn("Connection: close", head)
        self.assertEqual(body, b"i-0123456789abcdef0")
        self.assertFalse(closed_by_peer_within(sock, 0.3),
                         "the emulator closed first: it would hold the client's port in "
                         "TIME_WAIT for 60 s")
        sock.close()
        time.sleep(0.2)
        waiting = time_wait_pairs()
        self.assertNotIn((self.emu.port, client_port), waiting, "TIME_WAIT on the emulator's side")
        self.assertIn((client_port, self.emu.port), waiting,
                      "the client closed first, so the TIME_WAIT is its own")

    def test_a_client_that_never_closes_is_closed_after_two_seconds(self):
        sock = self.connect()
        sock.sendall(REQUEST)
        read_response(sock)
        started = time.monotonic()
        self.assertTrue(closed_by_peer_within(sock, 5), "the emulator never closed")
        self.assertLess(time.monotonic() - started, 3.5)

    def test_a_malformed_answer_without_framing_ends_with_the_emulators_close(self):
        code, _ = self.emu.control_call("POST", "/faults", {"malformed": True})
        self.assertEqual(code, 200)
        sock = self.connect()
        sock.sendall(REQUEST)
        garbage = b""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
            chunk = sock.recv(65536) if readable else None
            if chunk == b"":
                break
            garbage += chunk or b""
        else:
            self.fail("a client reading to the end of the stream waited more than 1 s")
        self.assertTrue(garbage)


if __name__ == "__main__":
    loopback_test.EMULATOR = sys.argv.pop(1)
    if shutil.which("curl") is None:
        print("curl not installed")
        sys.exit(77)
    unittest.main(verbosity=2)
