#!/usr/bin/python3
"""imds-probe in the namespace lab: each test runs the real CLI inside the lab's "host"
namespace against the emulator and asserts what a user would read (verdicts, findings,
exit status). After every test: no request for credentials or user data reached the
emulator, and nothing that looks like an emulator token appears in any output.

Usage: test_probe.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import pty
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (Lab, Netns, build_dir_from_argv, metric_value,  # noqa: E402
                 skip_unless_lab_possible, start_agent, stop_process, unix_http)


BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
PROBE = str(BUILD_DIR / "probe" / "imds-probe")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")

# The emulator's tokens: 56 characters of the URL-safe base64 alphabet.
ANSI = re.compile(r"\x1b\[")


def verdicts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in doc["inference"]["targets"]}


def observations(doc: dict[str, Any], target: str) -> list[dict[str, Any]]:
    for t in doc["targets"]:
        if t["name"] == target:
            return t["observations"]
    raise AssertionError(f"no target {target!r} in the JSON output")


def step(doc: dict[str, Any], target: str, name: str, family: str) -> dict[str, Any]:
    for o in observations(doc, target):
        if o["step"] == name and o["family"] == family:
            return o
    raise AssertionError(f"{target}: no {name} observation for {family}")


def finding_ids(doc: dict[str, Any], target: str | None = None) -> set[str]:
    return {f["id"] for f in doc["findings"]
            if target is None or any(s["name"] == target for s in f["subjects"])}


# The warning for a namespace blocked from the IMDS over IPv4 but not over IPv6.
BYPASS_FINDING = "ipv4-blocked-ipv6-open"

# Per-family verdicts (schema_version 2): inference.targets[i].families.{ipv4,ipv6}, with the
# target's headline fields equal to the IPv4 family's. Every field name of that shape is
# spelled here and nowhere else.
PER_FAMILY_SCHEMA = 2
FAMILY_KEYS = {"v4": "ipv4", "v6": "ipv6"}  # lab.py's family names -> the JSON keys


@dataclasses.dataclass(frozen=True)
class FamilyVerdict:
    """What one address family of one namespace gets from the IMDS."""

    reachable: str  # yes / no / unknown
    imdsv2: str
    imdsv1: str
    predicted: bool  # from the host's PUT response TTL; the PUT was not sent
    summary: str
    unreachable_reason: str  # none, no-route, refused, blackholed, firewalled, timeout, reset
    put_drop: str  # none, timeout, reset, predicted

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> FamilyVerdict:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in obj]
        if missing:
            raise AssertionError(f"{where}: no {', '.join(missing)} in {obj}")
        return cls(**{f.name: obj[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class TargetVerdict:
    """One target's verdict: the headline (what the target line says) and, when the probe
    emits them, one FamilyVerdict per address family."""

    label: str  # the lab's name for the namespace
    target: str  # the probe's name for it (findings name it so)
    distance: int | None
    reachable: str
    imdsv2: str
    imdsv1: str
    summary: str
    schema_version: int
    raw: dict[str, Any]

    @classmethod
    def of(cls, doc: dict[str, Any], ns: Netns) -> TargetVerdict:
        """The verdict of the target probed through ns's path (--netns names it by its
        file name, --netns-dir by the label: the path is what both share)."""
        paths = [t["path"] for t in doc["targets"]]
        if ns.path not in paths:
            raise AssertionError(f"{ns.label} ({ns.path}) was not probed; targets: {paths}")
        v = doc["inference"]["targets"][paths.index(ns.path)]
        return cls(label=ns.label, target=v["target"], distance=v["distance"],
                   reachable=v["reachable"], imdsv2=v["imdsv2"], imdsv1=v["imdsv1"],
                   summary=v["summary"], schema_version=doc["schema_version"], raw=v)

    def family(self, family: str) -> FamilyVerdict:
        """family: "v4" or "v6"."""
        families = self.raw.get("families")
        if not isinstance(families, dict):
            raise AssertionError(
                f"{self.label}: no per-family verdicts (schema_version {self.schema_version}, "
                f"wanted {PER_FAMILY_SCHEMA}); the target's only verdict: {self.summary!r}")
        if self.schema_version != PER_FAMILY_SCHEMA:
            raise AssertionError(f"per-family verdicts under schema_version "
                                 f"{self.schema_version}, wanted {PER_FAMILY_SCHEMA}")
        key = FAMILY_KEYS[family]
        if key not in families:
            raise AssertionError(f"{self.label}: no {key} verdict in {families}")
        return FamilyVerdict.from_json(families[key], f"{self.label} {key}")


class ProbeRun:
    def __init__(self, proc: subprocess.CompletedProcess[str]):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.doc: dict[str, Any] | None = None
        if self.stdout.lstrip().startswith("{"):
            self.doc = json.loads(self.stdout)


class LabCase(unittest.TestCase):
    """One Lab per test class; options change between tests through the control API."""

    lab: Lab
    emulator_args: list[str] = []
    ipv6 = True

    @classmethod
    def build(cls, lab: Lab) -> None:
        """Add containers; subclasses override."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, emulator_args=cls.emulator_args, ipv6=cls.ipv6)
        try:
            cls.build(cls.lab)
        except BaseException:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.lab.close()

    def setUp(self) -> None:
        self.outputs: list[str] = []
        self.lab.set_faults()
        self.lab.set_options(http_tokens="required", hop_limit=2, http_endpoint="enabled",
                             ipv6="enabled" if self.ipv6 else "disabled", tags="disabled")
        self.lab.clear_requests()

    def tearDown(self) -> None:
        if self.lab.emulator_running():
            self.lab.set_faults()
        self.lab.assert_nothing_secret(self, self.outputs)

    def probe(self, *args: str, containers: bool = True, ns: Netns | None = None,
              env: dict[str, str] | None = None, timeout: float = 30) -> ProbeRun:
        argv = [PROBE] + ([] if "--timeout" in args else ["--timeout", "1s"])
        if containers:
            argv += ["--all-containers", "--netns-dir", self.lab.netns_dir, "--no-proc-scan",
                     # the namespace this test runs in: never a target
                     "--exclude-netns", f"/proc/{os.getpid()}/ns/net"]
        argv += list(args)
        proc = self.lab.exec(ns or self.lab.host, argv, timeout=timeout, env=env)
        self.outputs += [proc.stdout, proc.stderr]
        return ProbeRun(proc)

    def probe_json(self, *args: str, schema_version: int | None = PER_FAMILY_SCHEMA, **kwargs: Any) -> ProbeRun:
        """--json=short; schema_version=None leaves the version check to the test."""
        run = self.probe("--json=short", *args, **kwargs)
        self.assertIsNotNone(run.doc, f"no JSON on stdout; stderr: {run.stderr}")
        if schema_version is not None:
            self.assertEqual(run.doc["schema_version"], schema_version)
        self.assertEqual(run.rc, run.doc["exit_code"], run.stderr)
        return run


