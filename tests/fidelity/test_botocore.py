#!/usr/bin/python3
"""botocore (Debian's python3-botocore) against the emulator: with optional tokens and
hop limit 1 a container gets metadata only after its token PUT times out (~1 s) and it
falls back to IMDSv1; with required tokens it gets nothing; the host gets it at once.
Prints the measured fallback times."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import fidelity
from fidelity import INSTANCE_ID, LabTestCase

CLIENT = str(Path(__file__).resolve().parent / "botocore_client.py")
FAMILIES = ("ipv4", "ipv6")


class BotocoreTest(LabTestCase):
    @classmethod
    def build_topology(cls) -> None:
        cls.container = cls.lab.add_bridge_container("c1")

    def botocore(self, ns, what: str, family: str) -> dict[str, Any]:
        r = self.lab.exec(ns, ["/usr/bin/python3", CLIENT, "--what", what,
                               "--endpoint-mode", family], timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def record(self, what: str, result: dict[str, Any]) -> None:
        print(f"\nMEASURED botocore {what}: {result['seconds']:.3f} s ({result})", flush=True)

    def flow(self) -> list[tuple[str, bool, int]]:
        return [(e["method"], e["has_token"], e["status"]) for e in self.lab.requests()]

    def test_optional_tokens_hop_limit_1_a_container_gets_the_instance_id_after_a_v1_fallback(self):
        for family in FAMILIES:
            with self.subTest(family=family):
                self.lab.clear_requests()
                res = self.botocore(self.container, "instance-id", family)
                self.record(f"instance-id fallback from a 1-hop container ({family})", res)
                self.assertEqual(res["value"], INSTANCE_ID, res)
                self.assertFalse(res["got_token"], res)
                # The price of the fallback: its 1 s token timeout, on every lookup.
                self.assertGreaterEqual(res["seconds"], 0.9, res)
                self.assertLess(res["seconds"], 3.0, res)
                # The PUT was answered (and dropped by the kernel), then a tokenless GET.
                self.assertEqual(self.flow(), [("PUT", False, 200), ("GET", False, 200)])

    def test_optional_tokens_hop_limit_1_a_container_gets_the_region_after_a_v1_fallback(self):
        res = self.botocore(self.container, "region", "ipv4")
        self.record("region fallback from a 1-hop container (ipv4)", res)
        self.assertEqual(res["value"], "us-east-1", res)
        self.assertGreaterEqual(res["seconds"], 0.9, res)
        self.assertEqual(self.flow(), [("PUT", False, 200), ("GET", False, 200)])

    def test_required_tokens_hop_limit_1_a_container_gets_nothing(self):
        self.lab.set_options(http_tokens="required")
        for family in FAMILIES:
            with self.subTest(family=family):
                self.lab.clear_requests()
                res = self.botocore(self.container, "instance-id", family)
                self.record(f"instance-id under required from a 1-hop container ({family})",
                            res)
                self.assertIsNone(res["value"], res)
                self.assertEqual(self.flow(), [("PUT", False, 200), ("GET", False, 401)])
        res = self.botocore(self.container, "region", "ipv4")
        self.assertIsNone(res["value"], res)

    def test_the_host_gets_the_instance_id_at_once_with_a_token(self):
        for tokens in ("optional", "required"):
            with self.subTest(http_tokens=tokens):
                self.lab.set_options(http_tokens=tokens)
                self.lab.clear_requests()
                res = self.botocore(self.lab.host, "instance-id", "ipv4")
                self.record(f"instance-id from the host ({tokens})", res)
                self.assertEqual(res["value"], INSTANCE_ID, res)
                self.assertTrue(res["got_token"], res)
                self.assertLess(res["seconds"], 0.5, res)
                self.assertEqual(self.flow(), [("PUT", False, 200), ("GET", True, 200)])

    def test_hop_limit_2_spares_a_container_the_fallback(self):
        self.lab.set_options(hop_limit=2, http_tokens="required")
        res = self.botocore(self.container, "instance-id", "ipv6")
        self.record("instance-id from a 1-hop container with hop limit 2 (ipv6)", res)
        self.assertEqual(res["value"], INSTANCE_ID, res)
        self.assertTrue(res["got_token"], res)
        self.assertLess(res["seconds"], 0.5, res)


if __name__ == "__main__":
    if importlib.util.find_spec("botocore") is None:
        print("SKIP: python3-botocore is not installed", file=sys.stderr)
        sys.exit(77)
    fidelity.main(tools=("curl",))
