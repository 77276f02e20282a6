#!/usr/bin/python3
"""curl against every row of IMDS.md's response tables, from the instance and from a
bridge container (hop limit 2, so the container gets tokens), over IPv4 and IPv6."""

from __future__ import annotations

import re
import time
from typing import Iterator

import fidelity
from fidelity import (INSTANCE_ID, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER, CurlResult,
                      LabTestCase, curl, endpoint_url, get, put_token)
from lab import Netns


class ResponseTableTest(LabTestCase):
    emulator_args = ("--hop-limit", "2", "--tag", "Name=fidelity", "--tag", "team=imds")
    base_options = {"hop_limit": 2}

    @classmethod
    def build_topology(cls) -> None:
        cls.container = cls.lab.add_bridge_container("c1")

    def places(self) -> Iterator[tuple[Netns, str]]:
        """Every (namespace, address family) a row is checked from, each as a subTest."""
        for ns in (self.lab.host, self.container):
            for family in ("ipv4", "ipv6"):
                with self.subTest(ns=ns.label, family=family):
                    yield ns, family

    def token(self, ns: Netns, family: str, ttl: str = "21600") -> str:
        r = put_token(self.lab, ns, family, ttl)
        self.assertEqual(r.status, 200, r)
        return r.body

    def assertEc2Headers(self, r: CurlResult) -> None:
        self.assertEqual(r.header("Server"), "EC2ws", r)
        self.assertEqual((r.header("Connection") or "").lower(), "close", r)

    # ----- PUT /latest/api/token -----------------------------------------------------

    def test_a_token_put_with_a_valid_ttl_gets_an_opaque_token_and_the_ttl_echoed(self):
        for ns, family in self.places():
            for ttl in ("1", "21600"):
                r = put_token(self.lab, ns, family, ttl)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header(TTL_HEADER), ttl, r)
                self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r)
                self.assertRegex(r.body, r"^[\x21-\x7e]{40,100}$",
                                 "the token should be ~56 printable characters")
                self.assertEc2Headers(r)

    def test_every_token_put_gets_a_different_token(self):
        tokens = {self.token(self.lab.host, "ipv4") for _ in range(3)}
        self.assertEqual(len(tokens), 3)

    def test_a_token_put_without_a_valid_ttl_is_a_400(self):
        for ns, family in self.places():
            for ttl in (None, "", "abc", "0", "-5", "21601", "99999999999999999999"):
                with self.subTest(ttl=ttl):
                    r = put_token(self.lab, ns, family, ttl)
                    self.assertEqual(r.status, 400, r)
                    self.assertEc2Headers(r)

    def test_a_token_put_with_x_forwarded_for_is_a_403_with_an_empty_body(self):
        for ns, family in self.places():
            r = curl(self.lab, ns, "PUT", endpoint_url(family, TOKEN_PATH),
                     [f"{TTL_HEADER}: 60", "X-Forwarded-For: 203.0.113.7"])
            self.assertEqual(r.status, 403, r)
            self.assertEqual(r.body, "", r)
            self.assertEc2Headers(r)

    def test_a_token_put_on_another_token_path_is_a_403(self):
        for ns, family in self.places():
            for path in ("/latest/api/token/", "/2021-03-23/api/token"):
                with self.subTest(path=path):
                    r = curl(self.lab, ns, "PUT", endpoint_url(family, path),
                             [f"{TTL_HEADER}: 60"])
                    self.assertEqual(r.status, 403, r)

    def test_a_get_on_the_token_path_is_a_405_that_allows_options_and_put(self):
        for ns, family in self.places():
            r = get(self.lab, ns, TOKEN_PATH, family)
            self.assertEqual(r.status, 405, r)
            self.assertEqual(r.header("Allow"), "OPTIONS, PUT", r)
            self.assertEc2Headers(r)

    def test_options_on_the_token_path_is_a_200_that_allows_options_and_put(self):
        for ns, family in self.places():
            r = curl(self.lab, ns, "OPTIONS", endpoint_url(family, TOKEN_PATH))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("Allow"), "OPTIONS, PUT", r)

    def test_a_put_announcing_expect_100_continue_gets_a_417(self):
        for ns, family in self.places():
            r = curl(self.lab, ns, "PUT", endpoint_url(family, TOKEN_PATH),
                     [f"{TTL_HEADER}: 60", "Expect: 100-continue"], data="x" * 2048)
            # curl >= 7.76 retries without Expect after a 417, so look at the first answer.
            self.assertEqual(r.all_statuses[0], 417, r)
            log = [e for e in self.lab.requests() if e["method"] == "PUT"]
            self.assertEqual(log[0]["status"], 417, log)
            self.lab.clear_requests()

    def test_a_token_put_while_the_endpoint_is_disabled_is_a_403(self):
        self.lab.set_options(http_endpoint="disabled")
        for ns, family in self.places():
            self.assertEqual(put_token(self.lab, ns, family).status, 403)
            r = get(self.lab, ns, "/latest/meta-data/instance-id", family)
            self.assertEqual(r.status, 403, r)
            self.assertEc2Headers(r)

    # ----- using the token -----------------------------------------------------------

    def test_a_get_with_a_valid_token_answers_with_the_remaining_token_lifetime(self):
        for ns, family in self.places():
            token = self.token(ns, family, "30")
            r = get(self.lab, ns, "/latest/meta-data/instance-id", family, token)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, INSTANCE_ID)
            first = int(r.header(TTL_HEADER) or "-1")
            self.assertIn(first, range(28, 31), r)
            self.assertEc2Headers(r)
        # A GET does not extend the token: the remaining time only goes down.
        token = self.token(self.lab.host, "ipv4", "4")
        before = int(get(self.lab, self.lab.host, "/latest/meta-data/instance-id",
                         token=token).header(TTL_HEADER) or "-1")
        time.sleep(1.2)
        after = int(get(self.lab, self.lab.host, "/latest/meta-data/instance-id",
                        token=token).header(TTL_HEADER) or "-1")
        self.assertIn(before, (3, 4))
        self.assertLess(after, before)

    def test_a_head_with_a_valid_token_answers_without_a_body(self):
        token = self.token(self.lab.host, "ipv4")
        r = curl(self.lab, self.lab.host, "HEAD",
                 endpoint_url("ipv4", "/latest/meta-data/instance-id"),
                 [f"{TOKEN_HEADER}: {token}"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Length"), str(len(INSTANCE_ID)), r)
        self.assertNotIn(INSTANCE_ID, r.body)  # curl -I writes only the header block

    def test_an_invalid_token_is_a_401_even_when_tokens_are_optional(self):
        self.assertEqual(self.lab.options()["http_tokens"], "optional")
        for ns, family in self.places():
            r = get(self.lab, ns, "/latest/meta-data/instance-id", family,
                    token="AQAEAFake-token-that-this-instance-never-issued-0000000000==")
            self.assertEqual(r.status, 401, r)
            self.assertFast(r)
            self.assertEc2Headers(r)

    def test_an_expired_token_is_a_401(self):
        token = self.token(self.lab.host, "ipv4", "1")
        time.sleep(1.3)
        r = get(self.lab, self.lab.host, "/latest/meta-data/instance-id", token=token)
        self.assertEqual(r.status, 401, r)

    def test_a_token_from_another_instance_is_a_401(self):
        token = self.token(self.lab.host, "ipv4")
        self.lab.stop_emulator()
        self.lab.start_emulator()  # a new instance: it never issued that token
        self.lab.set_options(hop_limit=2)
        r = get(self.lab, self.lab.host, "/latest/meta-data/instance-id", token=token)
        self.assertEqual(r.status, 401, r)

    def test_a_token_bearing_get_with_x_forwarded_for_is_a_403(self):
        token = self.token(self.lab.host, "ipv4")
        r = get(self.lab, self.lab.host, "/latest/meta-data/instance-id", token=token,
                headers=["X-Forwarded-For: 203.0.113.7"])
        self.assertEqual(r.status, 403, r)

    # ----- IMDSv1 --------------------------------------------------------------------

    def test_a_tokenless_get_under_optional_tokens_answers_with_the_data(self):
        for ns, family in self.places():
            r = get(self.lab, ns, "/latest/meta-data/instance-id", family)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, INSTANCE_ID)
            self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r)
            self.assertIsNone(r.header(TTL_HEADER), r)
            self.assertEc2Headers(r)
        log = self.lab.requests()
        self.assertTrue(log and not any(e["has_token"] for e in log), log)

    def test_a_tokenless_get_under_required_tokens_is_a_fast_401_with_an_xhtml_page(self):
        self.lab.set_options(http_tokens="required", unauthorized_body="xhtml")
        for ns, family in self.places():
            r = get(self.lab, ns, "/latest/meta-data/instance-id", family)
            self.assertEqual(r.status, 401, r)
            self.assertFast(r)
            self.assertIn("<title>401 - Unauthorized</title>", r.body)
            self.assertEc2Headers(r)

    def test_a_tokenless_get_under_required_tokens_is_a_fast_401_with_an_empty_body(self):
        self.lab.set_options(http_tokens="required", unauthorized_body="empty")
        for ns, family in self.places():
            r = get(self.lab, ns, "/latest/meta-data/instance-id", family)
            self.assertEqual(r.status, 401, r)
            self.assertFast(r)
            self.assertEqual(r.body, "")

    def test_required_tokens_still_serve_token_bearing_gets(self):
        self.lab.set_options(http_tokens="required")
        for ns, family in self.places():
            token = self.token(ns, family)
            r = get(self.lab, ns, "/latest/meta-data/instance-id", family, token)
            self.assertEqual(r.status, 200, r)

    def test_a_pending_options_change_keeps_the_old_behaviour_until_applied(self):
        self.lab.set_options(http_tokens="required", pending_ms=1500)
        self.assertEqual(self.lab.options()["state"], "pending")
        r = get(self.lab, self.lab.host, "/latest/meta-data/instance-id")
        self.assertEqual(r.status, 200, r)
        time.sleep(1.7)
        self.assertEqual(self.lab.options()["state"], "applied")
        r = get(self.lab, self.lab.host, "/latest/meta-data/instance-id")
        self.assertEqual(r.status, 401, r)

    # ----- other observable facts ----------------------------------------------------

    def test_the_listing_shows_tags_only_while_instance_metadata_tags_are_enabled(self):
        for ns, family in self.places():
            r = get(self.lab, ns, "/latest/meta-data/", family)
            self.assertEqual(r.status, 200, r)
            lines = r.body.splitlines()
            self.assertIn("instance-id", lines)
            self.assertIn("placement/", lines)
            self.assertNotIn("tags/", lines)
        self.lab.set_options(tags="enabled")
        for ns, family in self.places():
            r = get(self.lab, ns, "/latest/meta-data/", family)
            self.assertIn("tags/", r.body.splitlines())
            keys = get(self.lab, ns, "/latest/meta-data/tags/instance", family)
            self.assertEqual(sorted(keys.body.splitlines()), ["Name", "team"], keys)
            value = get(self.lab, ns, "/latest/meta-data/tags/instance/Name", family)
            self.assertEqual(value.body, "fidelity", value)

    def test_harmless_paths_answer_with_the_instance_identity(self):
        expect = {"/latest/meta-data/ami-id": "ami-0abcdef1234567890",
                  "/latest/meta-data/placement/region": "us-east-1",
                  "/latest/meta-data/placement/availability-zone": "us-east-1a",
                  "/latest/meta-data/instance-id": INSTANCE_ID}
        for path, value in expect.items():
            with self.subTest(path=path):
                r = get(self.lab, self.container, path)
                self.assertEqual((r.status, r.body), (200, value), r)

    def test_an_unknown_path_is_a_404(self):
        for ns, family in self.places():
            r = get(self.lab, ns, "/latest/meta-data/no-such-thing", family)
            self.assertEqual(r.status, 404, r)
            self.assertEc2Headers(r)

    def test_the_ipv6_endpoint_refuses_connections_while_disabled(self):
        self.lab.set_options(ipv6="disabled")
        for ns in (self.lab.host, self.container):
            with self.subTest(ns=ns.label):
                r = get(self.lab, ns, "/latest/meta-data/instance-id", "ipv6")
                self.assertEqual(r.exit_code, 7, r)  # couldn't connect
                self.assertFast(r)
                self.assertEqual(get(self.lab, ns, "/latest/meta-data/instance-id").status,
                                 200)
        self.lab.set_options(ipv6="enabled")
        r = get(self.lab, self.container, "/latest/meta-data/instance-id", "ipv6")
        self.assertEqual(r.status, 200, r)

    def test_the_request_log_never_holds_a_token(self):
        token = self.token(self.lab.host, "ipv4")
        get(self.lab, self.lab.host, "/latest/meta-data/instance-id", token=token)
        self.assertNotIn(token, repr(self.lab.requests()))
        self.assertNotIn(token, self.lab.emulator_log_text())

    def test_containers_reach_the_imds_through_the_hosts_masquerade(self):
        get(self.lab, self.container, "/latest/meta-data/instance-id")
        get(self.lab, self.container, "/latest/meta-data/instance-id", "ipv6")
        peers = {re.sub(r"^\[|\](:\d+)?$", "", e["peer"]) for e in self.lab.requests()}
        self.assertEqual(peers, {"169.254.0.2", "fd00:ec2::2"})


if __name__ == "__main__":
    fidelity.main()
