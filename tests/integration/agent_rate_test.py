#!/usr/bin/python3
"""imds-agent's request-rate bound, counted where it matters: at the IMDS. Six containers,
a one-second interval, no gap between probes and a client asking for a probe as fast as
the API answers; the requests the emulator saw must fit `request-burst + request-rate x T`
in every stretch of time T, while the agent goes on answering and probing.

Usage: agent_rate_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (Lab, TOKEN_LIKE, build_dir_from_argv,  # noqa: E402
                 close_agent_lab, skip_unless_lab_possible, start_agent, unix_http)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")

RATE = 4.0  # requests per second
BURST = 14  # the smallest burst the agent accepts (one namespace's worth)
CONTAINERS = 6
DEMAND_SECONDS = 12.0
# The emulator stamps a request when it has read it, the agent takes the permit before it
# connects: a few requests' worth of slack for the difference between the two clocks.
SLACK = 3


class RequestRateAtTheImds(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "required", "--hop-limit", "2"])
        try:
            for i in range(CONTAINERS):
                cls.lab.add_bridge_container(f"c{i + 1}")
            cls.work = Path(tempfile.mkdtemp(prefix="imds-agent-rate-"))
            cls.socket = str(cls.work / "agent.sock")
            conf = cls.work / "agent.conf"
            conf.write_text(
                "interval = 1s\njitter = 0\nv1-interval = 0\nmin-probe-gap = 0\n"
                "request-timeout = 1s\nproc-scan = no\n"
                f"request-rate = {RATE}\nrequest-burst = {BURST}\n"
                f"netns-dir = {cls.lab.netns_dir}\nsocket = {cls.socket}\nlog-level = info\n")
            logged = start_agent(cls.lab, AGENT, conf, cls.work / "conf.d")
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

    def api(self, method: str, path: str, timeout: float = 60) -> tuple[int, str]:
        status, _, body = unix_http(self.socket, method, path, timeout)
        return status, body

    def status(self) -> dict[str, Any]:
        code, body = self.api("GET", "/v1/status")
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def metric(self, text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        self.fail(f"no {name} in /metrics")

    def test_requests_seen_by_the_imds_stay_within_burst_plus_rate_times_time(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.status()["agent"]["cycles"] >= 1:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            self.fail("the agent finished no cycle in 30 s")
        self.lab.clear_requests()

        stop = threading.Event()
        answered: list[int] = []

        def demand() -> None:
            while not stop.is_set():
                try:
                    answered.append(self.api("POST", "/v1/probe", timeout=60)[0])
                except OSError:
                    answered.append(0)

        clients = [threading.Thread(target=demand, daemon=True) for _ in range(3)]
        for c in clients:
            c.start()
        status_latency = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < DEMAND_SECONDS:
            s = time.monotonic()
            self.status()
            status_latency.append(time.monotonic() - s)
            time.sleep(0.25)
        stop.set()
        for c in clients:
            c.join(timeout=90)
        self.assertEqual(self.agent.poll(), None, "the agent exited under demand")

        times = sorted(r["time"] for r in self.lab.requests())
        self.assertGreater(len(times), BURST, "the agent sent (almost) nothing")
        worst = 0.0  # the largest excess over the bound, in requests
        busiest = 0  # the most requests in any one second
        for i in range(len(times)):
            for j in range(i, len(times)):
                span = times[j] - times[i]
                if span <= 1.0:
                    busiest = max(busiest, j - i + 1)
                worst = max(worst, (j - i + 1) - (BURST + RATE * span))
        span = times[-1] - times[0]
        _, metrics = self.api("GET", "/metrics")
        delayed = self.metric(metrics, "imds_requests_delayed_total")
        print(f"\n  {len(times)} requests in {span:.1f} s at the IMDS "
              f"(bound {BURST} + {RATE}/s x T = {BURST + RATE * span:.0f}); "
              f"busiest second {busiest}; worst excess {worst:.1f}; "
              f"POST /v1/probe answered {len(answered)} times "
              f"({sorted(set(answered))}); imds_requests_delayed_total {delayed:.0f}; "
              f"/v1/status latency max {max(status_latency) * 1000:.0f} ms", file=sys.stderr)
        self.assertLessEqual(worst, SLACK, "more requests reached the IMDS than the bound allows")
        self.assertGreater(delayed, 0, "nothing was ever delayed: the demand did not test the bound")
        self.assertLess(max(status_latency), 2.0, "the status waited for the rate bound")
        self.assertTrue(answered and all(code in (200, 429, 503) for code in answered), answered)


if __name__ == "__main__":
    skip_unless_lab_possible()
    unittest.main(verbosity=2)
