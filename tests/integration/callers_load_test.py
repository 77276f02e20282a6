#!/usr/bin/python3
"""The agent's passive caller watch under load: a few thousand tokenless GETs from several
container namespaces at once (curl, one connection each, in a bounded loop), and a few with
IMDSv2 from the host, while imds-agent watches (watch-callers = yes).

- Nothing is misattributed: each container's record holds exactly the IMDSv1 calls it sent,
  the host's exactly its IMDSv2 calls, nobody else appears; unless the kernel says it dropped
  packets (then the test says so and counts as failed: the watch must keep up with this).
- No event flood: one imdsv1-caller event per container, nothing else from the watch.
- Memory flat: the agent's RSS after the load is within a few MiB of its RSS before it (the
  connection table is bounded; the counters are per caller).

Usage: callers_load_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (IMDS_V4, AgentBeside, Lab, TOKEN_LIKE,  # noqa: E402
                 build_dir_from_argv, skip_unless_lab_possible, start_agent)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
PROBE = str(BUILD_DIR / "probe" / "imds-probe")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")
CONTAINERS = 4
PER_CONTAINER = 750
HOST_V2 = 50
# RSS growth allowed across the load: the connection table (1024 entries) and allocator
# slack, far below what one record per request would take.
RSS_SLACK_KIB = 6 * 1024

# Sequential tokenless GETs, each its own connection (Connection: close), bounded in count.
BURST = r"""
i=0
while [ "$i" -lt "$1" ]; do
  curl -s -o /dev/null -m 3 -H "Connection: close" "http://%s/latest/meta-data/ami-id"
  i=$((i + 1))
done
""" % IMDS_V4
# The host's IMDSv2 flow: a token PUT, then GETs with it; the token stays in the shell.
HOST_FLOW = r"""
t=$(curl -s -m 3 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
    "http://%s/latest/api/token") || exit 1
i=0
while [ "$i" -lt "$1" ]; do
  curl -s -o /dev/null -m 3 -H "X-aws-ec2-metadata-token: $t" \
    "http://%s/latest/meta-data/instance-id" || exit 1
  i=$((i + 1))
done
""" % (IMDS_V4, IMDS_V4)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class CallersUnderLoad(AgentBeside):
    @classmethod
    def setUpClass(cls) -> None:
        skip_unless_lab_possible(["curl"])
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "optional", "--hop-limit", "2"])
        cls.work = Path(tempfile.mkdtemp(prefix="imds-callers-load-"))
        cls.agent = None
        try:
            cls.containers = [cls.lab.add_bridge_container(f"load{i}", families=("v4",))
                              for i in range(CONTAINERS)]
            cls.socket = str(cls.work / "agent.sock")
            conf = cls.work / "agent.conf"
            conf.write_text(
                "interval = 1h\nv1-interval = never\nrequest-timeout = 1s\nproc-scan = no\n"
                "ipv6 = no\ncaller-processes = no\n"
                f"netns-dir = {cls.lab.netns_dir}\nsocket = {cls.socket}\n")
            cls.agent = start_agent(cls.lab, AGENT, conf, cls.work / "conf.d")
            cls.wait_status(lambda a: a["cycles"] >= 1 and not a["probing"] and
                            a["callers_watch"]["state"] == "running")
            time.sleep(3.5)  # the agent's own probe is over (and left out anyway)
            cls.rss_before = rss_kib(cls.agent.proc.pid)
            started = time.monotonic()
            procs = [cls.lab.popen(ns, ["sh", "-c", BURST, "burst", str(PER_CONTAINER)])
                     for ns in cls.containers]
            procs.append(cls.lab.popen(cls.lab.host, ["sh", "-c", HOST_FLOW, "flow",
                                                      str(HOST_V2)]))
            for p in procs:
                p.wait(timeout=600)
            cls.load_s = time.monotonic() - started
            cls.host_flow_rc = procs[-1].returncode
        except BaseException:
            cls.close()
            raise

    def record(self, pred: Any) -> dict[str, Any]:
        return self.callers_record(PROBE, pred, timeout=20)

    def test_every_request_is_booked_to_its_sender_and_nothing_else(self) -> None:
        self.assertEqual(self.host_flow_rc, 0, "the host's IMDSv2 flow failed")
        sent = {f"load{i}": PER_CONTAINER for i in range(CONTAINERS)}

        def booked(r: dict[str, Any]) -> dict[str, int]:
            return {c["where"]: c["imdsv1_calls"] for c in r["callers"] if c["imdsv1_calls"]}
        record = self.record(lambda r: booked(r) == sent)
        self.assertEqual(record["packets"]["dropped_by_kernel"], 0,
                         "the kernel dropped packets: the watch did not keep up")
        self.assertEqual(booked(record), sent, json.dumps(record["callers"], indent=1))
        by_where = {c["where"]: c for c in record["callers"]}
        self.assertEqual(sorted(by_where), sorted([*sent, "host"]))
        host = by_where["host"]
        self.assertEqual(host["imdsv2_calls"], HOST_V2, host)
        self.assertEqual(host["imdsv1_calls"], 0, host)
        for where in sent:
            c = by_where[where]
            self.assertEqual(c["imdsv2_calls"], 0, c)
            self.assertEqual(c["imdsv1_fallback_calls"], 0, c)
            self.assertEqual((c["sdk"] or {}).get("product"), "curl", c)
        total = CONTAINERS * PER_CONTAINER + HOST_V2
        print(f"\ncallers under load: {total} requests in {self.load_s:.1f} s, "
              f"{record['packets']['seen']} packets seen, all booked to their sender",
              file=sys.stderr)

    def test_one_event_per_caller_and_no_flood(self) -> None:
        self.record(lambda r: sum(c["imdsv1_calls"] for c in r["callers"])
                    >= CONTAINERS * PER_CONTAINER)
        time.sleep(1)
        with self.agent.lock:
            lines = list(self.agent.lines)
        v1 = [ln for ln in lines if "IMDS_EVENT=imdsv1-caller" in ln]
        self.assertEqual(len(v1), CONTAINERS, v1)
        for i in range(CONTAINERS):
            self.assertEqual(len([ln for ln in v1 if f"load{i} " in ln or f"load{i}," in ln
                                  or f"IMDS_CALLER=load{i}" in ln]), 1, v1)
        events = [ln for ln in lines if "IMDS_EVENT=" in ln]
        # started, first-verdict and the four caller events: nothing else.
        self.assertLessEqual(len(events), 2 + CONTAINERS, events)
        self.assertIsNone(TOKEN_LIKE.search("\n".join(lines)))

    def test_memory_stays_flat(self) -> None:
        self.record(lambda r: sum(c["imdsv1_calls"] for c in r["callers"])
                    >= CONTAINERS * PER_CONTAINER)
        after = rss_kib(self.agent.proc.pid)
        print(f"\ncallers under load: agent RSS {self.rss_before} KiB before, {after} KiB after",
              file=sys.stderr)
        self.assertLessEqual(after - self.rss_before, RSS_SLACK_KIB)

    def tearDown(self) -> None:
        self.assertEqual(self.lab.forbidden_requests(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
