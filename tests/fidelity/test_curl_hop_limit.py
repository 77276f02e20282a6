#!/usr/bin/python3
"""curl over real forwarding hops: the hop limit drops PUT responses in the kernel, the
blackholed and firewalled containers fail as on EC2, and injected faults look to curl as
IMDS.md says. IPv4 and IPv6 for every hop-limit case."""

from __future__ import annotations

import fidelity
from fidelity import LabTestCase, get, put_token

CURL_TIMEOUT = 28
CURL_COULDNT_CONNECT = 7
CURL_RECV_ERROR = 56
FAMILIES = ("ipv4", "ipv6")
PATH = "/latest/meta-data/instance-id"


class HopLimitTest(LabTestCase):
    @classmethod
    def build_topology(cls) -> None:
        cls.c1 = cls.lab.add_bridge_container("c1")
        cls.dind = cls.lab.add_dind_container("dind")
        cls.blackholed = cls.lab.add_blackholed_container("awsvpc")
        cls.firewalled = cls.lab.add_firewalled_container("dropped")

    def assertTokenTimesOut(self, ns, family: str) -> None:
        r = put_token(self.lab, ns, family, max_time=2)
        self.assertEqual(r.exit_code, CURL_TIMEOUT, f"{ns.label} {family}: {r}")
        self.assertEqual(r.status, 0, r)

    def assertTokenWorks(self, ns, family: str) -> None:
        r = put_token(self.lab, ns, family, max_time=2)
        self.assertEqual(r.status, 200, f"{ns.label} {family}: {r}")
        self.assertFast(r)

    def test_the_lab_distances_are_what_the_tests_assume(self):
        self.assertEqual([self.lab.host.distance, self.c1.distance, self.dind.distance],
                         [0, 1, 2])

    def test_hop_limit_1_drops_the_token_one_hop_away_while_tokenless_gets_answer_fast(self):
        self.lab.set_options(hop_limit=1)
        for family in FAMILIES:
            with self.subTest(family=family):
                self.assertTokenWorks(self.lab.host, family)
                self.assertTokenTimesOut(self.c1, family)
                r = get(self.lab, self.c1, PATH, family)
                self.assertEqual(r.status, 200, r)
                self.assertFast(r, "a tokenless GET is not hop-limited")
        # The server did answer the container's PUT: the kernel dropped the answer.
        puts = [e for e in self.lab.requests() if e["method"] == "PUT"]
        self.assertEqual([e["status"] for e in puts], [200] * 4, puts)
        self.assertEqual({e["hop_limit"] for e in puts}, {1}, puts)

    def test_hop_limit_1_with_required_tokens_leaves_a_container_only_fast_401s(self):
        self.lab.set_options(hop_limit=1, http_tokens="required")
        for family in FAMILIES:
            with self.subTest(family=family):
                self.assertTokenTimesOut(self.c1, family)
                r = get(self.lab, self.c1, PATH, family)
                self.assertEqual(r.status, 401, r)
                self.assertFast(r)

    def test_hop_limit_2_gives_tokens_one_hop_away_but_not_two(self):
        self.lab.set_options(hop_limit=2)
        for family in FAMILIES:
            with self.subTest(family=family):
                self.assertTokenWorks(self.c1, family)
                self.assertTokenWorks(self.dind.outer, family)
                self.assertTokenTimesOut(self.dind, family)

    def test_hop_limit_3_gives_tokens_two_hops_away(self):
        self.lab.set_options(hop_limit=3)
        for family in FAMILIES:
            with self.subTest(family=family):
                self.assertTokenWorks(self.dind, family)
                r = put_token(self.lab, self.dind, family)
                token = r.body
                g = get(self.lab, self.dind, PATH, family, token)
                self.assertEqual(g.status, 200, g)

    def test_a_blackholed_container_fails_to_connect_at_once(self):
        self.lab.set_options(hop_limit=64)
        for family in FAMILIES:
            with self.subTest(family=family):
                for r in (put_token(self.lab, self.blackholed, family),
                          get(self.lab, self.blackholed, PATH, family)):
                    self.assertEqual(r.exit_code, CURL_COULDNT_CONNECT, r)
                    self.assertFast(r)
        self.assertEqual(self.lab.requests(), [])

    def test_a_firewalled_container_times_out_while_connecting(self):
        self.lab.set_options(hop_limit=64)
        for family in FAMILIES:
            with self.subTest(family=family):
                r = get(self.lab, self.firewalled, PATH, family, connect_timeout=1, max_time=2)
                self.assertEqual(r.exit_code, CURL_TIMEOUT, r)
                self.assertGreaterEqual(r.seconds, 0.9, r)
                self.assertIn("onnect", r.stderr, "curl should say it timed out connecting")
        self.assertEqual(self.lab.requests(), [])

    def test_a_reset_after_a_dropped_put_makes_curl_fail_at_once_with_a_receive_error(self):
        self.lab.set_options(hop_limit=1)
        self.lab.set_faults(after_dropped_put="reset")
        for family in FAMILIES:
            with self.subTest(family=family):
                r = put_token(self.lab, self.c1, family, max_time=5)
                self.assertEqual(r.exit_code, CURL_RECV_ERROR, r)
                self.assertLess(r.seconds, 4, r)

    def test_a_hang_after_a_dropped_put_makes_curl_time_out(self):
        self.lab.set_options(hop_limit=1)
        self.lab.set_faults(after_dropped_put="hang")
        r = put_token(self.lab, self.c1, "ipv4", max_time=2)
        self.assertEqual(r.exit_code, CURL_TIMEOUT, r)

    def test_throttling_faults_answer_429_or_503_for_their_share_of_requests(self):
        for status in (429, 503):
            with self.subTest(status=status):
                self.lab.set_faults(status=status)
                r = get(self.lab, self.c1, PATH)
                self.assertEqual(r.status, status, r)
                self.assertEqual(put_token(self.lab, self.lab.host).status, status)
        self.lab.set_faults(status=503, share=0.5)
        statuses = {get(self.lab, self.lab.host, PATH).status for _ in range(24)}
        self.assertEqual(statuses, {200, 503})

    def test_an_interceptor_answers_without_the_server_header(self):
        self.lab.set_faults(no_server_header=True)
        r = get(self.lab, self.c1, PATH)
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.header("Server"), r)
        self.lab.set_faults()
        self.assertEqual(get(self.lab, self.c1, PATH).header("Server"), "EC2ws")

    def test_connection_faults_look_to_curl_like_resets_hangs_delays_and_garbage(self):
        self.lab.set_faults(reset=True)
        self.assertEqual(get(self.lab, self.c1, PATH).exit_code, CURL_RECV_ERROR)
        self.lab.set_faults(hang=True)
        self.assertEqual(get(self.lab, self.c1, PATH, max_time=1).exit_code, CURL_TIMEOUT)
        self.lab.set_faults(delay_ms=600)
        r = get(self.lab, self.c1, PATH)
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(r.seconds, 0.6, r)
        self.lab.set_faults(malformed=True)
        r = get(self.lab, self.c1, PATH)
        self.assertNotEqual(r.exit_code, 0, r)
        self.assertEqual(r.status, 0, r)
        self.lab.set_faults(oversized_bytes=3 * 1024 * 1024)
        r = get(self.lab, self.c1, PATH, max_time=5)
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(len(r.body), 3 * 1024 * 1024)

    def test_faults_can_target_only_the_token_path(self):
        self.lab.set_faults(status=503, paths=["/latest/api/token"])
        self.assertEqual(put_token(self.lab, self.lab.host).status, 503)
        self.assertEqual(get(self.lab, self.lab.host, PATH).status, 200)

    def test_a_stopped_imds_refuses_connections_and_answers_again_once_back(self):
        self.lab.stop_emulator()
        for ns in (self.lab.host, self.c1):
            r = get(self.lab, ns, PATH)
            self.assertEqual(r.exit_code, CURL_COULDNT_CONNECT, r)
            self.assertFast(r)
        self.lab.start_emulator()
        self.assertEqual(get(self.lab, self.c1, PATH).status, 200)


if __name__ == "__main__":
    fidelity.main()
