#!/usr/bin/python3
"""Namespace churn: two names, x and y, in the lab's netns directory, each replaced again and
again by a new namespace (at least 1000 replacements in all) while imds-probe runs and the
agent probes on its own schedule and on demand (POST /v1/probe).

The incarnations alternate between two behaviours the probe cannot confuse: a bridge
container one hop away that gets a token, and a namespace with loopback only, where the
IMDS is "Network is unreachable". Every verdict reported for x or y names the namespace it
came from by inode; the test knows each inode's name, behaviour and lifetime, so it checks
that every verdict matches the incarnation that existed under that name (or that the probe
said it could not probe it: a namespace replaced between discovery and entering is the
target error "namespace changed"). Nothing may crash; the agent's descriptors and RSS must
stay flat (printed before and after).

Usage: test_churn.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import shutil
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (TOKEN_LIKE, Lab, Netns, UnixHTTPConnection, build_dir_from_argv,  # noqa: E402
                 skip_unless_lab_possible, stop_process)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
PROBE = str(BUILD_DIR / "probe" / "imds-probe")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")

REPLACEMENTS = int(os.environ.get("IMDS_CHURN_REPLACEMENTS", "1000"))
LABELS = ("x", "y")
# What may legitimately stop a probe from probing a churned namespace: it was replaced or
# deleted between discovery and entering.
NOT_PROBED = ("namespace changed", "cannot open network namespace", "No such file")
FD_SLACK = 3
RSS_SLACK_KIB = 16 * 1024


@dataclasses.dataclass
class Incarnation:
    label: str
    inode: int
    reachable: bool
    linked: float  # wall time the name started pointing at it
    retired: float | None = None  # wall time `ip netns del` was run

    def alive_during(self, t0: float, t1: float) -> bool:
        return self.linked <= t1 and (self.retired is None or self.retired >= t0)


def agent_resources(pid: int, settle: float = 3.0) -> tuple[int, int]:
    """(open descriptors, VmRSS in KiB) of a process this test started. The descriptors are
    the fewest seen over `settle` seconds: a probe in flight holds a few (namespaces,
    sockets) for a moment, which is not growth; a leak raises that floor."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    end = time.monotonic() + settle
    while time.monotonic() < end:
        time.sleep(0.05)
        fds = min(fds, len(os.listdir(f"/proc/{pid}/fd")))
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return fds, rss


def wall_of(rfc3339: str) -> float:
    """'2026-12-02T07:10:11.123Z' -> seconds since the epoch."""
    base, _, frac = rfc3339.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return secs + (float("0." + frac) if frac else 0.0)


