#!/usr/bin/python3
"""Faults from the IMDS, through the emulator: imds-probe must give an honest verdict within
its deadline and the exit status the man page gives; imds-agent must keep running, back off
on the host's throttling, report an outage once and recover by itself.

"Honest" is checked against the emulator's own request log where it can be: a claim
(HttpTokens, the hop limit, "throttled") must match what the emulator answered, and a fault
that proves nothing about an option must leave that option unknown.

Prints a table (fault, verdict, exit status, wall time vs the deadline) and the suite's
wall time. Usage: test_faults.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (Lab, Netns, TOKEN_LIKE, UnixHTTPConnection, build_dir_from_argv,  # noqa: E402
                 close_agent_lab, skip_unless_lab_possible, start_agent)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
PROBE = str(BUILD_DIR / "probe" / "imds-probe")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")

TIMEOUT_S = 1.0
DEADLINE_S = 3.0
# Starting the process (ip netns exec, exec, curl init) and printing: not part of --deadline.
START_SLACK_S = 0.75

EXIT_HEALTHY, EXIT_WARNING, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
TOKEN = "/latest/api/token"
META = "/latest/meta-data/"
EVENT_RE = re.compile(r"IMDS_EVENT=([a-z0-9-]+)")

ROWS: list[tuple[str, str, int, float]] = []  # the table printed at the end
T_START = time.monotonic()


def print_table() -> None:
    if not ROWS:
        return
    width = max(len(r[0]) for r in ROWS)
    out = [f"\n{'fault':<{width}}  exit  wall/deadline  verdict"]
    for fault, verdict, rc, wall in ROWS:
        out.append(f"{fault:<{width}}  {rc:>4}  {wall:5.2f}s/{DEADLINE_S:.1f}s  {verdict}")
    print("\n".join(out), file=sys.stderr)


class Run:
    """One imds-probe run: its exit status, wall time and JSON document."""

    def __init__(self, proc: subprocess.CompletedProcess[str], wall: float):
        self.rc = proc.returncode
        self.wall = wall
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        try:
            self.doc: dict[str, Any] = json.loads(proc.stdout)
        except ValueError as e:
            raise AssertionError(f"imds-probe exited {self.rc} without JSON ({e}): "
                                 f"{proc.stdout[:500]!r} {proc.stderr[:500]!r}") from None

    @property
    def inference(self) -> dict[str, Any]:
        return self.doc["inference"]

    def verdict(self, ns: Netns | None) -> dict[str, Any]:
        """The verdict of the host (None) or of the target probed through ns.path."""
        targets = self.doc["targets"]
        for i, t in enumerate(targets):
            if (ns is None and t["name"] == "host") or (ns is not None and t["path"] == ns.path):
                return self.inference["targets"][i]
        raise AssertionError(f"no target {ns} in {[t['path'] for t in targets]}")

    def findings(self) -> set[str]:
        return {f["id"] for f in self.doc["findings"]}

    def headline(self) -> str:
        inf = self.inference
        hop = inf["hop_limit"]
        hop_words = (str(hop["exact"]) if hop["exact"] is not None else
                     f"{hop['lower']}..{hop['upper']}" if hop["method"] != "none" else "?")
        return (f"endpoint={inf['endpoint']} tokens={inf['http_tokens']} hop={hop_words} "
                f"host: {self.verdict(None)['summary'][:60]}")


class ProbeUnderFaults(unittest.TestCase):
    """imds-probe against one fault at a time: HttpTokens required, hop limit 2, one bridge
    container (1 hop) probed with --netns."""

    lab: Lab
    c1: Netns

    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "required", "--hop-limit", "2"])
        try:
            cls.c1 = cls.lab.add_bridge_container("c1")
        except BaseException:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        forbidden = cls.lab.forbidden_requests()
        cls.lab.close()
        assert not forbidden, f"credential or user-data requests: {forbidden}"

    def setUp(self) -> None:
        if not self.lab.emulator_running():
            self.lab.start_emulator()
        self.lab.set_faults()
        self.lab.set_options(http_tokens="required", hop_limit=2, http_endpoint="enabled")
        self.lab.clear_requests()

    def tearDown(self) -> None:
        if self.lab.emulator_running():
            self.lab.set_faults()

    def probe(self, fault: str, extra: list[str] | None = None) -> Run:
        argv = [PROBE, "--netns", self.c1.path, "--json=short", "--timeout", f"{TIMEOUT_S}s",
                "--deadline", f"{DEADLINE_S}s", *(extra or [])]
        t0 = time.monotonic()
        proc = self.lab.exec(self.lab.host, argv, timeout=DEADLINE_S + 10)
        run = Run(proc, time.monotonic() - t0)
        self.assertIsNone(TOKEN_LIKE.search(proc.stdout + proc.stderr),
                          f"{fault}: something token-like in the output")
        self.assertLessEqual(run.wall, DEADLINE_S + START_SLACK_S,
                             f"{fault}: took {run.wall:.2f}s, deadline {DEADLINE_S}s")
        ROWS.append((fault, run.headline(), run.rc, run.wall))
        return run

    def faulted(self, fault: str, **faults: Any) -> Run:
        self.lab.set_faults(**faults)
        try:
            return self.probe(fault)
        finally:
            self.lab.set_faults()

    def logged(self) -> list[dict[str, Any]]:
        return self.lab.requests()

    def assert_no_hop_limit_claim(self, run: Run, fault: str) -> None:
        hop = run.inference["hop_limit"]
        self.assertEqual((hop["method"], hop["exact"], hop["lower"], hop["upper"]),
                         ("none", None, 1, 64), f"{fault}: a hop limit was claimed: {hop}")

    # ----- the baseline -----

    def test_baseline_is_healthy(self) -> None:
        run = self.probe("none")
        self.assertEqual(run.rc, EXIT_HEALTHY, run.doc["findings"])
        self.assertEqual(run.inference["http_tokens"], "required")
        self.assertEqual(run.inference["hop_limit"]["exact"], 2)
        self.assertEqual(run.verdict(self.c1)["imdsv2"], "yes")

    # ----- the IMDS does not answer -----

    def test_a_hanging_imds_is_unreachable_by_timeout_and_proves_no_hop_limit(self) -> None:
        run = self.faulted("hang (every path)", hang=True)
        self.assertEqual(run.rc, EXIT_UNREACHABLE)
        self.assertEqual(run.inference["endpoint"], "unreachable")
        self.assertEqual(run.inference["http_tokens"], "unknown")
        self.assert_no_hop_limit_claim(run, "hang")
        self.assertIn("endpoint-unreachable", run.findings())

    def test_a_hanging_token_put_keeps_what_the_gets_prove_and_claims_no_hop_limit(self) -> None:
        run = self.faulted("hang (token PUT)", hang=True, paths=[TOKEN])
        self.assertEqual(run.rc, EXIT_WARNING)
        self.assertEqual(run.inference["endpoint"], "enabled")
        self.assertEqual(run.inference["http_tokens"], "required")  # the tokenless GET's 401
        self.assert_no_hop_limit_claim(run, "hang token")
        self.assertEqual(run.verdict(None)["imdsv2"], "no")
        self.assertIn("host-no-token", run.findings())

    def test_a_reset_imds_is_unreachable_and_proves_no_hop_limit(self) -> None:
        run = self.faulted("reset (every path)", reset=True)
        self.assertEqual(run.rc, EXIT_UNREACHABLE)
        self.assertEqual(run.inference["endpoint"], "unreachable")
        self.assert_no_hop_limit_claim(run, "reset")

    def test_a_reset_token_put_is_no_token_and_no_hop_limit_claim(self) -> None:
        run = self.faulted("reset (token PUT)", reset=True, paths=[TOKEN])
        self.assertEqual(run.rc, EXIT_WARNING)
        self.assertEqual(run.inference["http_tokens"], "required")
        self.assert_no_hop_limit_claim(run, "reset token")
        self.assertIn("reset", run.verdict(None)["summary"])

    def test_a_trickling_imds_is_cut_by_the_request_timeout(self) -> None:
        run = self.faulted("trickle 200ms/byte (every path)", trickle_ms=200)
        self.assertEqual(run.rc, EXIT_UNREACHABLE)
        self.assertEqual(run.inference["endpoint"], "unreachable")
        self.assert_no_hop_limit_claim(run, "trickle")
        self.assertTrue(all(e["faults"] == ["trickle"] for e in self.logged()))

    def test_a_trickling_metadata_get_is_a_timeout_and_leaves_tokens_unknown(self) -> None:
        # instance-id is also the tokenless GET's path: it trickles too, so nothing tells
        # whether tokens are required.
        run = self.faulted("trickle 200ms/byte (GET)", trickle_ms=200,
                           paths=["/latest/meta-data/instance-id"])
        self.assertEqual(run.rc, EXIT_WARNING)
        self.assertEqual(run.inference["http_tokens"], "unknown")
        self.assertEqual(run.inference["hop_limit"]["exact"], 2)  # the PUT's own TTL
        self.assertEqual(run.verdict(None)["imdsv2"], "no")
        self.assertIn("timeout", run.verdict(None)["summary"])

    # ----- throttling -----

    def test_a_503_burst_is_throttled_and_claims_no_option(self) -> None:
        run = self.faulted("503 (every request)", status=503)
        self.assertEqual(run.rc, EXIT_WARNING)
        self.assertIn("throttled", run.findings())
        self.assertEqual(run.inference["http_tokens"], "unknown")
        self.assert_no_hop_limit_claim(run, "503")
        self.assertNotEqual(run.inference["endpoint"], "unreachable")

    def test_a_429_burst_on_half_the_requests_is_reported_exactly_when_it_happened(self) -> None:
        for attempt in range(3):
            self.lab.clear_requests()
            run = self.faulted(f"429 on 50% (run {attempt + 1})", status=429, share=0.5)
            got_429 = any(e["status"] == 429 for e in self.logged())
            self.assertEqual("throttled" in run.findings(), got_429, run.doc["findings"])
            self.assertEqual(run.rc, EXIT_WARNING if got_429 else EXIT_HEALTHY)
            # What it claims, it saw: a tokenless GET answered 401 means "required".
            v1 = [e for e in self.logged() if e["method"] == "GET" and not e["has_token"]]
            if any(e["status"] == 401 for e in v1):
                self.assertEqual(run.inference["http_tokens"], "required")
            else:
                self.assertEqual(run.inference["http_tokens"], "unknown")

    # ----- over the caps -----

    def test_an_oversized_token_body_is_no_token_and_no_crash(self) -> None:
        run = self.faulted("body 200 KB (token PUT)", oversized_bytes=200_000, paths=[TOKEN])
        self.assertEqual(run.rc, EXIT_WARNING)
        self.assertIn("larger than 4096 bytes", run.verdict(None)["summary"])
        self.assertEqual(run.inference["http_tokens"], "required")

    def test_an_oversized_metadata_body_is_capped_and_the_verdict_stands(self) -> None:
        run = self.faulted("body 2 MB (GETs)", oversized_bytes=2_000_000, paths=[META])
        self.assertEqual(run.rc, EXIT_HEALTHY, run.doc["findings"])
        self.assertEqual(run.verdict(self.c1)["imdsv2"], "yes")
        bodies = [o for t in run.doc["targets"] for o in t["observations"]
                  if o.get("body_truncated")]
        self.assertTrue(bodies, "no body was marked as cut at the cap")
        for o in bodies:
            self.assertLessEqual(len(o["body"]), 64 * 1024)

    def test_oversized_headers_fail_the_requests_with_the_cap_named(self) -> None:
        run = self.faulted("headers 20 KB (every path)", oversized_header_bytes=20_000)
        self.assertEqual(run.rc, EXIT_UNREACHABLE)
        self.assertIn("response headers larger than 16384 bytes", run.verdict(None)["summary"])
        self.assert_no_hop_limit_claim(run, "oversized headers")

    def test_oversized_headers_on_the_gets_only_keep_the_token_verdict(self) -> None:
        run = self.faulted("headers 20 KB (GETs)", oversized_header_bytes=20_000, paths=[META])
        self.assertEqual(run.rc, EXIT_WARNING)
        self.assertEqual(run.inference["hop_limit"]["exact"], 2)
        self.assertEqual(run.inference["http_tokens"], "unknown")  # the 401 never parsed

    # ----- not HTTP -----

    def test_malformed_answers_everywhere_are_an_endpoint_that_fails_requests(self) -> None:
        run = self.faulted("malformed (every path)", malformed=True)
        self.assertEqual(run.rc, EXIT_UNREACHABLE)
        self.assertEqual(run.inference["endpoint"], "unreachable")
        self.assertEqual(run.inference["http_tokens"], "unknown")
        self.assertEqual(run.verdict(None)["imdsv2"], "no")
        self.assertTrue(self.logged() and all(e["status"] == 0 for e in self.logged()))

    def test_a_malformed_answer_to_the_gets_only_leaves_tokens_unknown(self) -> None:
        run = self.faulted("malformed (GETs)", malformed=True, paths=[META])
        self.assertEqual(run.rc, EXIT_WARNING)
        self.assertEqual(run.inference["http_tokens"], "unknown")
        self.assertEqual(run.inference["hop_limit"]["exact"], 2)

    # ----- headers and tokens -----

    def test_a_missing_ttl_header_changes_nothing(self) -> None:
        run = self.faulted("no TTL header", no_ttl_header=True)
        self.assertEqual(run.rc, EXIT_HEALTHY, run.doc["findings"])
        self.assertEqual(run.verdict(self.c1)["imdsv2"], "yes")
        self.assertTrue(all("no_ttl_header" in e["faults"] for e in self.logged()))

    def test_a_token_expiring_between_put_and_get_is_a_failed_get_not_a_token_problem(self) -> None:
        run = self.faulted("token expires before GET", token_lifetime_ms=0, paths=[TOKEN])
        self.assertEqual(run.rc, EXIT_WARNING)
        host = run.verdict(None)
        self.assertEqual(host["imdsv2"], "no")
        self.assertIn("token received", host["summary"])
        self.assertIn("401", host["summary"])
        self.assertEqual(run.inference["http_tokens"], "required")
        self.assertEqual(run.inference["hop_limit"]["exact"], 2)  # the PUT arrived

    # ----- options switched during a probe -----

    def test_options_switched_mid_probe_give_each_claim_what_the_imds_answered_then(self) -> None:
        # The token PUT answers after 300 ms; required -> optional and hop limit 2 -> 1 are
        # pending for 0..600 ms, so some runs see the switch between requests of one probe.
        for pending in (0, 100, 200, 350, 600):
            self.lab.set_options(http_tokens="required", hop_limit=2, pending_ms=0)
            self.lab.set_faults(delay_ms=300, paths=[TOKEN])
            self.lab.clear_requests()
            self.lab.set_options(http_tokens="optional", hop_limit=1, pending_ms=pending)
            try:
                run = self.probe(f"options switched after {pending} ms")
            finally:
                self.lab.set_faults()
            log = self.logged()
            self.assertIn(run.rc, (EXIT_HEALTHY, EXIT_WARNING))
            host_put = [e for e in log if e["method"] == "PUT" and e["path"] == TOKEN]
            v1 = [e for e in log if e["method"] == "GET" and not e["has_token"]]
            saw = {e["status"] for e in v1}
            want_tokens = "optional" if 200 in saw else "required" if 401 in saw else "unknown"
            self.assertEqual(run.inference["http_tokens"], want_tokens, (pending, v1))
            hop = run.inference["hop_limit"]
            limits = {e["hop_limit"] for e in host_put}
            if hop["exact"] is not None:
                self.assertIn(hop["exact"], limits, (pending, hop, host_put))
            if len(limits) > 1:  # the PUTs straddled the switch: a finding, never a guess
                self.assertIn("hop-limit-bounds-contradict", run.findings())

    # ----- the IMDS vanishes and returns -----

    def test_a_vanished_imds_is_refused_and_its_return_is_healthy_again(self) -> None:
        self.lab.stop_emulator()
        run = self.probe("IMDS gone")
        self.assertEqual(run.rc, EXIT_UNREACHABLE)
        self.assertEqual(run.inference["endpoint"], "unreachable")
        self.assertIn("refused", json.dumps(run.inference))
        self.lab.start_emulator()
        self.lab.set_options(http_tokens="required", hop_limit=2)
        run = self.probe("IMDS back")
        self.assertEqual(run.rc, EXIT_HEALTHY, run.doc["findings"])

    def test_an_imds_vanishing_mid_probe_is_an_honest_failure_within_the_deadline(self) -> None:
        self.lab.set_faults(delay_ms=1500)
        argv = [PROBE, "--netns", self.c1.path, "--json=short", "--timeout", "2s",
                "--deadline", f"{DEADLINE_S}s"]
        t0 = time.monotonic()
        proc = self.lab.popen(self.lab.host, argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.4)
        self.lab.stop_emulator()
        out, err = proc.communicate(timeout=DEADLINE_S + 10)
        run = Run(subprocess.CompletedProcess(argv, proc.returncode, out, err),
                  time.monotonic() - t0)
        ROWS.append(("IMDS gone mid-probe", run.headline(), run.rc, run.wall))
        self.assertLessEqual(run.wall, DEADLINE_S + START_SLACK_S)
        self.assertEqual(run.rc, EXIT_UNREACHABLE, run.doc["findings"])
        self.assertEqual(run.inference["http_tokens"], "unknown")
        self.assert_no_hop_limit_claim(run, "vanished mid-probe")


def parse_events(lines: list[str]) -> list[str]:
    return [m.group(1) for line in lines if (m := EVENT_RE.search(line))]


class AgentUnderFaults(unittest.TestCase):
    """imds-agent in the lab's host namespace with one container, through every fault in
    turn: it never exits, backs off on throttling, reports an outage once and recovers."""

    INTERVAL_S = 1.0
    BACKOFF_MAX_S = 4.0

    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "required", "--hop-limit", "2"])
        try:
            cls.c1 = cls.lab.add_bridge_container("c1")
            cls.work = Path(tempfile.mkdtemp(prefix="imds-faults-"))
            cls.socket = str(cls.work / "agent.sock")
            conf = cls.work / "agent.conf"
            conf.write_text(
                f"interval = {cls.INTERVAL_S}s\njitter = 0\nv1-interval = 0\n"
                f"min-probe-gap = 1s\nbackoff-max = {cls.BACKOFF_MAX_S}s\nmin-event-gap = 1s\n"
                # Outages follow each other on purpose here: each one is reported, none is
                # taken for flapping (agent_confirm_test.py and the unit tests cover that).
                "flap-changes = 0\n"
                "request-timeout = 1s\nproc-scan = no\n"
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

    def log_since(self, mark: int) -> list[str]:
        with self.lock:
            return list(self.lines[mark:])

    def mark(self) -> int:
        with self.lock:
            return len(self.lines)

    def status(self) -> dict[str, Any]:
        conn = UnixHTTPConnection(self.socket, timeout=15)
        try:
            conn.request("GET", "/v1/status")
            r = conn.getresponse()
            body = r.read()
            self.assertEqual(r.status, 200, body)
            return json.loads(body)
        finally:
            conn.close()

    def wait_for(self, what: str, pred: Callable[[], Any], timeout: float = 25) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assertIsNone(self.agent.poll(), f"imds-agent exited while waiting for {what}")
            try:
                v = pred()
            except (OSError, ValueError):
                v = None  # the socket is busy answering a probe: ask again
            if v:
                return v
            time.sleep(0.1)
        with self.lock:
            tail = "\n".join(self.lines[-30:])
        self.fail(f"timed out after {timeout}s waiting for {what}; agent log:\n{tail}")

    def cycles(self) -> int:
        return self.status()["agent"]["cycles"]

    def wait_cycles(self, n: int) -> None:
        target = self.cycles() + n
        self.wait_for(f"{n} more cycles", lambda: self.cycles() >= target, timeout=30)

    def healthy(self) -> bool:
        a = self.status()["agent"]
        names = {c["name"]: c for c in a["containers"]}
        return a["consecutive_errors"] == 0 and names.get("c1", {}).get("imdsv2") == "yes"

    def test_the_agent_survives_every_fault_reports_outages_once_and_recovers(self) -> None:
        self.wait_for("the first healthy verdict", self.healthy)
        outages = [
            ("hang", {"hang": True}),
            ("reset", {"reset": True}),
            ("trickle", {"trickle_ms": 200}),
            ("malformed", {"malformed": True}),
            ("oversized headers", {"oversized_header_bytes": 20_000}),
        ]
        rows = []
        for name, faults in outages:
            mark = self.mark()
            t0 = time.monotonic()
            self.lab.set_faults(**faults)
            self.wait_for(f"{name}: imds-unreachable",
                          lambda: "imds-unreachable" in parse_events(self.log_since(mark)))
            self.wait_cycles(3)  # it keeps probing, and keeps quiet about it
            self.lab.set_faults()
            self.wait_for(f"{name}: recovery", self.healthy)
            self.wait_for(f"{name}: imds-back",
                          lambda: "imds-back" in parse_events(self.log_since(mark)))
            took = time.monotonic() - t0
            events = parse_events(self.log_since(mark))
            self.assertEqual(events.count("imds-unreachable"), 1, (name, events))
            self.assertEqual(events.count("imds-back"), 1, (name, events))
            # An outage is not an option change, and no container "lost" its token.
            self.assertNotIn("option-changed", events, name)
            self.assertNotIn("container-imdsv2-lost", events, name)
            rows.append((name, events, took))

        # The host's throttling: backoff grows past the interval, nothing is reported.
        mark = self.mark()
        t0 = time.monotonic()
        self.lab.set_faults(status=503)
        def backed_off() -> bool:
            a = self.status()["agent"]
            return a["consecutive_errors"] >= 2 and a["backoff_seconds"] > self.INTERVAL_S
        self.wait_for("backoff under 503", backed_off)
        a = self.status()["agent"]
        self.assertIn("throttled", a["last_error"] or "")
        self.assertLessEqual(a["backoff_seconds"], self.BACKOFF_MAX_S)
        # Backing off shows in the emulator's log: the gaps between host PUTs grow.
        self.lab.clear_requests()
        time.sleep(2 * self.BACKOFF_MAX_S + 1)
        puts = [e["time"] for e in self.lab.requests() if e["method"] == "PUT"]
        self.lab.set_faults()
        self.wait_for("recovery after 503", self.healthy)
        events = parse_events(self.log_since(mark))
        self.assertEqual(events, [], "throttled answers were reported as events")
        # One cycle sends the host's and the container's PUT together: count cycles.
        cycles = len({round(t) for t in puts})
        self.assertLessEqual(cycles, 4, f"under 503 the agent probed {cycles} times in "
                             f"{2 * self.BACKOFF_MAX_S + 1:.0f}s: not backing off")
        rows.append(("503 (host)", events, time.monotonic() - t0))

        # The IMDS vanishes and returns.
        mark = self.mark()
        t0 = time.monotonic()
        self.lab.stop_emulator()
        self.wait_for("imds-unreachable (gone)",
                      lambda: "imds-unreachable" in parse_events(self.log_since(mark)))
        self.wait_cycles(2)
        self.lab.start_emulator()
        self.lab.set_options(http_tokens="required", hop_limit=2)
        self.wait_for("recovery after the return", self.healthy)
        self.wait_for("imds-back after the return",
                      lambda: "imds-back" in parse_events(self.log_since(mark)))
        events = parse_events(self.log_since(mark))
        self.assertEqual(events.count("imds-unreachable"), 1, events)
        self.assertEqual(events.count("imds-back"), 1, events)
        rows.append(("vanished, returned", events, time.monotonic() - t0))
        self.assertIsNone(self.agent.poll())
        with self.lock:
            text = "\n".join(self.lines)
        self.assertIsNone(TOKEN_LIKE.search(text), "something token-like in the agent's output")
        print("\nagent: fault, events, seconds to recovery", file=sys.stderr)
        for name, ev, took in rows:
            print(f"  {name:<20} {','.join(ev) or '-':<40} {took:5.1f}s", file=sys.stderr)


if __name__ == "__main__":
    skip_unless_lab_possible()
    try:
        program = unittest.main(verbosity=2, exit=False)
    finally:
        print_table()
        print(f"faults suite wall time: {time.monotonic() - T_START:.1f}s", file=sys.stderr)
    sys.exit(0 if program.result.wasSuccessful() else 1)
