#!/usr/bin/python3
"""imds-agent in the namespace lab: the daemon runs in the lab's "host" namespace against
the emulator, and the tests change the emulator at run time and read what the agent
reports (its events on stderr, its socket API, `imds-probe status`).

One agent runs through the whole class; tests are numbered because each builds on the
state the previous one left (as an operator's day would).

Usage: agent_lab_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import re
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

from lab import (Lab, TOKEN_LIKE, build_dir_from_argv,  # noqa: E402
                 check_prometheus_text, close_agent_lab, metric_value, skip_unless_lab_possible, start_agent, unix_http)


BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")
PROBE = str(BUILD_DIR / "probe" / "imds-probe")
EVENT_RE = re.compile(r"\(.*IMDS_EVENT=([a-z0-9-]+)\)$")
# What the man page promises for a new namespace: debounce 1 s + min-probe-gap + one cycle
# (here at most 4 x request-timeout = 4 s).
PROMPT_DIAGNOSIS_S = 10


def parse_event(line: str) -> dict[str, str] | None:
    """'message (KEY=value KEY=value ...)' from the agent's human log; values may hold
    spaces, keys are UPPERCASE, so split at ' KEY='."""
    m = EVENT_RE.search(line)
    if not m:
        return None
    inner = line[line.rindex(" (IMDS_") + 2:-1] if " (IMDS_" in line else ""
    fields: dict[str, str] = {}
    for part in re.split(r" (?=[A-Z][A-Z0-9_]*=)", inner):
        k, _, v = part.partition("=")
        fields[k] = v
    return fields


class AgentInLab(unittest.TestCase):
    lab: Lab
    agent: subprocess.Popen[str]
    lines: list[str]
    work: Path

    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "optional", "--hop-limit", "1"])
        try:
            cls.c1 = cls.lab.add_bridge_container("c1")
            cls.work = Path(tempfile.mkdtemp(prefix="imds-agent-lab-"))
            cls.socket = str(cls.work / "agent.sock")
            conf = cls.work / "agent.conf"
            conf.write_text(
                "interval = 2s\njitter = 0\nv1-interval = 0\nmin-probe-gap = 1s\n"
                # Confirmation as shipped (confirm = 2); a return may follow an outage soon.
                "min-event-gap = 1s\n"
                "backoff-max = 2s\nrequest-timeout = 1s\nproc-scan = no\n"
                f"netns-dir = {cls.lab.netns_dir}\nsocket = {cls.socket}\nlog-level = debug\n")
            logged = start_agent(cls.lab, AGENT, conf, cls.work / "conf.d")
            cls.agent, cls.lines, cls.lock = logged.proc, logged.lines, logged.lock
        except BaseException:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        forbidden = close_agent_lab(cls.lab, cls.agent, cls.work)
        assert not forbidden, f"credential or user-data requests: {forbidden}"

    # ----- helpers -----

    def events(self, name: str | None = None, **match: str) -> list[dict[str, str]]:
        with self.lock:
            lines = list(self.lines)
        out = []
        for line in lines:
            e = parse_event(line)
            if e is None or (name is not None and e.get("IMDS_EVENT") != name):
                continue
            if all(e.get(k) == v for k, v in match.items()):
                out.append(e)
        return out

    def wait_for(self, what: str, pred: Callable[[], Any], timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = pred()
            if v:
                return v
            if self.agent.poll() is not None:
                self.fail(f"imds-agent exited {self.agent.returncode} while waiting for {what}")
            time.sleep(0.1)
        with self.lock:
            tail = "\n".join(self.lines[-40:])
        self.fail(f"timed out after {timeout}s waiting for {what}; agent log:\n{tail}")

    def api(self, method: str, path: str) -> tuple[int, str, str]:
        return unix_http(self.socket, method, path)

    def cycles(self) -> int:
        return json.loads(self.api("GET", "/v1/status")[2])["agent"]["cycles"]

    def wait_cycles(self, n: int) -> None:
        target = self.cycles() + n
        self.wait_for(f"{n} more probe cycles", lambda: self.cycles() >= target, timeout=30)

    def tearDown(self) -> None:
        with self.lock:
            text = "\n".join(self.lines)
        self.assertIsNone(TOKEN_LIKE.search(text), "something token-like in the agent's output")

    # ----- the day -----

    def test_1_first_verdict_then_the_socket_serves_json_and_prometheus_text(self) -> None:
        v = self.wait_for("the first verdict", lambda: self.events("first-verdict"))[0]
        self.assertEqual(v["IMDS_HTTP_TOKENS"], "optional")
        self.assertEqual(v["IMDS_HTTP_ENDPOINT"], "enabled")
        self.assertEqual(v["IMDS_CONTAINERS"], "1")
        self.assertEqual(v["IMDS_CONTAINERS_NO_V2"], "1")  # hop limit 1: c1 gets no token
        status, ctype, body = self.api("GET", "/v1/status")
        self.assertEqual(status, 200)
        self.assertEqual(ctype, "application/json")
        doc = json.loads(body)
        self.assertEqual(doc["schema_version"], 2)
        self.assertTrue(doc["agent"]["ready"])
        names = {c["name"]: c for c in doc["agent"]["containers"]}
        self.assertEqual(names["c1"]["imdsv2"], "no")
        status, ctype, body = self.api("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        check_prometheus_text(body)
        self.assertIn("imds_http_tokens_required 0\n", body)
        self.assertEqual(metric_value(body, "imds_target_imdsv2_ok", netns=".*/c1",
                                      container_id="", container_name="", family="ipv4"), 0)
        self.assertEqual(self.api("GET", "/nothing")[0], 404)
        self.assertEqual(self.api("PUT", "/v1/status")[0], 405)

    def test_2_an_http_tokens_change_is_reported_exactly_once(self) -> None:
        self.lab.set_options(http_tokens="required")
        e = self.wait_for("option-changed HttpTokens",
                          lambda: self.events("option-changed", IMDS_OPTION="HttpTokens"))[0]
        self.assertEqual((e["IMDS_OLD_VALUE"], e["IMDS_NEW_VALUE"]), ("optional", "required"))
        self.wait_cycles(3)
        self.assertEqual(len(self.events("option-changed", IMDS_OPTION="HttpTokens")), 1)

    def test_3_a_hop_limit_change_is_reported_exactly_once_and_the_container_gains_v2(self) -> None:
        self.lab.set_options(hop_limit=2)
        e = self.wait_for("option-changed hop limit", lambda: self.events(
            "option-changed", IMDS_OPTION="HttpPutResponseHopLimit"))[0]
        self.assertEqual(e["IMDS_NEW_VALUE"][-1], "2")  # "2" (exact) or ">=2" (bounds)
        self.wait_for("c1 gains IMDSv2",
                      lambda: self.events("container-imdsv2-gained", IMDS_TARGET="c1"))
        self.wait_cycles(3)
        self.assertEqual(len(self.events("option-changed", IMDS_OPTION="HttpPutResponseHopLimit")), 1)
        self.assertEqual(len(self.events("container-imdsv2-gained")), 1)

    def test_4_a_new_container_is_diagnosed_within_the_promised_time(self) -> None:
        t0 = time.monotonic()
        self.lab.add_dind_container("c5")  # two hops: no token with hop limit 2
        e = self.wait_for("c5 diagnosed", lambda: self.events("container-appeared",
                                                              IMDS_TARGET="c5"),
                          timeout=PROMPT_DIAGNOSIS_S)[0]
        took = time.monotonic() - t0
        self.assertEqual(e["IMDS_IMDSV2"], "no")
        self.assertEqual(e["IMDS_DISTANCE"], "2")
        print(f"\nnew container diagnosed after {took:.1f}s", file=sys.stderr)

    def test_5_an_emulator_outage_is_one_unreachable_and_one_back_event(self) -> None:
        self.lab.stop_emulator()
        e = self.wait_for("imds-unreachable", lambda: self.events("imds-unreachable"))[0]
        self.assertEqual(e["IMDS_REASON"], "connection refused")
        self.wait_cycles(2)
        changes_before = len(self.events("option-changed"))
        self.lab.start_emulator()
        self.wait_for("imds-back", lambda: self.events("imds-back"))
        self.wait_cycles(2)
        self.assertEqual(len(self.events("imds-unreachable")), 1)
        self.assertEqual(len(self.events("imds-back")), 1)
        # The restarted emulator has its start-up options again (optional, hop limit 1):
        # those are real changes, each reported once, but the outage itself added none.
        later = self.events("option-changed")[changes_before:]
        self.assertEqual(sorted(e["IMDS_OPTION"] for e in later),
                         ["HttpPutResponseHopLimit", "HttpTokens"])

    def test_6_post_probe_answers_with_a_fresh_status_and_imds_probe_status_shows_it(self) -> None:
        before = self.cycles()
        time.sleep(1.1)  # min-probe-gap
        status, _, body = self.api("POST", "/v1/probe")
        if status == 429:  # a scheduled cycle just ran: the gap applies to it too
            time.sleep(1.1)
            status, _, body = self.api("POST", "/v1/probe")
        self.assertEqual(status, 200, body)
        self.assertGreater(json.loads(body)["agent"]["cycles"], before)
        r = subprocess.run([PROBE, "status", "--socket", self.socket], capture_output=True,
                           text=True, timeout=30)
        self.assertIn("imds-agent", r.stdout, r.stderr)
        self.assertIn("HttpTokens=optional", r.stdout)
        self.assertIn("c5", r.stdout)

    def test_6_throttling_backs_off_and_reports_no_changes(self) -> None:
        with self.lock:
            before = len(self.lines)
        events_before = len(self.events())
        self.lab.set_faults(status=503, paths=["/latest/api/token"])
        try:
            def throttled_twice() -> bool:
                a = json.loads(self.api("GET", "/v1/status")[2])["agent"]
                return a["consecutive_errors"] >= 2 and "throttled" in (a["last_error"] or "")
            self.wait_for("two throttled cycles", throttled_twice)
            agent = json.loads(self.api("GET", "/v1/status")[2])["agent"]
            self.assertEqual(agent["backoff_seconds"], 2.0)  # capped at backoff-max
            metrics = self.api("GET", "/metrics")[2]
            self.assertRegex(metrics, r"\nimds_probe_throttled_total [1-9][0-9]*\n")
        finally:
            self.lab.set_faults()
        self.wait_for("recovery", lambda: json.loads(
            self.api("GET", "/v1/status")[2])["agent"]["consecutive_errors"] == 0)
        self.assertEqual(len(self.events()), events_before,
                         "throttled answers were reported as changes")
        with self.lock:
            self.assertTrue(any("throttling" in l for l in self.lines[before:]))

    def test_7_sighup_reloads_and_sigterm_stops_cleanly(self) -> None:
        self.agent.send_signal(signal.SIGHUP)
        self.wait_for("config-reloaded", lambda: self.events("config-reloaded"))
        self.agent.send_signal(signal.SIGTERM)
        self.assertEqual(self.agent.wait(timeout=20), 0)
        self.wait_for("stopping", lambda: self.events("stopping"), timeout=5)
        self.assertFalse(Path(self.socket).exists(), "the socket was left behind")


if __name__ == "__main__":
    skip_unless_lab_possible()
    unittest.main(verbosity=2)
