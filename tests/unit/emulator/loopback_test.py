#!/usr/bin/python3
"""Runs the real imds-emulator on loopback (127.0.0.1 and ::1, a free port, a private
control socket) and checks it with curl and Python's http.client: token PUT + GET, the
control API, faults, and that token PUT responses leave with the hop limit as IP TTL
(seen through IP_MINTTL on the client socket, no privileges needed)."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

EMULATOR = None
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
IP_MINTTL = getattr(socket, "IP_MINTTL", 21)
IPV6_MINHOPCOUNT = getattr(socket, "IPV6_MINHOPCOUNT", 73)


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port(v6):
    family, addr = (socket.AF_INET6, "::1") if v6 else (socket.AF_INET, "127.0.0.1")
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self, args):
        self.dir = tempfile.mkdtemp(prefix="imds-emu-test-")
        self.control = os.path.join(self.dir, "control.sock")
        self.v6 = have_ipv6_loopback()
        self.port = free_port(self.v6)
        listen = ["--listen", "127.0.0.1"] + (["--listen", "::1"] if self.v6 else [])
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [EMULATOR, *listen, "--port", str(self.port), "--control", self.control,
             "--ready-fd", str(write_fd), *args],
            pass_fds=(write_fd,), stderr=subprocess.PIPE, text=True)
        os.close(write_fd)
        with os.fdopen(read_fd) as ready:
            line = ready.readline()
        if line != "ready\n":
            self.stop()
            raise RuntimeError(f"emulator did not become ready: {self.stderr}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def curl(self, *args, host="127.0.0.1", path="/latest/meta-data/instance-id", timeout=5):
        base = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        # Bytes, decoded by hand: text mode would turn the "\r\n\r\n" after the headers
        # into "\n\n".
        r = subprocess.run(
            ["curl", "-sS", "--noproxy", "*", "-m", str(timeout), "-D", "-", *args, base + path],
            capture_output=True, timeout=timeout + 5)
        r.stdout = r.stdout.decode("utf-8", "replace")
        r.stderr = r.stderr.decode("utf-8", "replace")
        return r

    def control_call(self, method, path, body=None):
        r = subprocess.run(
            ["curl", "-sS", "--unix-socket", self.control, "-X", method,
             *(["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
               if body is not None else []),
             "-w", "\n%{http_code}", f"http://localhost{path}"],
            capture_output=True, text=True, timeout=10)
        text, _, code = r.stdout.rpartition("\n")
        return int(code), json.loads(text)


def status_of(curl_result):
    """Status code of the first status line curl dumped with -D -."""
    for line in curl_result.stdout.splitlines():
        if line.startswith("HTTP/"):
            return int(line.split()[1])
    return None


def header_of(curl_result, name):
    for line in curl_result.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def body_of(curl_result):
    return curl_result.stdout.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in curl_result.stdout else ""


class MinTtlConnection(http.client.HTTPConnection):
    """An HTTP connection whose kernel drops incoming segments with TTL below min_ttl."""

    def __init__(self, host, port, min_ttl, v6, timeout):
        super().__init__(host, port, timeout=timeout)
        self.min_ttl, self.v6 = min_ttl, v6

    def connect(self):
        super().connect()
        if self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MINHOPCOUNT, self.min_ttl)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_MINTTL, self.min_ttl)


class LoopbackEmulator(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator(["--ipv6", "enabled", "--hop-limit", "1"])

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def setUp(self):
        self.emu.control_call("POST", "/faults", {})
        self.emu.control_call("POST", "/options", {"http_tokens": "optional", "hop_limit": 1,
                                                   "ipv6": "enabled"})

    def token(self, host="127.0.0.1"):
        r = self.emu.curl("-X", "PUT", "-H", f"{TTL_HEADER}: 300", host=host,
                          path="/latest/api/token")
        self.assertEqual(status_of(r), 200, r.stdout + r.stderr)
        self.assertEqual(header_of(r, TTL_HEADER), "300")
        self.assertEqual(header_of(r, "Server"), "EC2ws")
        return body_of(r)

    def test_token_put_then_get_answers_over_ipv4(self):
        tok = self.token()
        r = self.emu.curl("-H", f"{TOKEN_HEADER}: {tok}")
        self.assertEqual(status_of(r), 200)
        self.assertEqual(body_of(r), "i-0123456789abcdef0")
        self.assertEqual(header_of(r, TTL_HEADER), "300")

    def test_token_put_then_get_answers_over_ipv6(self):
        if not self.emu.v6:
            self.skipTest("no IPv6 loopback")
        tok = self.token(host="::1")
        r = self.emu.curl("-H", f"{TOKEN_HEADER}: {tok}", host="::1")
        self.assertEqual(status_of(r), 200)
        self.assertEqual(self.emu.control_call("GET", "/requests")[1][-1]["family"], "ipv6")

    def test_head_answers_with_content_length_but_no_body(self):
        # Everything the server sends until it closes: the header block and nothing after.
        with socket.create_connection(("127.0.0.1", self.emu.port), timeout=5) as s:
            s.sendall(b"HEAD /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"), data)
        self.assertIn(b"Content-Length: 19", head)
        self.assertEqual(rest, b"")

    def test_http_1_0_request_gets_an_http_1_0_answer(self):
        r = self.emu.curl("-0")
        self.assertTrue(r.stdout.startswith("HTTP/1.0 200"), r.stdout)

    def test_expect_continue_gets_417_from_the_server(self):
        r = self.emu.curl("-X", "PUT", "-H", f"{TTL_HEADER}: 60", "-H", "Expect: 100-continue",
                          "--data-binary", "x" * 2000, path="/latest/api/token")
        self.assertEqual(status_of(r), 417)

    def test_required_tokens_set_through_control_reject_tokenless_gets(self):
        code, opts = self.emu.control_call("POST", "/options", {"http_tokens": "required"})
        self.assertEqual((code, opts["http_tokens"]), (200, "required"))
        r = self.emu.curl()
        self.assertEqual(status_of(r), 401)
        self.assertIn("<title>401 - Unauthorized</title>", body_of(r))

    def test_request_log_records_requests_but_never_tokens(self):
        self.emu.control_call("DELETE", "/requests")
        tok = self.token()
        self.emu.curl("-H", f"{TOKEN_HEADER}: {tok}")
        code, log = self.emu.control_call("GET", "/requests")
        self.assertEqual(code, 200)
        self.assertEqual([(e["method"], e["status"]) for e in log], [("PUT", 200), ("GET", 200)])
        self.assertEqual(log[0]["ttl_header"], "300")
        self.assertEqual(log[0]["hop_limit"], 1)
        self.assertTrue(log[1]["token_valid"])
        self.assertNotIn(tok, json.dumps(log))

    def test_token_put_response_leaves_with_the_hop_limit_as_ttl(self):
        # A client socket that refuses segments with TTL < 2 loses the PUT response when
        # the hop limit is 1, but not the handshake or GET responses (TTL 64).
        for v6, host in [(False, "127.0.0.1")] + ([(True, "::1")] if self.emu.v6 else []):
            conn = MinTtlConnection(host, self.emu.port, 2, v6, timeout=2)
            conn.request("GET", "/latest/meta-data/instance-id")
            self.assertEqual(conn.getresponse().status, 200)
            conn.close()
            conn = MinTtlConnection(host, self.emu.port, 2, v6, timeout=2)
            conn.request("PUT", "/latest/api/token", headers={TTL_HEADER: "60"})
            with self.assertRaises(TimeoutError, msg=host):
                conn.getresponse()
            conn.close()
        self.emu.control_call("POST", "/options", {"hop_limit": 2})
        conn = MinTtlConnection("127.0.0.1", self.emu.port, 2, False, timeout=2)
        conn.request("PUT", "/latest/api/token", headers={TTL_HEADER: "60"})
        self.assertEqual(conn.getresponse().status, 200)
        conn.close()

    def test_after_dropped_put_reset_resets_the_waiting_client(self):
        self.emu.control_call("POST", "/faults", {"after_dropped_put": "reset"})
        conn = MinTtlConnection("127.0.0.1", self.emu.port, 2, False, timeout=3)
        conn.request("PUT", "/latest/api/token", headers={TTL_HEADER: "60"})
        start = time.monotonic()
        with self.assertRaises(ConnectionResetError):
            conn.getresponse()
        self.assertLess(time.monotonic() - start, 2.5)  # not a 3 s timeout
        conn.close()

    def test_reset_fault_makes_curl_see_a_reset(self):
        self.emu.control_call("POST", "/faults", {"reset": True})
        r = self.emu.curl()
        self.assertEqual(r.returncode, 56, r.stderr)  # CURLE_RECV_ERROR
        self.assertIn("reset", r.stderr.lower())

    def test_malformed_fault_is_not_http(self):
        self.emu.control_call("POST", "/faults", {"malformed": True})
        r = self.emu.curl()
        self.assertNotEqual(r.returncode, 0)
        self.assertIsNone(status_of(r))

    def test_hang_fault_times_the_client_out(self):
        self.emu.control_call("POST", "/faults", {"hang": True})
        r = self.emu.curl(timeout=1)
        self.assertEqual(r.returncode, 28, r.stderr)  # CURLE_OPERATION_TIMEDOUT

    def test_delay_and_interceptor_faults(self):
        self.emu.control_call("POST", "/faults", {"delay_ms": 300, "no_server_header": True})
        start = time.monotonic()
        r = self.emu.curl()
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.assertEqual(status_of(r), 200)
        self.assertIsNone(header_of(r, "Server"))

    def test_disabling_ipv6_closes_the_ipv6_listener(self):
        if not self.emu.v6:
            self.skipTest("no IPv6 loopback")
        self.emu.control_call("POST", "/options", {"ipv6": "disabled"})
        r = self.emu.curl(host="::1")
        self.assertEqual(r.returncode, 7, r.stderr)  # CURLE_COULDNT_CONNECT
        self.emu.control_call("POST", "/options", {"ipv6": "enabled"})
        self.assertEqual(status_of(self.emu.curl(host="::1")), 200)

    def test_pending_options_change_after_the_delay(self):
        start = time.monotonic()
        self.emu.control_call("POST", "/options", {"http_tokens": "required", "pending_ms": 2500})
        self.assertEqual(status_of(self.emu.curl()), 200)
        self.assertEqual(self.emu.control_call("GET", "/options")[1]["state"], "pending")
        self.assertLess(time.monotonic() - start, 2.5, "too slow to observe the pending window")
        time.sleep(max(0.0, 2.6 - (time.monotonic() - start)))
        self.assertEqual(status_of(self.emu.curl()), 401)
        self.assertEqual(self.emu.control_call("GET", "/options")[1]["state"], "applied")

    def test_control_rejects_bad_input_with_a_reason(self):
        code, body = self.emu.control_call("POST", "/options", {"hop_limit": 99})
        self.assertEqual(code, 400)
        self.assertIn("hop_limit", body["error"])


class CommandLine(unittest.TestCase):
    def test_bad_flag_value_exits_2_with_a_message(self):
        r = subprocess.run([EMULATOR, "--listen", "127.0.0.1", "--hop-limit", "0"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--hop-limit", r.stderr)

    def test_help_exits_0(self):
        r = subprocess.run([EMULATOR, "--help"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--hop-limit", r.stdout)

    def test_idle_clients_are_disconnected_and_connections_are_bounded(self):
        emu = Emulator(["--max-connections", "1", "--read-timeout-ms", "1500"])
        try:
            idle = socket.create_connection(("127.0.0.1", emu.port), timeout=5)
            time.sleep(0.1)
            with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as extra:
                # The one allowed connection is taken: this one is closed unanswered, at
                # once (not after the read timeout).
                start = time.monotonic()
                try:
                    extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    self.assertEqual(extra.recv(100), b"")
                except (ConnectionResetError, BrokenPipeError):
                    pass
                self.assertLess(time.monotonic() - start, 1.0)
            start = time.monotonic()
            self.assertEqual(idle.recv(100), b"")  # the server closed the idle connection
            self.assertLess(time.monotonic() - start, 3.0)
            idle.close()
            time.sleep(0.1)
            self.assertEqual(status_of(emu.curl()), 200)
        finally:
            emu.stop()

    def test_sigterm_exits_cleanly_and_removes_the_control_socket(self):
        emu = Emulator([])
        self.assertTrue(os.path.exists(emu.control))
        emu.proc.send_signal(signal.SIGTERM)
        self.assertEqual(emu.proc.wait(10), 0)
        self.assertFalse(os.path.exists(emu.control))
        emu.stop()


if __name__ == "__main__":
    EMULATOR = sys.argv.pop(1)
    if shutil.which("curl") is None:
        print("curl not installed")
        sys.exit(77)
    unittest.main(verbosity=2)
