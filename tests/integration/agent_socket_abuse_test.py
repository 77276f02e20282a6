#!/usr/bin/python3
"""imds-agent's stop and its socket under abuse, in the namespace lab: the real daemon runs in
the lab's "host" namespace against the emulator, with a NOTIFY_SOCKET this test binds (so it
sees READY=1, WATCHDOG=1 and STOPPING=1 as systemd would).

- Stopping: with the IMDS hanging (a probe stuck far longer than 5 s), SIGTERM ends the
  process within 5 s and a caller waiting on POST /v1/probe gets HTTP 503; a second SIGTERM
  while it stops ends it at once.
- Abuse: hundreds of concurrent hostile clients (idle, byte-by-byte, oversized, garbage,
  never reading, leaving mid-answer) from a few processes, while this process keeps asking
  GET /v1/status: it is answered (latency printed), probing goes on, the watchdog stays fed,
  RSS stays bounded (printed).

Usage: agent_socket_abuse_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))
sys.path.insert(0, str(HERE))

from lab import (TOKEN_LIKE, Lab, build_dir_from_argv,  # noqa: E402
                 skip_unless_lab_possible, stop_process, unix_http)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")

EXIT_BOUND_S = 5.0
ABUSE_SECONDS = 20.0
ABUSER_PROCESSES = 3     # each holds at most 8 of the 32 slots (the per-peer share)
THREADS_PER_ABUSER = 100  # 300 concurrent hostile clients


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket: records every state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def times(self, state: str) -> list[float]:
        with self.lock:
            return [t for t, m in self.messages if state in m.split("\n")]

    def close(self) -> None:
        self.done = True
        self.thread.join(timeout=2)
        self.sock.close()


class AgentRun:
    """One imds-agent in the lab's host namespace, with its own config, socket and notify
    socket; its output is collected by a thread."""

    def __init__(self, lab: Lab, work: Path, name: str, conf: str) -> None:
        self.dir = work / name
        self.dir.mkdir()
        self.socket = str(self.dir / "agent.sock")
        self.notify = NotifyListener(self.dir / "notify.sock")
        (self.dir / "agent.conf").write_text(
            conf + f"proc-scan = no\nnetns-dir = {lab.netns_dir}\nsocket = {self.socket}\n")
        self.lines: list[str] = []
        self.proc = lab.popen(
            lab.host, [AGENT, "--config", str(self.dir / "agent.conf"), "--config-dir",
                       str(self.dir / "conf.d")],
            env={"NOTIFY_SOCKET": str(self.notify.path), "WATCHDOG_USEC": "1000000"},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_socket(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if Path(self.socket).exists():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"imds-agent exited {self.proc.returncode}: {self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"no socket after {timeout}s: {self.log()}")

    def api(self, method: str, path: str, timeout: float = 15) -> tuple[int, str]:
        status, _, body = unix_http(self.socket, method, path, timeout)
        return status, body

    def status(self) -> dict[str, Any]:
        code, body = self.api("GET", "/v1/status")
        assert code == 200, (code, body)
        return json.loads(body)["agent"]

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        return "\n".join(self.lines[-30:])

    def close(self) -> None:
        stop_process(self.proc, timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.notify.close()
        text = "\n".join(self.lines)
        assert TOKEN_LIKE.search(text) is None, "something token-like in the agent's output"


class StoppingWithAProbeStuck(unittest.TestCase):
    lab: Lab
    work: Path

    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "required", "--hop-limit", "2"])
        cls.work = Path(tempfile.mkdtemp(prefix="imds-agent-stop-"))

    @classmethod
    def tearDownClass(cls) -> None:
        forbidden = cls.lab.forbidden_requests()
        cls.lab.close()
        shutil.rmtree(cls.work, ignore_errors=True)
        assert not forbidden, f"credential or user-data requests: {forbidden}"

    def start_stuck_agent(self, name: str) -> AgentRun:
        # Every IMDS request hangs; with request-timeout 30s the probe's own deadline is 30 s.
        self.lab.set_faults(hang=True)
        agent = AgentRun(self.lab, self.work, name,
                         "interval = 1h\nv1-interval = never\nmin-probe-gap = 0\n"
                         "request-timeout = 30s\n")
        self.addCleanup(agent.close)
        self.addCleanup(self.lab.set_faults)
        agent.wait_socket()
        time.sleep(0.5)  # the first probe is under way, and stuck
        self.assertTrue(agent.status()["probing"])
        return agent

    def test_sigterm_with_a_stuck_probe_answers_the_waiting_caller_503_and_exits_in_time(self) -> None:
        agent = self.start_stuck_agent("once")
        answer: dict[str, Any] = {}

        def waiting_caller() -> None:
            try:
                answer["status"], answer["body"] = agent.api("POST", "/v1/probe", timeout=20)
            except Exception as e:  # noqa: BLE001 - an EOF is what this test looks for
                answer["error"] = repr(e)

        caller = threading.Thread(target=waiting_caller)
        caller.start()
        time.sleep(0.5)  # the caller waits for the running probe
        self.assertTrue(caller.is_alive(), f"POST /v1/probe did not wait: {answer}")
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        rc = agent.proc.wait(timeout=30)
        took = time.monotonic() - t0
        caller.join(timeout=10)
        print(f"\nSIGTERM with the probe stuck: exit {rc} after {took:.2f}s", file=sys.stderr)
        self.assertEqual(rc, 0, agent.log())
        self.assertLess(took, EXIT_BOUND_S, agent.log())
        self.assertEqual(answer.get("status"), 503, answer)
        self.assertIn("imds-agent is stopping", answer.get("body", ""))
        self.assertTrue(agent.notify.times("STOPPING=1"), "no STOPPING=1")
        self.assertFalse(Path(agent.socket).exists(), "the socket was left behind")

    def test_a_second_sigterm_while_stopping_ends_the_process_at_once(self) -> None:
        agent = self.start_stuck_agent("twice")
        agent.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # stopping: the stuck probe is being given its bound (2 s)
        self.assertIsNone(agent.proc.poll(), "exited before the second signal")
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        rc = agent.proc.wait(timeout=30)
        took = time.monotonic() - t0
        print(f"\nsecond SIGTERM: exit {rc} after {took:.2f}s", file=sys.stderr)
        self.assertEqual(rc, -signal.SIGTERM, agent.log())
        self.assertLess(took, 1.0)


# ----- the abuse ------------------------------------------------------------------------

def _connect(path: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError:
        s.close()
        raise
    return s


def _drain(s: socket.socket, limit: int = 1 << 20) -> bytes:
    out = b""
    try:
        while len(out) < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    return out


def _one_hostile_client(path: str, mode: int, rng: random.Random) -> str:
    """One connection of kind `mode`; returns "refused" when the agent turned it away at once
    (503 over a cap), "ok" otherwise. Every wait here is bounded."""
    s = _connect(path, timeout=8)
    try:
        s.settimeout(0.05)
        try:
            early = s.recv(64)  # a refusal comes before we send anything
            if early.startswith(b"HTTP/1.1 503"):
                return "refused"
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            return "refused"
        s.settimeout(8)
        if mode == 0:  # idle: connects and never sends; the request deadline drops it
            _drain(s)
        elif mode == 1:  # byte by byte (slowloris)
            for b in b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                s.send(bytes([b]))
                time.sleep(0.05)
        elif mode == 2:  # oversized header
            s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
            _drain(s)
        elif mode == 3:  # oversized body
            s.sendall(b"POST /v1/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                      + b"b" * 20000)
            _drain(s)
        elif mode == 4:  # garbage
            s.sendall(bytes(rng.getrandbits(8) for _ in range(512)) + b"\r\n\r\n")
            _drain(s)
        elif mode == 5:  # never reads its answer
            s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            time.sleep(3)
        elif mode == 6:  # leaves in the middle of the answer
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(20)
        else:  # well-formed, keep-alive, answer read
            s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            _drain(s)
        return "ok"
    except OSError:
        return "ok"
    finally:
        s.close()


def _abuser(path: str, seconds: float, threads: int, seed: int, results: Any) -> None:
    """One hostile process (one peer pid): `threads` clients looping over the hostile kinds
    until `seconds` pass. The lab's signal handlers are not for this forked copy."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    stop_at = time.monotonic() + seconds
    counts = {"ok": 0, "refused": 0, "error": 0}
    lock = threading.Lock()

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        while time.monotonic() < stop_at:
            try:
                what = _one_hostile_client(path, i % 8, rng)
            except OSError:
                what = "error"
            with lock:
                counts[what] += 1
            # A refused client retries after a pause, so the test does not just burn CPU.
            time.sleep(0.5 if what != "ok" else 0.05)

    pool = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 30)
    results.put(counts)