class TokensAndHopLimitAcrossTargets(LabCase):
    """The matrix: tokens x hop limit x {host, 1-hop, 2-hop, blackholed, firewalled} x
    {IPv4, IPv6}, one probe run per option combination."""

    @classmethod
    def build(cls, lab: Lab) -> None:
        lab.add_bridge_container("c1")
        lab.add_dind_container("c2")
        lab.add_blackholed_container("c3")
        lab.add_firewalled_container("c4")

    def test_each_namespace_gets_a_token_exactly_when_the_hop_limit_exceeds_its_distance(self):
        for tokens in ("optional", "required"):
            for hop in (1, 2, 3):
                with self.subTest(http_tokens=tokens, hop_limit=hop):
                    self.lab.set_options(http_tokens=tokens, hop_limit=hop)
                    run = self.probe_json()
                    doc = run.doc
                    inf = doc["inference"]
                    self.assertEqual(inf["http_tokens"], tokens)
                    self.assertEqual(inf["endpoint"], "enabled")
                    self.assertEqual(inf["ipv6"], "yes")
                    self.assertEqual(inf["hop_limit"]["exact"], hop)
                    v = verdicts(doc)
                    self.assertEqual(v["host"]["imdsv2"], "yes")
                    for ns in self.lab.containers:
                        verdict = v[ns.label]
                        if ns.label in ("c3", "c4"):
                            self.assertEqual(verdict["reachable"], "no", ns.label)
                            self.assertEqual(verdict["imdsv2"], "no", ns.label)
                            self.assertIn("container-unreachable", finding_ids(doc, ns.label))
                            continue
                        self.assertEqual(verdict["distance"], ns.distance, ns.label)
                        gets_token = hop > ns.distance
                        self.assertEqual(verdict["imdsv2"], "yes" if gets_token else "no",
                                         ns.label)
                        self.assertEqual(verdict["imdsv1"],
                                         "yes" if tokens == "optional" else "no", ns.label)
                        self.assertEqual("container-no-token" in finding_ids(doc, ns.label),
                                         not gets_token, ns.label)
                        for family in ("ipv4", "ipv6"):
                            put = step(doc, ns.label, "token_put", family)
                            if gets_token:
                                self.assertEqual((put["outcome"], put["status"]),
                                                 ("http", 200), f"{ns.label} {family}")
                            else:
                                self.assertIn(put["outcome"], ("skipped", "timeout", "reset"),
                                              f"{ns.label} {family}")
                    self.assertEqual("tokens-optional" in finding_ids(doc),
                                     tokens == "optional")
                    self.assertEqual(run.rc, 0 if doc["healthy"] else 1)

    def test_unreachable_namespaces_are_told_apart_by_reason(self):
        doc = self.probe_json().doc
        v = verdicts(doc)
        for family in ("ipv4", "ipv6"):
            # c3's blackhole route makes the kernel refuse the destination (EINVAL).
            self.assertEqual(step(doc, "c3", "token_put", family)["outcome"], "blocked")
            self.assertEqual(step(doc, "c4", "token_put", family)["outcome"], "timeout")
            self.assertEqual(v["c3"]["families"][family]["unreachable_reason"], "blackholed")
            self.assertEqual(v["c4"]["families"][family]["unreachable_reason"], "firewalled")

    def test_a_one_hop_container_under_hop_limit_one_is_predicted_without_waiting(self):
        self.lab.set_options(hop_limit=1)
        doc = self.probe_json("--timeout", "20s", "--deadline", "60s", timeout=90).doc
        v = verdicts(doc)
        self.assertTrue(doc["packet_ttl_available"])
        for label in ("c1", "c2"):
            self.assertEqual(v[label]["imdsv2"], "no")
            self.assertTrue(v[label]["predicted"], label)
        self.assertFalse(v["host"]["predicted"])

    def test_exact_hop_limit_search_finds_the_limit_without_packet_sockets(self):
        self.lab.set_options(hop_limit=3)
        doc = self.probe_json("--no-packet-ttl", "--exact-hop-limit", containers=False).doc
        self.assertEqual(doc["searched_hop_limit"], 3)
        self.assertEqual(doc["inference"]["hop_limit"]["exact"], 3)

    def test_ipv6_endpoint_off_is_reported_and_ipv4_still_decides(self):
        self.lab.set_options(ipv6="disabled", hop_limit=2)
        doc = self.probe_json().doc
        self.assertEqual(doc["inference"]["ipv6"], "no")
        self.assertNotEqual(step(doc, "host", "token_put", "ipv6")["outcome"], "http")
        self.assertEqual(verdicts(doc)["c1"]["imdsv2"], "yes")

    def test_no_ipv6_sends_nothing_to_the_ipv6_endpoint(self):
        doc = self.probe_json("--no-ipv6").doc
        self.assertEqual([r for r in self.lab.requests() if r["family"] != "ipv4"], [])
        for t in doc["targets"]:
            for o in t["observations"]:
                if o["family"] == "ipv6":
                    self.assertEqual(o["outcome"], "skipped")


