#!/usr/bin/python3
"""imds-agent's capabilities are per thread: run as root in the namespace lab, the daemon's
main thread (configuration, the socket API) must hold no capability once the probe worker
exists, and the worker exactly CAP_SYS_ADMIN CAP_NET_RAW CAP_SYS_PTRACE, while probing,
reloading and finding new namespaces keep working. Read from /proc/PID/task/TID/status.

Usage: agent_caps_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (Lab, TOKEN_LIKE, UnixHTTPConnection, build_dir_from_argv,  # noqa: E402
                 close_agent_lab, skip_unless_lab_possible, start_agent)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")

# linux/capability.h
CAP_NET_RAW, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 13, 19, 21
PROBE_CAPS = (1 << CAP_NET_RAW) | (1 << CAP_SYS_PTRACE) | (1 << CAP_SYS_ADMIN)
SETS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


def thread_caps(pid: int) -> dict[int, dict[str, int]]:
    """TID -> {CapInh, CapPrm, CapEff, CapAmb} for every thread of pid (threads that end
    while being read are left out)."""
    out: dict[int, dict[str, int]] = {}
    for task in sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name)):
        try:
            text = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        out[int(task.name)] = {s: int(fields[s], 16) for s in SETS}
    return out


def process_caps() -> int:
    """This test's own effective set: what the agent starts with."""
    text = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines()
                    if line.startswith("CapEff:")), 16)


class AgentThreadCapabilities(unittest.TestCase):
    lab: Lab
    agent: subprocess.Popen[str]
    lines: list[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "optional", "--hop-limit", "1"])
        try:
            cls.lab.add_bridge_container("c1")
            cls.work = Path(tempfile.mkdtemp(prefix="imds-agent-caps-"))
            cls.socket = str(cls.work / "agent.sock")
            cls.conf = cls.work / "agent.conf"
            cls.conf.write_text(
                "interval = 2s\njitter = 0\nv1-interval = 0\nmin-probe-gap = 1s\n"
                "request-timeout = 1s\nproc-scan = no\n"
                f"netns-dir = {cls.lab.netns_dir}\nsocket = {cls.socket}\nlog-level = debug\n")
            logged = start_agent(cls.lab, AGENT, cls.conf, cls.work / "conf.d")
            cls.agent, cls.lines, cls.lock = logged.proc, logged.lines, logged.lock
        except BaseException:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        forbidden = close_agent_lab(cls.lab, cls.agent, cls.work)
        with cls.lock:
            text = "\n".join(cls.lines)
        assert TOKEN_LIKE.search(text) is None, "something token-like in the agent's output"
        assert not forbidden, f"credential or user-data requests: {forbidden}"

    def wait_for(self, what: str, pred: Callable[[], Any], timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = pred()
            if v:
                return v
            if self.agent.poll() is not None:
                break
            time.sleep(0.1)
        with self.lock:
            tail = "\n".join(self.lines[-40:])
        self.fail(f"gave up waiting for {what} (agent exit status {self.agent.poll()}); "
                  f"agent log:\n{tail}")

    def status(self) -> dict[str, Any] | None:
        try:
            conn = UnixHTTPConnection(self.socket, timeout=10)
            try:
                conn.request("GET", "/v1/status")
                r = conn.getresponse()
                return json.loads(r.read()) if r.status == 200 else None
            finally:
                conn.close()
        except (OSError, ValueError):
            return None

    def said(self, text: str) -> bool:
        with self.lock:
            return any(text in line for line in self.lines)

    def containers(self) -> set[str]:
        doc = self.status() or {}
        return {c["name"] for c in doc.get("agent", {}).get("containers", [])}

    def test_main_thread_holds_nothing_and_the_worker_only_the_probe_set(self) -> None:
        if process_caps() & PROBE_CAPS != PROBE_CAPS:
            self.skipTest("this test's process lacks the probe's capabilities")
        self.wait_for("a probe cycle that reached c1", lambda: "c1" in self.containers())
        caps = thread_caps(self.agent.pid)
        print(f"threads of imds-agent (pid {self.agent.pid}):")
        for tid, sets in caps.items():
            role = "main" if tid == self.agent.pid else "other"
            print(f"  {tid:>7} {role:5} " + " ".join(f"{s} {v:016x}" for s, v in sets.items()))
        main = caps[self.agent.pid]
        self.assertEqual(main, {s: 0 for s in SETS}, "the main thread still holds capabilities")
        others = {tid: sets for tid, sets in caps.items() if tid != self.agent.pid}
        self.assertTrue(others, "no thread besides the main one: where is the probe worker?")
        for tid, sets in others.items():
            self.assertEqual(sets["CapEff"] & ~PROBE_CAPS, 0, f"thread {tid} holds more: {sets}")
            self.assertEqual(sets["CapPrm"] & ~PROBE_CAPS, 0, f"thread {tid} may raise more")
            self.assertEqual(sets["CapAmb"] | sets["CapInh"], 0, f"thread {tid} passes caps on")
        self.assertIn({"CapInh": 0, "CapPrm": PROBE_CAPS, "CapEff": PROBE_CAPS, "CapAmb": 0},
                      list(others.values()), "no thread holds exactly the probe's capabilities")

    def test_reload_and_a_new_namespace_still_work_from_the_capability_less_main_thread(
            self) -> None:
        self.wait_for("a probe cycle that reached c1", lambda: "c1" in self.containers())
        # SIGHUP: the main thread re-reads the file and re-arms the namespace watches.
        self.conf.write_text(self.conf.read_text().replace("interval = 2s", "interval = 30s"))
        os.kill(self.agent.pid, signal.SIGHUP)
        self.wait_for("the config-reloaded event", lambda: self.said("config-reloaded"))
        # With a 30 s interval, only the inotify watch (armed by the main thread) can make the
        # agent probe a new namespace this soon.
        self.lab.add_bridge_container("c2")
        self.wait_for("c2 diagnosed through the namespace watch",
                      lambda: "c2" in self.containers(), timeout=15)
        self.assertEqual(thread_caps(self.agent.pid)[self.agent.pid]["CapEff"], 0)


if __name__ == "__main__":
    skip_unless_lab_possible()
    unittest.main(verbosity=2)
