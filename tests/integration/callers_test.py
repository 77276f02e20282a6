#!/usr/bin/python3
"""`imds-probe callers --watch` against real clients in the lab, hop limit 1, tokens optional:

- the host: curl's IMDSv2 flow (token PUT, then a GET with the token), IPv4 and IPv6;
- container `legacy`: curl's tokenless GETs (deliberate IMDSv1);
- containers `boto` (IPv4) and `boto6` (IPv6): botocore's region lookup, whose token PUT
  answer reaches the host with TTL 1 and is never forwarded, so it falls back to IMDSv1:
  reported as a fallback with the dropped PUT, not as a deliberate IMDSv1 caller;
- container `quiet`: sends nothing and must not appear.

Every exchange must be attributed to the namespace that sent it, with its SDK; no token any
client obtained appears in the watch's output.

Usage: callers_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (IMDS_V4, IMDS_V6, Lab, TOKEN_LIKE, build_dir_from_argv,  # noqa: E402
                 skip_unless_lab_possible)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
PROBE = str(BUILD_DIR / "probe" / "imds-probe")
BOTOCORE_CLIENT = str(HERE.parent / "fidelity" / "botocore_client.py")
WATCH_SECONDS = 14


class CallersWatch(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        skip_unless_lab_possible(["curl"])
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "optional", "--hop-limit", "1"],
                      ipv6=True)
        try:
            for label in ("legacy", "boto", "boto6", "quiet"):
                cls.lab.add_bridge_container(label)
            cls.tokens: list[str] = []
            cls.run_watch()
        except BaseException:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.lab.close()

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
        time.sleep(1.5)  # the sockets are open well before this
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

    def test_nothing_else_is_reported(self) -> None:
        self.assertEqual(sorted(c["where"] for c in self.report["callers"]),
                         ["boto", "boto6", "host", "legacy"], self.report)
        self.assertEqual(self.report["packets"]["malformed"], 0, self.report)

    def test_a_signal_ends_a_long_watch_with_the_text_report_of_what_was_seen(self) -> None:
        lab = self.lab
        watch = lab.popen(lab.host, [PROBE, "callers", "--watch", "10m", "--netns-dir",
                                     lab.netns_dir, "--no-proc-scan"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(1.5)
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

    def test_no_token_appears_in_the_output(self) -> None:
        self.assertEqual(len(self.tokens), 2)
        text = self.watch_out + self.watch_err
        for token in self.tokens:
            self.assertTrue(token and token not in text)
        self.assertIsNone(TOKEN_LIKE.search(text))
        self.assertEqual(self.lab.forbidden_requests(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
