#!/usr/bin/python3
"""`ec2-metadata` from amazon-ec2-utils (IMDSv2 only) against the emulator. It hardcodes
169.254.169.254, so it only ever runs inside the lab's namespaces."""

from __future__ import annotations

import subprocess
import time

import fidelity
from fidelity import INSTANCE_ID, LabTestCase

# Its token PUT has no timeout: where the hop limit drops the answer it would wait for
# TCP to give up (many minutes), so the test stops waiting after this long.
PATIENCE_SECONDS = 3


class Ec2MetadataTest(LabTestCase):
    ipv6 = False

    @classmethod
    def build_topology(cls) -> None:
        cls.container = cls.lab.add_bridge_container("c1")

    def ec2_metadata(self, ns, *args: str) -> subprocess.CompletedProcess[str] | None:
        """Its result, or None when it was still waiting after PATIENCE_SECONDS."""
        try:
            return self.lab.exec(ns, ["ec2-metadata", *args], timeout=PATIENCE_SECONDS)
        except subprocess.TimeoutExpired:
            return None

    def test_it_gets_the_instance_id_from_the_host_with_a_token(self):
        for tokens in ("optional", "required"):
            with self.subTest(http_tokens=tokens):
                self.lab.set_options(http_tokens=tokens)
                self.lab.clear_requests()
                r = self.ec2_metadata(self.lab.host, "-i")
                self.assertIsNotNone(r, "ec2-metadata hung on the host")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), f"instance-id: {INSTANCE_ID}")
                log = self.lab.requests()
                self.assertEqual([(e["method"], e["path"], e["has_token"]) for e in log],
                                 [("PUT", "/latest/api/token", False),
                                  ("GET", "/latest/meta-data/instance-id", True)])

    def test_it_gets_nothing_from_a_bridge_container_under_hop_limit_1(self):
        started = time.monotonic()
        r = self.ec2_metadata(self.container, "-i")
        self.assertTrue(r is None or INSTANCE_ID not in r.stdout, r)
        self.assertGreaterEqual(time.monotonic() - started, PATIENCE_SECONDS - 0.5)
        # It asked for a token and never got as far as a GET.
        log = self.lab.requests()
        self.assertEqual([(e["method"], e["status"]) for e in log], [("PUT", 200)])

    def test_it_reports_that_it_has_no_token_when_the_dropped_put_is_reset(self):
        self.lab.set_faults(after_dropped_put="reset")
        r = self.ec2_metadata(self.container, "-i")
        self.assertIsNotNone(r, "a reset should end the wait at once")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Could not get IMDSv2 token", r.stdout + r.stderr)
        self.assertNotIn(INSTANCE_ID, r.stdout)

    def test_it_works_from_a_bridge_container_under_hop_limit_2(self):
        self.lab.set_options(hop_limit=2)
        r = self.ec2_metadata(self.container, "-i")
        self.assertIsNotNone(r)
        self.assertEqual(r.stdout.strip(), f"instance-id: {INSTANCE_ID}")

    def test_it_reports_a_disabled_endpoint(self):
        self.lab.set_options(http_endpoint="disabled")
        r = self.ec2_metadata(self.lab.host, "-i")
        self.assertIsNotNone(r)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Could not get IMDSv2 token", r.stdout + r.stderr)


if __name__ == "__main__":
    fidelity.main(tools=("curl", "ec2-metadata"))