class EndpointStatesFaultsAndPolicy(LabCase):
    """Endpoint, tags, interception, emulator faults, --no-v1, --expect, exit status, output."""

    @classmethod
    def build(cls, lab: Lab) -> None:
        cls.c1 = lab.add_bridge_container("c1")

    def test_a_disabled_endpoint_is_a_warning_unless_expected(self):
        self.lab.set_options(http_endpoint="disabled")
        run = self.probe_json()
        self.assertEqual(run.doc["inference"]["endpoint"], "disabled")
        disabled = [f for f in run.doc["findings"] if f["id"] == "endpoint-disabled"]
        self.assertEqual([f["severity"] for f in disabled], ["warning"])
        self.assertEqual(run.rc, 1)
        run = self.probe_json("--expect", "endpoint=disabled")
        self.assertEqual([f["severity"] for f in run.doc["findings"]
                          if f["id"] == "endpoint-disabled"], ["info"])

    def test_tags_in_the_listing_are_seen(self):
        for tags, seen in (("enabled", "yes"), ("disabled", "no")):
            with self.subTest(tags=tags):
                self.lab.set_options(tags=tags)
                self.assertEqual(self.probe_json().doc["inference"]["tags"], seen)

    def test_responses_without_the_ec2ws_server_header_suggest_an_interceptor(self):
        self.lab.set_faults(no_server_header=True)
        run = self.probe_json()
        self.assertEqual(run.doc["inference"]["interception"], "yes")
        self.assertIn("interception-suspected", finding_ids(run.doc))
        self.assertEqual(run.rc, 1)

    def test_throttling_answers_are_reported(self):
        for status in (429, 503):
            with self.subTest(status=status):
                self.lab.set_faults(status=status, paths=["/latest/meta-data/instance-id"])
                run = self.probe_json()
                self.assertIn("throttled", finding_ids(run.doc))
                self.assertEqual(run.rc, 1)

    def test_a_reset_token_request_is_a_reset_not_a_timeout(self):
        self.lab.set_faults(reset=True, paths=["/latest/api/token"])
        doc = self.probe_json(containers=False).doc
        self.assertEqual(step(doc, "host", "token_put", "ipv4")["outcome"], "reset")
        self.assertEqual(verdicts(doc)["host"]["imdsv2"], "no")

    def test_a_hanging_request_ends_as_a_timeout_and_the_run_still_finishes(self):
        self.lab.set_faults(hang=True, paths=["/latest/meta-data/instance-id"])
        doc = self.probe_json(containers=False).doc
        self.assertEqual(step(doc, "host", "v2_get", "ipv4")["outcome"], "timeout")

    def test_a_dropped_put_that_ends_in_a_reset_still_means_no_token(self):
        self.lab.set_options(hop_limit=1)
        self.lab.set_faults(after_dropped_put="reset")
        doc = self.probe_json("--no-packet-ttl").doc
        self.assertEqual(step(doc, "c1", "token_put", "ipv4")["outcome"], "reset")
        self.assertEqual(verdicts(doc)["c1"]["imdsv2"], "no")
        self.assertIn("container-no-token", finding_ids(doc, "c1"))

    def test_no_v1_sends_no_tokenless_request_and_says_what_it_cannot_know(self):
        self.lab.set_options(http_tokens="optional")
        run = self.probe_json("--no-v1")
        tokenless = [r for r in self.lab.requests()
                     if r["method"] in ("GET", "HEAD") and not r["has_token"]]
        self.assertEqual(tokenless, [])
        self.assertFalse(run.doc["v1_probed"])
        self.assertIn("v1-not-probed", finding_ids(run.doc))
        self.assertEqual(run.doc["inference"]["http_tokens"], "unknown")

    def test_an_unmet_expectation_is_an_error_finding_and_exit_status_one(self):
        self.lab.set_options(http_tokens="optional", hop_limit=2)
        run = self.probe_json("--expect", "http-tokens=required")
        self.assertIn("policy-http-tokens", finding_ids(run.doc))
        self.assertEqual(run.rc, 1)
        self.lab.set_options(http_tokens="required", hop_limit=1)
        run = self.probe_json("--expect", "hop-limit=>=2", containers=False)
        self.assertIn("policy-hop-limit", finding_ids(run.doc))
        self.assertEqual(run.rc, 1)

    def test_an_imds_support_v2_instance_meets_its_expectation_with_exit_status_zero(self):
        self.lab.set_options(http_tokens="required", hop_limit=2)
        run = self.probe_json("--expect", "imds-support=v2.0", "--netns", self.c1.path,
                              containers=False)
        self.assertEqual({i for i in finding_ids(run.doc) if i.startswith("policy-")}, set())
        self.assertEqual(run.rc, 0, run.doc["findings"])

    def test_an_unreachable_imds_exits_three(self):
        self.lab.stop_emulator()
        try:
            run = self.probe_json(containers=False)
            self.assertEqual(run.doc["inference"]["endpoint"], "unreachable")
            self.assertEqual(run.rc, 3)
        finally:
            self.lab.start_emulator()
            self.lab.set_options(ipv6="enabled")

    def test_usage_errors_exit_two_with_a_specific_message(self):
        cases = {
            ("--bogus",): "--bogus",
            ("--timeout", "forever"): "--timeout",
            ("--endpoint", "https://169.254.169.254"): "http://",
            ("--json=long",): "--json",
            ("--expect", "hop-limit=99"): "--expect",
            ("--pid", "2147483646"): "pid",
            ("--container", "deadbeefdeadbeef"): "no running container",
            ("--netns", "/etc/hostname"): "not a namespace",
            ("--netns-dir", "/run/netns"): "--all-containers",
        }
        # One table says which option goes with which command (probe/main.cpp); run without
        # the helper's own --timeout, so that each case's option is the one refused.
        exact = {
            ("status", "--timeout", "1s"): "--timeout does not go with `status`",
            ("callers", "--expect", "http-tokens=required"): "--expect does not go with `callers`",
            ("callers", "--no-ipv6"): "--no-ipv6 does not go with `callers` (it goes with a "
                                      "diagnosis or `callers --watch`)",
            ("callers", "--watch", "5s", "--socket", "/tmp/x.sock"):
                "--socket does not go with `callers --watch`",
            ("--watch", "5s"): "--watch does not go with a diagnosis",
            ("--no-process-lookup",): "--no-process-lookup does not go with a diagnosis",
            ("--socket", "/tmp/x.sock"): "(it goes with `status` or `callers`)",
            ("callers", "--agent"): "--agent does not go with `callers`",
            ("callers", "--watch", "0s"): "--watch: '0s' is out of range",
            ("--docker-root", "var/lib/docker"): "--docker-root: expected an absolute path",
            ("callers", "--watch", "5s", "--docker-root", "d"):
                "--docker-root: expected an absolute path",
            ("callers", "--docker-root", "/d"): "--docker-root does not go with `callers`",
        }
        for args, needle in exact.items():
            with self.subTest(args=args):
                run = ProbeRun(self.lab.exec(self.lab.host, [PROBE, *args], timeout=30))
                self.assertEqual(run.rc, 2, run.stderr)
                self.assertIn(needle, run.stderr)
                self.assertEqual(run.stdout, "")
        for args, needle in cases.items():
            with self.subTest(args=args):
                run = self.probe(*args, containers=False)
                self.assertEqual(run.rc, 2, run.stderr)
                self.assertIn(needle, run.stderr)
                self.assertNotIn("Targets", run.stderr, "printed the whole --help")
                self.assertEqual(run.stdout, "")
        self.assertEqual(self.lab.requests(), [], "a usage error still sent requests")

    def test_json_is_one_line_when_short_and_indented_when_pretty(self):
        short = self.probe("--json=short", containers=False)
        pretty = self.probe("--json", containers=False)
        self.assertEqual(short.stdout.count("\n"), 1)
        self.assertGreater(pretty.stdout.count("\n"), 20)
        self.assertEqual(json.loads(short.stdout)["schema_version"], 2)
        self.assertEqual(json.loads(pretty.stdout)["schema_version"], 2)

    def test_the_text_report_leads_with_the_verdict_and_has_no_colour_off_a_terminal(self):
        self.lab.set_options(hop_limit=1)
        run = self.probe()
        self.assertTrue(run.stdout.startswith("verdict:"), run.stdout[:200])
        self.assertIn("c1", run.stdout)
        self.assertIsNone(ANSI.search(run.stdout))
        self.assertEqual(run.rc, 1)

    def test_colour_only_on_a_terminal_and_never_with_no_color(self):
        self.lab.set_options(hop_limit=1)

        def on_a_terminal(env: dict[str, str]) -> str:
            master, slave = pty.openpty()
            proc = self.lab.popen(self.lab.host, [PROBE, "--timeout", "1s", "--no-ipv6"],
                                  env=env, stdin=subprocess.DEVNULL, stdout=slave,
                                  stderr=subprocess.DEVNULL)
            os.close(slave)
            chunks = []
            try:
                while True:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: the other side is closed
                        break
                    if not data:
                        break
                    chunks.append(data)
            finally:
                os.close(master)
                proc.wait(timeout=30)
            text = b"".join(chunks).decode(errors="replace")
            self.outputs.append(text)
            return text

        self.assertIsNotNone(ANSI.search(on_a_terminal({})), "no colour on a terminal")
        self.assertIsNone(ANSI.search(on_a_terminal({"NO_COLOR": "1"})), "colour with NO_COLOR")

    def test_a_proxy_in_the_environment_is_reported_but_never_used(self):
        run = self.probe_json(containers=False,
                              env={"http_proxy": "http://192.0.2.1:3128", "NO_PROXY": ""})
        self.assertIn("proxy-captures-imds", finding_ids(run.doc))
        self.assertEqual(verdicts(run.doc)["host"]["imdsv2"], "yes")

    def test_pid_and_netns_name_the_same_namespace_once(self):
        sleeper = self.lab.popen(self.c1, ["sleep", "60"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            pid = self._wait_in_namespace(sleeper.pid, self.c1)
            run = self.probe_json("--pid", str(pid), "--netns", self.c1.path,
                                  containers=False)
            targets = run.doc["targets"]
            self.assertEqual(len(targets), 2, [t["name"] for t in targets])
            self.assertEqual(targets[1]["inode"], os.stat(self.c1.path).st_ino)
            self.assertEqual(verdicts(run.doc)[targets[1]["name"]]["distance"], 1)
        finally:
            os.killpg(sleeper.pid, signal.SIGKILL)
            sleeper.wait()

    def test_a_container_is_found_by_id_prefix_and_named_by_its_id(self):
        # A stand-in Docker container: a process in c1 inside a cgroup named as Docker names
        # its scopes. The cgroup lives under a directory of this test and is removed after.
        container_id = os.urandom(32).hex()
        base = self._cgroup_root() / f"imds-probe-test-{os.getpid()}"
        scope = base / f"docker-{container_id}.scope"
        sleeper = self.lab.popen(self.c1, ["sleep", "60"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            pid = self._wait_in_namespace(sleeper.pid, self.c1)
            scope.mkdir(parents=True)
            (scope / "cgroup.procs").write_text(f"{pid}\n")
            run = self.probe_json("--container", container_id[:8].upper(), containers=False)
            found = run.doc["targets"][1]
            self.assertEqual(found["container_id"], container_id)
            self.assertEqual(found["runtime"], "docker")
            self.assertEqual(found["inode"], os.stat(self.c1.path).st_ino)
            self.assertEqual(verdicts(run.doc)[container_id[:12]]["imdsv2"], "yes")
            # Discovery labels the named namespace with the container inside it.
            run = self.probe_json()
            labelled = [t for t in run.doc["targets"] if t["container_id"] == container_id]
            self.assertEqual([t["name"] for t in labelled], [container_id[:12]])
        finally:
            os.killpg(sleeper.pid, signal.SIGKILL)
            sleeper.wait()
            for d in (scope, base):
                if d.exists():
                    d.rmdir()

    @staticmethod
    def _cgroup_root() -> Path:
        """A cgroup hierarchy this test may create a directory in (v2 or v1 pids)."""
        for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/pids"),
                     Path("/sys/fs/cgroup")):
            if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
                return root
        raise unittest.SkipTest("no writable cgroup hierarchy")

    def _wait_in_namespace(self, pid: int, ns: Netns) -> int:
        """`ip netns exec` execs the program: wait until pid runs inside ns."""
        want = os.stat(ns.path).st_ino
        for _ in range(100):
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino == want:
                    return pid
            except OSError:
                pass
            time.sleep(0.02)
        self.fail(f"pid {pid} never entered {ns.name}")


class PerFamilyVerdicts(LabCase):
    """Each target gets an IPv4 and an IPv6 verdict, and its headline is the IPv4 one: a fact
    about one family (no IPv6 route, a blackholed IPv4 route, a dropped PUT) never stands in
    for the other. Each test probes one namespace (--netns) so its exit status is that
    namespace's."""

    @classmethod
    def build(cls, lab: Lab) -> None:
        cls.v4_only_dind = lab.add_dind_container("d4", families=("v4",))
        cls.v6_only = lab.add_bridge_container("b6", families=("v6",))
        cls.c1 = lab.add_bridge_container("c1")
        cls.blackholed_v4 = lab.add_blackholed_container("bh4", families=("v4",))
        cls.firewalled_v4 = lab.add_firewalled_container("fw4", families=("v4",))

    def probe_target(self, ns: Netns, *args: str) -> tuple[ProbeRun, TargetVerdict]:
        run = self.probe_json("--netns", ns.path, *args, containers=False,
                              schema_version=None)
        return run, TargetVerdict.of(run.doc, ns)

    def assert_headline_is_ipv4(self, v: TargetVerdict) -> None:
        v4 = v.family("v4")
        self.assertEqual((v.reachable, v.imdsv2, v.imdsv1, v.summary),
                         (v4.reachable, v4.imdsv2, v4.imdsv1, v4.summary),
                         f"{v.label}: the headline is not the IPv4 verdict")

    def assert_text_report_not_healthy(self, ns: Netns, *args: str) -> None:
        run = self.probe("--netns", ns.path, *args, containers=False)
        first = run.stdout.partition("\n")[0]
        self.assertTrue(first.startswith("verdict:"), run.stdout[:200])
        self.assertFalse(first.startswith("verdict: healthy"), run.stdout)
        self.assertEqual(run.rc, 1, run.stdout)

    def test_an_ipv4_only_namespace_two_hops_away_gets_no_token_not_no_route(self):
        # The PUT response leaves with TTL 2 and cannot cross 2 hops; that the namespace
        # has no IPv6 route is a fact about IPv6 only.
        self.lab.set_options(http_tokens="optional", hop_limit=2)
        ns = self.v4_only_dind
        run, v = self.probe_target(ns, "--no-v1")
        self.assertEqual(run.rc, 1, f"{ns.label}: {v.summary!r}; findings "
                                    f"{sorted(finding_ids(run.doc))}")
        self.assertEqual(v.distance, 2)
        self.assertEqual((v.reachable, v.imdsv2), ("yes", "no"), v.summary)
        self.assertNotIn("unreachable", v.summary.lower())
        self.assertIn("container-no-token", finding_ids(run.doc, v.target))
        self.assertNotIn("container-unreachable", finding_ids(run.doc, v.target))
        v4 = v.family("v4")
        self.assertEqual((v4.reachable, v4.imdsv2, v4.put_drop, v4.unreachable_reason),
                         ("yes", "no", "predicted", "none"), v4)
        self.assertTrue(v4.predicted, v4)
        v6 = v.family("v6")
        self.assertEqual((v6.reachable, v6.imdsv2, v6.unreachable_reason),
                         ("no", "no", "no-route"), v6)
        self.assert_headline_is_ipv4(v)
        self.assert_text_report_not_healthy(ns, "--no-v1")

    def test_an_ipv6_only_namespace_has_no_ipv4_route_and_a_working_imdsv2_over_ipv6(self):
        ns = self.v6_only
        run, v = self.probe_target(ns)
        self.assertEqual((v.reachable, v.imdsv2), ("no", "no"), v.summary)
        self.assertEqual(v.distance, 1)
        v4 = v.family("v4")
        self.assertEqual((v4.reachable, v4.imdsv2, v4.unreachable_reason),
                         ("no", "no", "no-route"), v4)
        v6 = v.family("v6")
        self.assertEqual((v6.reachable, v6.imdsv2, v6.put_drop, v6.unreachable_reason),
                         ("yes", "yes", "none", "none"), v6)
        self.assertFalse(v6.predicted, v6)
        self.assert_headline_is_ipv4(v)

    def test_a_dropped_put_seen_as_a_reset_means_no_token_and_costs_no_timeout(self):
        # Without packet TTLs nothing is predicted: the drop is observed, as the emulator's
        # RST 100 ms after the hop-limited response.
        self.lab.set_options(http_tokens="required", hop_limit=1)
        self.lab.set_faults(after_dropped_put="reset")
        ns = self.c1
        started = time.monotonic()
        run, v = self.probe_target(ns, "--no-packet-ttl", "--timeout", "5s")
        elapsed = time.monotonic() - started
        self.assertEqual(run.rc, 1, v.summary)
        self.assertFalse(run.doc["packet_ttl_available"])
        self.assertEqual((v.reachable, v.imdsv2, v.imdsv1), ("yes", "no", "no"), v.summary)
        self.assertIn("container-no-token", finding_ids(run.doc, v.target))
        self.assertLess(elapsed, 2.5, "the probe sat out a timeout instead of seeing the reset")
        self.assertLess(run.doc["duration_ms"], 2000)
        for family in ("v4", "v6"):
            with self.subTest(family=family):
                fv = v.family(family)
                self.assertEqual((fv.reachable, fv.imdsv2, fv.put_drop), ("yes", "no", "reset"),
                                 fv)
                self.assertFalse(fv.predicted, fv)
        self.assert_headline_is_ipv4(v)

    def test_an_ipv4_block_bypassed_over_ipv6_is_a_warning(self):
        # Blocking 169.254.169.254 (ECS awsvpc's blackhole, an iptables rule without its
        # ip6tables twin) while fd00:ec2::254 answers is no block at all.
        for ns, reason in ((self.blackholed_v4, "blackholed"), (self.firewalled_v4, "firewalled")):
            with self.subTest(ns=ns.label):
                run, v = self.probe_target(ns)
                bypass = [f for f in run.doc["findings"] if f["id"] == BYPASS_FINDING]
                self.assertEqual([f["severity"] for f in bypass], ["warning"],
                                 f"{ns.label}: findings {sorted(finding_ids(run.doc))}")
                self.assertFalse(run.doc["healthy"])
                self.assertEqual(run.rc, 1)
                self.assertEqual((v.reachable, v.imdsv2), ("no", "no"), v.summary)
                v4 = v.family("v4")
                self.assertEqual((v4.reachable, v4.unreachable_reason), ("no", reason), v4)
                v6 = v.family("v6")
                self.assertEqual((v6.reachable, v6.imdsv2, v6.unreachable_reason),
                                 ("yes", "yes", "none"), v6)
                self.assert_headline_is_ipv4(v)


def host_state(lab: Lab) -> dict[str, str]:
    """What --simulate-container may touch in the host namespace, and the global netns names."""
    state = {}
    for key, argv in {
        "links": ["ip", "-o", "link", "show"],
        "addresses": ["ip", "-o", "addr", "show"],
        "routes4": ["ip", "-4", "route", "show", "table", "all"],
        "routes6": ["ip", "-6", "route", "show", "table", "all"],
        "nftables": ["nft", "list", "ruleset"],
        "sysctl": ["sysctl", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                   "net.ipv4.conf.imds0.forwarding", "net.ipv4.conf.all.forwarding"],
    }.items():
        text = lab.exec(lab.host, argv).stdout
        if key in ("addresses", "routes6"):
            # Link-local addresses (and their local routes) come and go with the lab's own
            # links; the simulated veth's would go with the veth, which "links" checks.
            text = "\n".join(line for line in text.splitlines() if "fe80::" not in line)
        # Link state flags and counters move on their own; the set of names must not.
        if key == "links":
            text = "\n".join(sorted(line.split(":")[1].strip() for line in text.splitlines()))
        state[key] = text
    # Labs of other test runs come and go in /run/netns meanwhile: leave their names out.
    state["netns names"] = "\n".join(sorted(
        n for n in os.listdir("/run/netns") if not re.match(r"^il[0-9a-z]+-", n)))
    return state


class NamespacesDiscoveryCannotSee(LabCase):
    """Docker's /run/docker/netns as another mount namespace sees it: a container's namespace
    is bind-mounted onto a file of the directory in a mount namespace of its own (as dockerd
    does in its own, without propagation to the probe's), so from the probe's mount namespace
    the file is empty. That run must say so and never be healthy; the run inside the mount
    namespace that has the mounts finds the container and gives its verdict."""

    emulator_args = ["--http-tokens", "required", "--hop-limit", "1"]

    @classmethod
    def build(cls, lab: Lab) -> None:
        cls.c1 = lab.add_bridge_container("c1")
        cls.dir = lab.dir / "docker-netns"
        cls.dir.mkdir()
        (cls.dir / "4f2b8c1d9e0a").touch()  # the mount point, as dockerd makes it
        # Our own child, in a private mount namespace with the bind mount; ended by its pid.
        cls.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             f"mount --bind {cls.c1.path} {cls.dir}/4f2b8c1d9e0a && echo ready && exec sleep 600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cls.holder.stdout is not None
        line = cls.holder.stdout.readline()
        if line.strip() != "ready":
            cls.holder.kill()
            raise AssertionError(f"the bind mount failed: {cls.holder.stderr.read()}")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.holder.kill()
        cls.holder.communicate()
        super().tearDownClass()

    def discover(self, *argv_prefix: str) -> ProbeRun:
        self.lab.set_options(http_tokens="required", hop_limit=1)
        argv = [*argv_prefix, PROBE, "--timeout", "1s", "--json=short", "--all-containers",
                "--netns-dir", str(self.dir), "--no-proc-scan",
                "--exclude-netns", f"/proc/{os.getpid()}/ns/net"]
        proc = self.lab.exec(self.lab.host, argv, timeout=30)
        self.outputs += [proc.stdout, proc.stderr]
        run = ProbeRun(proc)
        self.assertIsNotNone(run.doc, proc.stderr)
        return run

    def test_invisible_bind_mounts_are_a_warning_and_never_healthy(self) -> None:
        run = self.discover()
        doc = run.doc
        assert doc is not None
        self.assertEqual(run.rc, 1, run.stdout)
        self.assertFalse(doc["healthy"])
        self.assertEqual(doc["discovery"]["containers_found"], 0)
        [look] = doc["discovery"]["netns_dirs"]
        self.assertEqual((look["entries"], look["usable"], look["unusable"]),
                         (1, 0, {"not_mounted_here": 1}))
        blind = [f for f in doc["findings"] if f["id"] == "discovery-blind"]
        self.assertEqual(len(blind), 1, doc["findings"])
        self.assertEqual(blind[0]["severity"], "warning")
        self.assertIn(f"{self.dir}: 1 of 1 entry is not a network namespace", blind[0]["summary"])
        self.assertIn("rslave", blind[0]["fix"])
        # The text report says what discovery looked at.
        text = self.lab.exec(self.lab.host, [
            PROBE, "--timeout", "1s", "--all-containers", "--netns-dir", str(self.dir),
            "--no-proc-scan", "--exclude-netns", f"/proc/{os.getpid()}/ns/net"], timeout=30)
        self.outputs += [text.stdout, text.stderr]
        self.assertEqual(text.returncode, 1)
        self.assertIn(f"containers: 0 found ({self.dir}: 1 entry, 0 usable (1 not mounted here); "
                      "/proc: skipped", text.stdout)
        self.assertNotIn("verdict: healthy", text.stdout)

    def test_the_mount_namespace_with_the_mounts_finds_the_container_and_its_verdict(self) -> None:
        run = self.discover("nsenter", "-t", str(self.holder.pid), "-m", "--")
        doc = run.doc
        assert doc is not None
        self.assertEqual(doc["discovery"]["containers_found"], 1)
        [look] = doc["discovery"]["netns_dirs"]
        self.assertEqual((look["entries"], look["usable"], look["unusable"]), (1, 1, {}))
        self.assertEqual([f for f in doc["findings"] if f["id"].startswith("discovery-")], [])
        v = verdicts(doc)["4f2b8c1d9e0a"]
        self.assertEqual((v["distance"], v["imdsv2"]), (1, "no"), v)
        self.assertEqual(run.rc, 1, "the container gets no token at hop limit 1")

    def test_the_agent_reports_the_same_in_its_status_metrics_and_one_event_per_change(
            self) -> None:
        work = Path(tempfile.mkdtemp(prefix="imds-discovery-agent-"))
        sock = str(work / "agent.sock")
        (work / "agent.conf").write_text(
            "interval = 1s\njitter = 0\nv1-interval = never\nrequest-timeout = 1s\n"
            f"proc-scan = no\nnetns-dir = {self.dir}\nsocket = {sock}\nwatch-callers = no\n")
        agent = start_agent(self.lab, AGENT, work / "agent.conf", work / "conf.d")

        def events() -> list[str]:
            with agent.lock:
                return [line for line in agent.lines if "IMDS_EVENT=discovery-changed" in line]

        def wait(what: str, pred: Any, timeout: float = 20) -> Any:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    if value := pred():
                        return value
                except (OSError, ValueError, KeyError):
                    pass
                if agent.proc.poll() is not None:
                    break
                time.sleep(0.2)
            with agent.lock:
                log = "\n".join(agent.lines[-20:])
            raise AssertionError(f"never: {what}\n{log}")

        def status() -> dict[str, Any]:
            code, _, body = unix_http(sock, "GET", "/v1/status", timeout=5)
            assert code == 200, body
            return json.loads(body)

        try:
            doc = wait("a first cycle", lambda: (d := status())["agent"]["cycles"] >= 1 and d)
            [look] = doc["discovery"]["netns_dirs"]
            self.assertEqual(look["unusable"], {"not_mounted_here": 1})
            self.assertIn("discovery-blind", [f["id"] for f in doc["findings"]])
            code, _, metrics = unix_http(sock, "GET", "/metrics", timeout=5)
            self.assertEqual(code, 200)
            self.assertEqual(metric_value(metrics, "imds_discovery_unusable_entries",
                                          dir=re.escape(str(self.dir)),
                                          problem="not_mounted_here"), 1, metrics)
            first = wait("the discovery-changed event", events)
            self.assertIn("IMDS_UNUSABLE_ENTRIES=1", first[0])
            # A second invisible container: one more event; then nothing while it holds.
            (self.dir / "6f5e4d3c2b1a").touch()
            wait("the second event", lambda: len(events()) == 2)
            self.assertIn("IMDS_UNUSABLE_ENTRIES=2", events()[1])
            cycles = status()["agent"]["cycles"]
            wait("three more cycles", lambda: status()["agent"]["cycles"] >= cycles + 3)
            self.assertEqual(len(events()), 2, "no event while nothing changes")
        finally:
            (self.dir / "6f5e4d3c2b1a").unlink(missing_ok=True)
            stop_process(agent.proc, timeout=20)
            if agent.proc.stdout is not None:
                agent.proc.stdout.close()
            shutil.rmtree(work, ignore_errors=True)


class SimulatedContainer(LabCase):
    """--simulate-container builds a one-hop bridge namespace and removes every trace."""

    def setUp(self) -> None:
        super().setUp()
        # Forwarding off, as on a fresh instance: the probe must switch it on and back off.
        self.lab.exec(self.lab.host, ["sysctl", "-q", "-w", "net.ipv4.conf.imds0.forwarding=0",
                                      "net.ipv6.conf.all.forwarding=0"])
        time.sleep(0.2)
        self.before = host_state(self.lab)

    def assert_no_trace(self) -> None:
        after = host_state(self.lab)
        for key in self.before:
            self.assertEqual(after[key], self.before[key], f"--simulate-container left {key}")

    def test_the_simulated_container_is_one_hop_away_and_leaves_no_trace(self):
        for hop, token in ((1, "no"), (2, "yes")):
            with self.subTest(hop_limit=hop):
                self.lab.set_options(hop_limit=hop)
                run = self.probe_json("--simulate-container", containers=False)
                v = verdicts(run.doc)["simulated"]
                self.assertEqual(v["distance"], 1)
                self.assertEqual(v["imdsv2"], token)
                self.assert_no_trace()

    def test_without_packet_sockets_a_one_hop_container_still_bounds_the_hop_limit(self):
        # The simulated container is one hop away by construction, so its token (or its
        # missing token) bounds the hop limit even without TTLs.
        for hop, bounds in ((2, (2, 64)), (1, (1, 1))):
            with self.subTest(hop_limit=hop):
                self.lab.set_options(hop_limit=hop)
                doc = self.probe_json("--simulate-container", "--no-packet-ttl",
                                      containers=False).doc
                self.assertIsNone(step(doc, "host", "token_put", "ipv4")["ttl"])
                limit = doc["inference"]["hop_limit"]
                self.assertEqual(limit["method"], "bounds", verdicts(doc)["simulated"])
                self.assertEqual((limit["lower"], limit["upper"]), bounds)
                self.assert_no_trace()

    def test_sigterm_during_the_run_still_removes_the_simulated_container(self):
        self.lab.set_faults(hang=True)
        proc = self.lab.popen(self.lab.host, [PROBE, "--simulate-container", "--timeout", "20s",
                                              "--json=short"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        try:
            for _ in range(200):  # until the veth exists in the host namespace
                links = self.lab.exec(self.lab.host, ["ip", "-o", "link", "show"]).stdout
                if "imdsim" in links:
                    break
                time.sleep(0.05)
            else:
                self.fail("the simulated container never appeared")
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
            self.outputs += [out, err]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # The hung requests of the killed run would linger in the emulator for a minute.
            self.lab.stop_emulator()
            self.lab.start_emulator()
        self.assertEqual(proc.returncode, -signal.SIGTERM)
        self.assert_no_trace()


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class AgentStatusClient(unittest.TestCase):
    """`imds-probe status` reads GET /v1/status from the agent's socket and never probes.
    A stand-in agent answers here, so the test needs no lab and no running imds-agent."""

    STATUS = {
        "schema_version": 2, "exit_code": 1, "healthy": False,
        "findings": [{"id": "container-no-token", "severity": "error",
                      "subjects": [{"name": "c1", "container_id": None, "distance": 1}],
                      "summary": "c1: no IMDSv2 token\x1b[31m", "detail": "", "fix": ""}],
        "agent": {"version": "0.1.0", "pid": 4242, "status": "1 container without a token",
                  "last_probe": "2026-11-29T01:00:00Z", "next_probe": None,
                  "options": {"http_tokens": "required", "hop_limit": "1",
                              "http_endpoint": "enabled", "ipv6": "disabled",
                              "tags": "disabled"},
                  "containers": [{"name": "c1", "imdsv2": "no", "verdict": "no token"}]},
    }

    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "agent.sock")
        self.paths: list[str] = []
        status, paths = self.STATUS, self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                paths.append(self.path)
                body = json.dumps(status).encode()
                self.send_response(200 if self.path == "/v1/status" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

        self.server = _UnixHTTPServer(self.socket, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def tearDown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.dir.cleanup()

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PROBE, *args, "--socket", self.socket], capture_output=True,
                              text=True, timeout=20, check=False,
                              env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"})

    def test_status_prints_the_agents_view_for_people_with_its_exit_status(self):
        r = self.status("status")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(self.paths, ["/v1/status"])
        self.assertIn("1 container without a token", r.stdout)
        self.assertIn("container-no-token", r.stdout)
        self.assertIn("HttpTokens=required", r.stdout)
        self.assertIsNone(ANSI.search(r.stdout), "escape sequences from the agent reached the tty")

    def test_agent_flag_with_json_prints_the_agents_document(self):
        r = self.status("--agent", "--json=short")
        self.assertEqual(json.loads(r.stdout), self.STATUS)

    def test_a_missing_agent_is_a_clear_error(self):
        r = subprocess.run([PROBE, "status", "--socket", self.socket + ".gone"],
                           capture_output=True, text=True, timeout=20, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("imds-agent running", r.stderr)


class SegmentsForgedInsideAContainer(LabCase):
    """A process with CAP_NET_RAW in a container answers the probe's connections over `lo`
    with forged SYN-ACKs and data "from" the IMDS at TTL 64 (zero hops). Only segments of
    the probe's own connection (its local address and port) arriving on the interface its
    SYN left by count, so the container's distance and verdict stay what the network gives."""

    FORGER = str(HERE / "forge_imds_segments.py")

    @classmethod
    def build(cls, lab: Lab) -> None:
        lab.add_bridge_container("c1")

    def start_forger(self, ns: Netns) -> subprocess.Popen[str]:
        forger = self.lab.popen(ns, [sys.executable, self.FORGER], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(self.stop_forger, forger)
        self.assertEqual(forger.stdout.readline().strip(), "ready", "the forger did not start")
        return forger

    @staticmethod
    def stop_forger(forger: subprocess.Popen[str]) -> str:
        if forger.poll() is None:
            forger.send_signal(signal.SIGTERM)
        try:
            out, err = forger.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            forger.kill()
            out, err = forger.communicate()
        return out + err

    def test_a_forged_handshake_over_lo_changes_neither_distance_nor_verdict(self):
        c1 = self.lab.containers[0]
        # The real answers' data comes 100 ms after the handshake: the forger's segments
        # arrive between the real SYN-ACK and the real data, where they count if trusted.
        self.lab.set_faults(delay_ms=100)
        forger = self.start_forger(c1)
        for hop, token in ((2, "yes"), (1, "no")):
            with self.subTest(hop_limit=hop):
                self.lab.set_options(hop_limit=hop)
                doc = self.probe_json("--timeout", "3s").doc
                v = verdicts(doc)["c1"]
                self.assertEqual(v["distance"], 1, v)
                self.assertEqual(v["imdsv2"], token, v)
                for family in ("ipv4", "ipv6"):
                    observed = [o for o in observations(doc, "c1") if o["family"] == family
                                and o.get("handshake_ttl") is not None]
                    self.assertTrue(observed, f"{family}: no handshake TTL seen at all")
                    for o in observed:
                        self.assertEqual(o["handshake_ttl"], 63, f"{family} {o['step']}")
                        self.assertNotEqual(o.get("ttl"), 64, f"{family} {o['step']}")
                self.assertEqual(doc["inference"]["hop_limit"]["exact"], hop)
        forged = self.stop_forger(forger)
        count = int(forged.split()[-1]) if forged.startswith("forged") else 0
        self.assertGreater(count, 0, f"nothing was forged: {forged!r}")
        print(f"\n  forged segments sent over lo: {count}", file=sys.stderr)


if __name__ == "__main__":
    skip_unless_lab_possible()
    for exe in (PROBE, str(BUILD_DIR / "tests" / "emulator" / "imds-emulator")):
        if not os.access(exe, os.X_OK):
            print(f"SKIP: {exe} is not built", file=sys.stderr)
            sys.exit(77)
    unittest.main(verbosity=2)