class TheSocketUnderAbuse(unittest.TestCase):
    def test_well_formed_requests_probing_and_the_watchdog_survive_hundreds_of_hostile_clients(
            self) -> None:
        lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "required", "--hop-limit", "2"])
        work = Path(tempfile.mkdtemp(prefix="imds-agent-abuse-"))
        agent: AgentRun | None = None
        try:
            lab.add_bridge_container("c1")
            agent = AgentRun(lab, work, "abuse",
                             "interval = 1s\njitter = 0\nv1-interval = never\n"
                             "min-probe-gap = 0\nrequest-timeout = 1s\n")
            agent.wait_socket()
            deadline = time.monotonic() + 15
            while agent.status()["cycles"] < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertGreaterEqual(agent.status()["cycles"], 1, agent.log())
            rss_before = agent.rss_kib()
            cycles_before = agent.status()["cycles"]
            t_start = time.monotonic()

            ctx = multiprocessing.get_context("fork")
            results = ctx.Queue()
            procs = [ctx.Process(target=_abuser,
                                 args=(agent.socket, ABUSE_SECONDS, THREADS_PER_ABUSER, n, results))
                     for n in range(ABUSER_PROCESSES)]
            for p in procs:
                p.start()
            latencies: list[float] = []
            failures: list[str] = []
            time.sleep(1)  # let the abusers take their slots
            while time.monotonic() < t_start + ABUSE_SECONDS:
                t0 = time.monotonic()
                try:
                    code, body = agent.api("GET", "/v1/status", timeout=5)
                    if code != 200:
                        failures.append(f"HTTP {code}: {body[:100]}")
                    else:
                        json.loads(body)
                except (OSError, ValueError) as e:
                    failures.append(repr(e))
                latencies.append(time.monotonic() - t0)
                time.sleep(0.1)
            counts = {"ok": 0, "refused": 0, "error": 0}
            for _ in procs:
                for k, v in results.get(timeout=60).items():
                    counts[k] += v
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():  # our own child, by its pid
                    os.kill(p.pid, signal.SIGKILL)
                    p.join()
            t_end = time.monotonic()
            time.sleep(6)  # idle and slow connections reach their request deadline
            rss_after = agent.rss_kib()
            cycles_after = agent.status()["cycles"]

            lat = sorted(latencies)
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            pings = [t for t in agent.notify.times("WATCHDOG=1") if t_start <= t <= t_end]
            gaps = [b - a for a, b in zip(pings, pings[1:])]
            print(f"\nabuse: {ABUSER_PROCESSES * THREADS_PER_ABUSER} hostile clients for "
                  f"{ABUSE_SECONDS:.0f}s, connections served {counts['ok']}, refused "
                  f"{counts['refused']}, errors {counts['error']}\n"
                  f"GET /v1/status under load: {len(lat)} requests, median "
                  f"{statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                  f"max {lat[-1] * 1000:.1f} ms, failures {len(failures)}\n"
                  f"probe cycles {cycles_before} -> {cycles_after}; WATCHDOG=1 pings {len(pings)}, "
                  f"longest gap {max(gaps, default=0):.2f}s (WATCHDOG_USEC 1s)\n"
                  f"RSS {rss_before} KiB before, {rss_after} KiB after", file=sys.stderr)
            self.assertEqual(failures, [], "well-formed requests went unanswered")
            self.assertLess(p99, 1.0)
            self.assertGreater(counts["ok"] + counts["refused"], 300)
            self.assertGreaterEqual(cycles_after - cycles_before, 5, "probing stalled")
            self.assertGreaterEqual(len(pings), int(ABUSE_SECONDS) - 2)
            self.assertLess(max(gaps, default=0), 1.0, "the watchdog would have fired")
            self.assertLess(rss_after - rss_before, 32 * 1024, "RSS grew under abuse")
            self.assertIsNone(agent.proc.poll(), "imds-agent died under abuse")
        finally:
            if agent is not None:
                agent.close()
            forbidden = lab.forbidden_requests()
            lab.close()
            shutil.rmtree(work, ignore_errors=True)
        self.assertEqual(forbidden, [], "credential or user-data requests")


if __name__ == "__main__":
    skip_unless_lab_possible()
    unittest.main(verbosity=2)
