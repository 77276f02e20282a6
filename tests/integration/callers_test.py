#!/usr/bin/python3
"""`imds-probe callers --watch` against real clients in the lab, hop limit 1, tokens optional:

- the host: curl's IMDSv2 flow (token PUT, then a GET with the token), IPv4 and IPv6;
- container `legacy`: curl's tokenless GETs (deliberate IMDSv1);
- containers `boto` (IPv4) and `boto6` (IPv6): botocore's region lookup, whose token PUT
  answer reaches the host with TTL 1 and is never forwarded, so it falls back to IMDSv1:
  reported as a fallback with the dropped PUT, not as a deliberate IMDSv1 caller;
- container `jssdk`: the AWS SDK for JavaScript v3's IMDS client
  (`@aws-sdk/ec2-metadata-service`, installed from npm into the build directory by this
  test), whose token PUT times out behind the hop limit: a fallback too; it sends no
  User-Agent, so no SDK is named (never guessed);
- container `quiet`: sends nothing and must not appear.

Every exchange must be attributed to the namespace that sent it, with its SDK; no token any
client obtained appears in the watch's output.

imds-agent runs beside it with its own caller watch (watch-callers = yes, the default): its
record (GET /v1/callers, read by `imds-probe callers`), its journal events (one per new IMDSv1
caller and per caller with lost token PUTs) and its metrics must say the same, without its
own requests.

Usage: callers_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (IMDS_V4, IMDS_V6, AgentBeside, Lab, TOKEN_LIKE,  # noqa: E402
                 build_dir_from_argv, metric_value, skip_unless_lab_possible, start_agent,
                 unix_http, wait_packet_sockets)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
PROBE = str(BUILD_DIR / "probe" / "imds-probe")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")
BOTOCORE_CLIENT = str(HERE.parent / "fidelity" / "botocore_client.py")
WATCH_SECONDS = 14


def install_js_sdk() -> Path:
    """@aws-sdk/ec2-metadata-service from the npm registry, once per build directory; its
    prefix. Needs npm and the registry: a failure fails the test (CI must run it)."""
    prefix = BUILD_DIR / "js-sdk"
    if (prefix / "node_modules" / "@aws-sdk" / "ec2-metadata-service").is_dir():
        return prefix
    npm = shutil.which("npm")
    if npm is None:
        raise AssertionError("npm is not installed (packaging/install-deps --release-tools)")
    r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        "@aws-sdk/ec2-metadata-service@3"], capture_output=True, text=True,
                       timeout=300, check=False)
    if r.returncode != 0:
        raise AssertionError(f"npm install @aws-sdk/ec2-metadata-service: {r.stderr[-800:]}")
    return prefix

class CallersWatch(AgentBeside):
    @classmethod
    def setUpClass(cls) -> None:
        skip_unless_lab_possible(["curl"])
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "optional", "--hop-limit", "1"],
                      ipv6=True)
        cls.work = Path(tempfile.mkdtemp(prefix="imds-callers-"))
        cls.agent = None
        try:
            cls.js_prefix = install_js_sdk()
            for label in ("legacy", "boto", "boto6", "jssdk", "quiet"):
                cls.lab.add_bridge_container(label)
            cls.tokens: list[str] = []
            cls.start_agent()
            cls.run_watch()
        except BaseException:
            cls.close()
            raise

    @classmethod
    def start_agent(cls) -> None:
        """The agent probes once (interval 1h, no IMDSv1 GETs), before the watch starts, so
        that the probe's own watch sees only the clients' traffic; its caller watch runs on."""
        cls.socket = str(cls.work / "agent.sock")
        conf = cls.work / "agent.conf"
        conf.write_text(
            "interval = 1h\nv1-interval = never\nrequest-timeout = 1s\nproc-scan = no\n"
            f"netns-dir = {cls.lab.netns_dir}\nsocket = {cls.socket}\n")
        cls.agent = start_agent(cls.lab, AGENT, conf, cls.work / "conf.d")
        # Its re-probes of the containers without IMDSv2 (confirm = 2) are over too.
        cls.wait_status(lambda a: a["cycles"] >= 1 and not a["probing"] and
                        not a["suspected"] and a["callers_watch"]["state"] == "running")
        time.sleep(3.5)  # the last answers of its probe are over for any watch

    @classmethod
    def curl(cls, ns: Any, *args: str) -> str:
        r = cls.lab.exec(ns, ["curl", "-sS", "--max-time", "3", *args], timeout=10)
        assert r.returncode == 0, f"curl {args}: {r.stderr}"
        return r.stdout

    @classmethod
    def run_watch(cls) -> None:
        lab = cls.lab
        watch = lab.popen(lab.host, [PROBE, "callers", "--watch", f"{WATCH_SECONDS}s", "--json",
                                     "--netns-dir", lab.netns_dir, "--no-proc-scan"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_packet_sockets(watch, 2)  # IPv4 and IPv6: it captures from here on
        for base in (f"http://{IMDS_V4}", f"http://[{IMDS_V6}]"):
            token = cls.curl(lab.host, "-X", "PUT", "-H",
                             "X-aws-ec2-metadata-token-ttl-seconds: 60", f"{base}/latest/api/token")
            cls.tokens.append(token.strip())
            cls.curl(lab.host, "-H", f"X-aws-ec2-metadata-token: {token.strip()}",
                     f"{base}/latest/meta-data/instance-id")
        legacy = next(ns for ns in lab.containers if ns.label == "legacy")
        for _ in range(3):
            cls.curl(legacy, f"http://{IMDS_V4}/latest/meta-data/ami-id")
        boto = next(ns for ns in lab.containers if ns.label == "boto")
        boto6 = next(ns for ns in lab.containers if ns.label == "boto6")
        for ns, mode in ((boto, "ipv4"), (boto6, "ipv6")):
            r = lab.exec(ns, ["/usr/bin/python3", BOTOCORE_CLIENT, "--what", "region",
                              "--endpoint-mode", mode, "--session-user-agent"], timeout=20)
            assert r.returncode == 0, r.stderr
            cls.boto_out = getattr(cls, "boto_out", []) + [json.loads(r.stdout)]
        jssdk = next(ns for ns in lab.containers if ns.label == "jssdk")
        r = lab.exec(jssdk, ["node", str(HERE / "js_sdk_client.mjs"), str(cls.js_prefix)],
                     timeout=30)
        cls.js_out = r.stdout
        out, err = watch.communicate(timeout=WATCH_SECONDS + 30)
        cls.watch_rc, cls.watch_out, cls.watch_err = watch.returncode, out, err
        cls.report = json.loads(out) if watch.returncode == 0 else {}

    def caller(self, where: str) -> dict[str, Any]:
        found = [c for c in self.report["callers"] if c["where"] == where]
        self.assertEqual(len(found), 1, f"{where}: {json.dumps(self.report, indent=1)}")
        return found[0]

    def test_the_watch_ran(self) -> None:
        self.assertEqual(self.watch_rc, 0, self.watch_err)
        self.assertGreaterEqual(self.report["namespaces_mapped"], 4, self.report)

    def test_the_host_uses_imdsv2_on_both_families(self) -> None:
        host = self.caller("host")
        self.assertEqual(host["sdk"]["product"], "curl")
        self.assertEqual(host["token_puts"], 2, host)
        self.assertEqual(host["token_puts_unanswered"], 0, host)
        self.assertEqual(host["imdsv2_calls"], 2, host)
        self.assertEqual(host["imdsv1_calls"] + host["imdsv1_fallback_calls"], 0, host)

    def test_a_deliberate_imdsv1_caller_is_named_with_its_container(self) -> None:
        legacy = self.caller("legacy")
        self.assertEqual(legacy["sdk"]["product"], "curl")
        self.assertEqual(legacy["imdsv1_calls"], 3, legacy)
        self.assertEqual(legacy["imdsv1_answered_200"], 3, legacy)
        self.assertEqual(legacy["imdsv1_fallback_calls"], 0, legacy)
        self.assertEqual(legacy["token_puts"], 0, legacy)
        self.assertEqual(legacy["categories"], {"meta-data": 3}, legacy)

    def test_botocore_behind_the_hop_limit_is_a_fallback_not_a_deliberate_caller(self) -> None:
        for where in ("boto", "boto6"):
            with self.subTest(where=where):
                c = self.caller(where)
                self.assertEqual(c["sdk"]["product"], "botocore", c)
                self.assertTrue(c["sdk"]["version"].startswith("1."), c)
                self.assertGreaterEqual(c["token_puts"], 1, c)
                self.assertEqual(c["token_puts_unanswered"], c["token_puts"], c)
                self.assertEqual(c["token_puts_dropped_here"], c["token_puts"], c)
                self.assertEqual(c["dropped_put_ttl"], 1, c)
                self.assertGreaterEqual(c["imdsv1_fallback_calls"], 1, c)
                self.assertEqual(c["imdsv1_calls"], 0, c)
        # botocore did get its region, by IMDSv1.
        self.assertTrue(all(o["value"] for o in self.boto_out), self.boto_out)

    def test_the_js_sdk_behind_the_hop_limit_is_a_fallback_without_a_guessed_sdk(self) -> None:
        self.assertEqual(json.loads(self.js_out), {"instance_id": "i-0123456789abcdef0"},
                         "the JS SDK got its answer, by IMDSv1")
        c = self.caller("jssdk")
        self.assertIsNone(c["sdk"], "it sends no User-Agent: no SDK is named")
        self.assertEqual((c["token_puts"], c["token_puts_unanswered"],
                          c["token_puts_dropped_here"], c["dropped_put_ttl"]), (1, 1, 1, 1), c)
        self.assertEqual((c["imdsv1_fallback_calls"], c["imdsv1_calls"]), (1, 0), c)
        self.assertIsNotNone(c["process"], "its socket waited a second for the PUT's answer")
        self.assertEqual(c["process"]["comm"], "node", c)

    def test_the_process_behind_a_connection_is_named_when_it_is_still_there(self) -> None:
        # botocore waits a second for its token PUT: its socket is there to be looked up.
        for where in ("boto", "boto6"):
            with self.subTest(where=where):
                process = self.caller(where)["process"]
                self.assertIsNotNone(process, self.caller(where))
                self.assertIn(process["comm"], ("python3", "python3.11"), process)
                self.assertGreater(process["pid"], 1)
        found = self.report["processes"]
        self.assertGreaterEqual(found["found"], 2, found)
        self.assertEqual(found["not_looked_up"], 0, found)
        # A process that is gone is unknown, never guessed: every caller has one or null.
        for c in self.report["callers"]:
            self.assertTrue(c["process"] is None or c["process"]["pid"] > 0, c)

    def test_nothing_else_is_reported(self) -> None:
        self.assertEqual(sorted(c["where"] for c in self.report["callers"]),
                         ["boto", "boto6", "host", "jssdk", "legacy"], self.report)
        self.assertEqual(self.report["packets"]["malformed"], 0, self.report)

    def test_a_signal_ends_a_long_watch_with_the_text_report_of_what_was_seen(self) -> None:
        lab = self.lab
        watch = lab.popen(lab.host, [PROBE, "callers", "--watch", "10m", "--netns-dir",
                                     lab.netns_dir, "--no-proc-scan"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_packet_sockets(watch, 2)
            legacy = next(ns for ns in lab.containers if ns.label == "legacy")
            self.curl(legacy, f"http://{IMDS_V4}/latest/meta-data/ami-id")
            started = time.monotonic()
            watch.send_signal(signal.SIGINT)
            out, err = watch.communicate(timeout=15)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
        self.assertEqual(watch.returncode, 0, err)
        # the request still pending gets its answer time (a few seconds), then the report
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn("stopped by a signal", err)
        self.assertRegex(out, r"^Watched the IMDS traffic for [0-9.]+ s: 1 request from 1 caller ")
        rows = [line.split() for line in out.splitlines() if line.startswith("legacy")]
        self.assertEqual(len(rows), 1, out)
        # CALLER CONTAINER SDK(product version) IMDSv1(count status) FALLBACK IMDSv2 PUTS
        self.assertEqual([rows[0][2], *rows[0][4:9]], ["curl", "1", "200", "0", "0", "0"], out)

    # ----- the agent's record of the same traffic -----

    def agent_record(self, pred: Any, timeout: float = 15) -> dict[str, Any]:
        """`imds-probe callers --json` against the agent, until pred(record) holds."""
        record = self.callers_record(PROBE, pred, timeout)
        if not pred(record):
            self.fail(f"the agent's record never got there: {json.dumps(record, indent=1)}")
        return record

    def agent_events(self, name: str, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            with self.agent.lock:
                lines = [ln for ln in self.agent.lines if f"IMDS_EVENT={name}" in ln]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.5)

    def test_the_agent_records_the_same_callers_and_leaves_its_own_requests_out(self) -> None:
        def caller(record: dict[str, Any], where: str) -> dict[str, Any] | None:
            return next((c for c in record["callers"] if c["where"] == where), None)
        record = self.agent_record(
            lambda r: (caller(r, "legacy") or {}).get("imdsv1_calls", 0) >= 3 and
            all((caller(r, w) or {}).get("imdsv1_fallback_calls", 0) >= 1 for w in ("boto", "boto6")))
        self.assertEqual(record["watch"]["state"], "running")
        self.assertEqual(caller(record, "legacy")["sdk"]["product"], "curl")
        for where in ("boto", "boto6"):
            c = caller(record, where)
            self.assertEqual(c["dropped_put_ttl"], 1, c)
            self.assertEqual(c["imdsv1_calls"], 0, c)
        for c in record["callers"]:
            self.assertNotEqual((c["sdk"] or {}).get("product"), "imds-agent", c)
        self.assertIsNone(caller(record, "quiet"))
        # The text table of the same record.
        r = self.lab.exec(self.lab.host, [PROBE, "callers", "--socket", self.socket], timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("legacy (curl) calls IMDSv1 on purpose", r.stdout)

    def test_the_agent_sends_one_event_per_new_caller_and_kind(self) -> None:
        v1 = self.agent_events("imdsv1-caller")
        self.assertEqual(len(v1), 1, v1)
        self.assertIn("legacy (curl", v1[0])
        lost = self.agent_events("token-puts-lost")
        lost = [ln for ln in lost if "boto" in ln]
        self.assertEqual(len(lost), 2, lost)
        self.assertTrue(all("IMDS_PUT_TTL=1" in ln for ln in lost), lost)

    def test_the_agent_counts_callers_in_its_metrics(self) -> None:
        self.agent_record(lambda r: any(c["where"] == "legacy" for c in r["callers"]))
        code, _, text = unix_http(self.socket, "GET", "/metrics")
        self.assertEqual(code, 200)
        self.assertIn("imds_callers_watch_up 1\n", text)
        self.assertGreaterEqual(metric_value(text, "imds_observed_requests_total", caller="legacy",
                                             sdk="curl", kind="imdsv1") or 0, 3, text)
        self.assertGreaterEqual(metric_value(text, "imds_observed_token_puts_dropped_here_total",
                                             caller="boto", sdk="botocore") or 0, 1, text)

    def test_no_token_appears_in_the_output(self) -> None:
        self.assertEqual(len(self.tokens), 2)
        text = self.watch_out + self.watch_err
        for token in self.tokens:
            self.assertTrue(token and token not in text)
        self.assertIsNone(TOKEN_LIKE.search(text))
        with self.agent.lock:
            agent_log = "\n".join(self.agent.lines)
        self.assertIsNone(TOKEN_LIKE.search(agent_log))
        self.assertEqual(self.lab.forbidden_requests(), [])


class PassiveEvidence(AgentBeside):
    """A workload's tokenless GETs, answered by the IMDS, save the agent's own (each counted in
    MetadataNoToken) while they agree with its last measurement; when they contradict it, the
    agent measures again at once instead of waiting for v1-interval. Tests are numbered: the
    second changes the options."""

    @classmethod
    def setUpClass(cls) -> None:
        skip_unless_lab_possible(["curl"])
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "optional", "--hop-limit", "2"],
                      ipv6=False)
        cls.work = Path(tempfile.mkdtemp(prefix="imds-evidence-"))
        cls.agent = None
        try:
            cls.legacy = cls.lab.add_bridge_container("legacy", families=("v4",))
            cls.socket = str(cls.work / "agent.sock")
            cls.conf = cls.work / "agent.conf"
            cls.write_conf("3s")
            cls.agent = start_agent(cls.lab, AGENT, cls.conf, cls.work / "conf.d")
            cls.wait_status(lambda a: a["cycles"] >= 1 and
                            a["callers_watch"]["state"] == "running" and
                            a["http_tokens_evidence"]["measured"] is not None)
        except BaseException:
            cls.close()
            raise

    @classmethod
    def write_conf(cls, v1_interval: str) -> None:
        cls.conf.write_text(
            f"interval = 1s\njitter = 0\nv1-interval = {v1_interval}\nmin-probe-gap = 0\n"
            "request-timeout = 1s\nproc-scan = no\nipv6 = no\n"
            f"netns-dir = {cls.lab.netns_dir}\nsocket = {cls.socket}\nlog-level = debug\n")

    def own_tokenless_gets(self) -> int:
        """The agent's tokenless GETs (its probe path; the workload asks for ami-id)."""
        return sum(1 for r in self.lab.all_requests()
                   if r["method"] == "GET" and not r["has_token"] and
                   r["path"] == "/latest/meta-data/instance-id")

    def legacy_get(self) -> None:
        r = self.lab.exec(self.legacy, ["curl", "-sS", "--max-time", "3",
                                        f"http://{IMDS_V4}/latest/meta-data/ami-id"], timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_1_agreeing_evidence_saves_the_agents_own_tokenless_gets(self) -> None:
        before = self.own_tokenless_gets()
        skipped_before = self.status()["http_tokens_evidence"]["v1_gets_skipped_total"]
        start = time.monotonic()
        while time.monotonic() - start < 12:  # v1-interval 3 s: four of the agent's own due
            self.legacy_get()
            time.sleep(0.5)
        own = self.own_tokenless_gets() - before
        agent = self.status()
        evidence = agent["http_tokens_evidence"]
        print(f"12 s, v1-interval 3s: the agent sent {own} tokenless GETs of its own, skipped "
              f"{evidence['v1_gets_skipped_total'] - skipped_before}")
        self.assertLessEqual(own, 1, evidence)
        self.assertGreaterEqual(evidence["v1_gets_skipped_total"] - skipped_before, 2, evidence)
        self.assertEqual(evidence["last_skip_rested_on"]["caller"], "legacy", evidence)
        self.assertEqual(evidence["last_skip_rested_on"]["status"], 200, evidence)
        self.assertEqual(agent["options"]["http_tokens"], "optional")

    def test_2_contradicting_evidence_is_measured_at_once_not_believed(self) -> None:
        # The agent's own tokenless GETs every hour only: without the evidence it would not
        # look at HttpTokens again for an hour.
        self.write_conf("1h")
        self.agent.proc.send_signal(signal.SIGHUP)
        self.wait_status(lambda a: a["v1_interval"] == "1h")
        time.sleep(2)
        before = self.own_tokenless_gets()
        self.lab.set_options(http_tokens="required")
        changed_at = time.monotonic()
        self.legacy_get()  # 401 now
        agent = self.wait_status(lambda a: a["options"]["http_tokens"] == "required", timeout=20)
        took = time.monotonic() - changed_at
        print(f"HttpTokens=required seen {took:.1f} s after a workload was refused")
        self.assertGreaterEqual(self.own_tokenless_gets() - before, 1,
                                "the verdict must come from the agent's own measurement")
        self.assertLess(took, 15)
        with self.agent.lock:
            log = "\n".join(self.agent.lines)
        self.assertIn("measuring it again now", log)
        self.assertRegex(log, r"IMDS option HttpTokens changed from optional to required.*"
                              r"IMDS_EVENT=option-changed")
        self.assertFalse(agent["http_tokens_evidence"]["passive_contradicts"], agent)


if __name__ == "__main__":
    unittest.main(verbosity=2)