class Verdicts:
    """Every verdict seen for x and y, checked against the incarnations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.incarnations: list[Incarnation] = []
        self.checked = 0
        self.not_probed = 0
        self.ambiguous = 0
        self.wrong: list[str] = []
        self.by_source: dict[str, int] = {}

    def add(self, inc: Incarnation) -> None:
        with self.lock:
            self.incarnations.append(inc)

    def check(self, source: str, doc: dict[str, Any], t0: float, t1: float) -> None:
        verdicts = doc["inference"]["targets"]
        for i, target in enumerate(doc["targets"]):
            label = os.path.basename(target["path"])
            if target["is_host"] or label not in LABELS:
                continue
            v = verdicts[i]
            self._check_one(source, label, target, v, t0, t1)

    def _check_one(self, source: str, label: str, target: dict[str, Any], v: dict[str, Any],
                   t0: float, t1: float) -> None:
        with self.lock:
            self.by_source[source] = self.by_source.get(source, 0) + 1
            if target.get("error"):
                if not any(p in target["error"] for p in NOT_PROBED):
                    self.wrong.append(f"{source}: {label}: unexpected target error "
                                      f"{target['error']!r}")
                elif v["reachable"] == "yes" or v["imdsv2"] == "yes":
                    self.wrong.append(f"{source}: {label} was not probed ({target['error']}) "
                                      f"but its verdict claims {v['summary']!r}")
                self.not_probed += 1
                return
            candidates = [c for c in self.incarnations
                          if c.inode == target["inode"] and c.alive_during(t0, t1)]
            if not candidates:
                self.wrong.append(f"{source}: {label}: inode {target['inode']} belongs to no "
                                  f"namespace of this test during the run")
                return
            kinds = {(c.label, c.reachable) for c in candidates}
            if len(kinds) > 1:  # the kernel reused the inode within the window
                self.ambiguous += 1
                return
            (owner, reachable), = kinds
            if owner != label:
                self.wrong.append(f"{source}: {owner}'s namespace (inode {target['inode']}) "
                                  f"reported under {label}")
                return
            got_reachable = v["reachable"] == "yes" and v["imdsv2"] == "yes"
            got_unreachable = v["reachable"] == "no" and "no route" in v["summary"]
            if (reachable and not got_reachable) or (not reachable and not got_unreachable):
                c = candidates[0]
                life = (f"linked {c.linked - t0:+.3f}s, retired "
                        f"{'-' if c.retired is None else f'{c.retired - t0:+.3f}s'} "
                        f"from the run's start, run {t1 - t0:.3f}s")
                self.wrong.append(
                    f"{source}: {label} (inode {target['inode']}, "
                    f"{'reachable' if reachable else 'loopback only'}; {life}) got "
                    f"{v['reachable']}/{v['imdsv2']}: {v['summary']!r}")
                return
            self.checked += 1


class NamespaceChurn(unittest.TestCase):
    def test_churned_namespaces_are_never_reported_under_the_wrong_name(self) -> None:
        t_start = time.monotonic()
        seen = Verdicts()
        with Lab(BUILD_DIR, emulator_args=["--http-tokens", "optional", "--hop-limit", "2"]) as lab:
            work = Path(tempfile.mkdtemp(prefix="imds-churn-"))
            try:
                self._run(lab, work, seen)
            finally:
                shutil.rmtree(work, ignore_errors=True)
                forbidden = lab.forbidden_requests()
            self.assertEqual(forbidden, [])
        took = time.monotonic() - t_start
        print(f"\nchurn: {REPLACEMENTS} replacements, {seen.checked} verdicts checked "
              f"({seen.by_source}), {seen.not_probed} not probed (replaced between discovery "
              f"and entering), {seen.ambiguous} skipped (inode reused within a run); "
              f"wall time {took:.1f}s", file=sys.stderr)
        self.assertEqual(seen.wrong[:20], [], f"{len(seen.wrong)} wrong verdicts")
        self.assertGreater(seen.checked, 100, "too few verdicts to prove anything")

    def _run(self, lab: Lab, work: Path, seen: Verdicts) -> None:
        current: dict[str, tuple[Netns, Incarnation]] = {}

        def incarnate(label: str, reachable: bool) -> None:
            ns = lab.add_incarnation(label, reachable)
            inc = Incarnation(label, os.stat(ns.path).st_ino, reachable, linked=time.time())
            seen.add(inc)
            old = current.get(label)
            current[label] = (ns, inc)
            if old is not None:
                with seen.lock:
                    old[1].retired = time.time()
                lab.retire(old[0])

        incarnate("x", True)
        incarnate("y", False)

        sock = str(work / "agent.sock")
        conf = work / "agent.conf"
        conf.write_text("interval = 1s\njitter = 0\nv1-interval = never\nmin-probe-gap = 200ms\n"
                        "backoff-max = 2s\nrequest-timeout = 1s\nproc-scan = no\n"
                        f"netns-dir = {lab.netns_dir}\nsocket = {sock}\nlog-level = info\n")
        log = open(work / "agent.log", "w+")
        agent = lab.popen(lab.host, [AGENT, "--config", str(conf), "--config-dir",
                                     str(work / "conf.d")],
                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        stop = threading.Event()
        failures: list[str] = []
        counts = {"probe --netns": 0, "probe --all-containers": 0, "POST /v1/probe": 0}

        def api(method: str, path: str) -> tuple[int, dict[str, Any] | None]:
            conn = UnixHTTPConnection(sock, timeout=20)
            try:
                conn.request(method, path)
                r = conn.getresponse()
                body = r.read()
                return r.status, json.loads(body) if r.status == 200 else None
            finally:
                conn.close()

        deadline = time.monotonic() + 20
        while True:
            try:
                status, doc = api("GET", "/v1/status")
                if status == 200 and doc and doc["agent"]["cycles"] >= 1:
                    break
            except OSError:
                pass
            self.assertIsNone(agent.poll(), "imds-agent exited before its first cycle")
            self.assertLess(time.monotonic(), deadline, "no first cycle within 20 s")
            time.sleep(0.2)
        time.sleep(1.5)  # a few cycles: allocations of the steady state are made
        before = agent_resources(agent.pid)

        def probe_loop(name: str, argv: list[str]) -> None:
            while not stop.is_set():
                t0 = time.time()
                try:
                    r = lab.exec(lab.host, argv, timeout=20)
                except subprocess.TimeoutExpired:
                    failures.append(f"{name}: no exit within 20 s")
                    return
                t1 = time.time()
                counts[name] += 1
                if r.returncode < 0 or r.returncode > 3:
                    failures.append(f"{name}: exit {r.returncode}: {r.stderr[-500:]}")
                    continue
                if TOKEN_LIKE.search(r.stdout + r.stderr):
                    failures.append(f"{name}: something token-like in the output")
                if r.returncode == 2:
                    # The name's namespace was deleted between reading the link and opening.
                    if not any(p in r.stderr for p in NOT_PROBED):
                        failures.append(f"{name}: exit 2: {r.stderr[-500:]}")
                    continue
                seen.check(name, json.loads(r.stdout), t0, t1)

        def demand_loop() -> None:
            while not stop.is_set():
                t0 = time.time()
                try:
                    status, doc = api("POST", "/v1/probe")
                except OSError as e:
                    failures.append(f"POST /v1/probe: {e}")
                    return
                if status == 200 and doc is not None and "targets" in doc:
                    counts["POST /v1/probe"] += 1
                    started = wall_of(doc["started_at"])
                    seen.check("POST /v1/probe", doc, min(t0, started), time.time())
                elif status not in (200, 429, 503):
                    failures.append(f"POST /v1/probe answered {status}")
                time.sleep(0.05)

        base = ["--timeout", "1s", "--deadline", "3s", "--json=short", "--no-v1"]
        threads = [
            threading.Thread(target=probe_loop, args=("probe --netns", [
                PROBE, "--netns", os.path.join(lab.netns_dir, "x"),
                "--netns", os.path.join(lab.netns_dir, "y"), *base])),
            threading.Thread(target=probe_loop, args=("probe --all-containers", [
                PROBE, "--all-containers", "--netns-dir", lab.netns_dir, "--no-proc-scan",
                *base])),
            threading.Thread(target=demand_loop),
        ]
        for t in threads:
            t.start()
        try:
            for i in range(REPLACEMENTS):
                label = LABELS[i % 2]
                # Each name alternates: x starts reachable, y loopback-only, and each
                # replacement flips the behaviour of the name it replaces.
                incarnate(label, not current[label][1].reachable)
                if agent.poll() is not None:
                    self.fail(f"imds-agent exited {agent.returncode} during churn")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        self.assertEqual(failures, [])
        # Let the agent settle on the last incarnations, then measure.
        time.sleep(2.5)
        self.assertIsNone(agent.poll(), "imds-agent exited")
        after = agent_resources(agent.pid)
        print(f"\nagent fds {before[0]} -> {after[0]}, VmRSS {before[1]} KiB -> {after[1]} KiB; "
              f"runs: {counts}", file=sys.stderr)
        status, doc = api("GET", "/v1/status")
        self.assertEqual(status, 200)
        assert doc is not None
        names = sorted(c["name"] for c in doc["agent"]["containers"])
        self.assertEqual(names, ["x", "y"], "the agent still lists replaced namespaces")
        self.assertEqual(stop_process(agent, timeout=20), 0)
        log.seek(0)
        text = log.read()
        log.close()
        self.assertIsNone(TOKEN_LIKE.search(text), "something token-like in the agent's log")
        self.assertLessEqual(after[0], before[0] + FD_SLACK, "the agent's descriptors grew")
        self.assertLessEqual(after[1], before[1] + RSS_SLACK_KIB, "the agent's RSS grew")
        for name, n in counts.items():
            self.assertGreater(n, 0, f"no {name} completed during the churn")


if __name__ == "__main__":
    skip_unless_lab_possible()
    unittest.main(verbosity=2)
