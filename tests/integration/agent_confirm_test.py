#!/usr/bin/python3
"""Events people can trust, in the lab: imds-agent (confirm = 2, the default) while the lab
host's IMDS packets are dropped for short spells, then a real change of options, in one run.

- Short spells of loss: nftables in the lab's host namespace drops every packet to and from
  the IMDS for 1.5 s, three times, 6 s apart. A probe that meets a spell gets no answer; a
  spell is too short for three probes in a row (each waits request-timeout = 1 s, then
  min-probe-gap = 200 ms), so no loss may become an event. That the spells did hit probes
  is checked too: /v1/status counts the suspicions that did not hold.
- The real change: hop limit 2 -> 1, so container c1 loses its token. Exactly one
  option-changed and one container-imdsv2-lost reach the log, after their re-probes.
- Nothing else: no imds-unreachable, no imds-back, no flapping.

Usage: agent_confirm_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (AgentBeside, Lab, TOKEN_LIKE, build_dir_from_argv,  # noqa: E402
                 skip_unless_lab_possible, start_agent)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")
EVENT_RE = re.compile(r"IMDS_EVENT=([a-z0-9-]+)\)$")
SPELL_S = 1.5
SPELLS = 3

DROP = """table inet confirmtest {
  chain out { type filter hook output priority -10; ip daddr 169.254.169.254 drop; }
  chain in { type filter hook input priority -10; ip saddr 169.254.169.254 drop; }
}
"""


class ConfirmedEventsOnly(AgentBeside):
    @classmethod
    def setUpClass(cls) -> None:
        skip_unless_lab_possible()
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "required", "--hop-limit", "2"])
        cls.work = Path(tempfile.mkdtemp(prefix="imds-confirm-"))
        try:
            cls.c1 = cls.lab.add_bridge_container("c1", families=("v4",))
            cls.socket = str(cls.work / "agent.sock")
            conf = cls.work / "agent.conf"
            conf.write_text(
                "interval = 1s\njitter = 0\nv1-interval = never\nmin-probe-gap = 200ms\n"
                "request-timeout = 1s\nbackoff-max = 2s\nipv6 = no\nproc-scan = no\n"
                "watch-callers = no\nconfirm = 2\nmin-event-gap = 5s\n"
                f"netns-dir = {cls.lab.netns_dir}\nsocket = {cls.socket}\nlog-level = debug\n")
            cls.agent = start_agent(cls.lab, AGENT, conf, cls.work / "conf.d")
        except BaseException:
            cls.close()
            raise

    def events(self) -> list[str]:
        return [m.group(1) for line in list(self.agent.lines)
                if (m := EVENT_RE.search(line))]

    def nft(self, *args: str, script: str | None = None) -> None:
        r = self.lab.exec(self.lab.host, ["nft", *args], timeout=10, input=script)
        self.assertEqual(r.returncode, 0, f"nft {args}: {r.stderr}")

    def test_short_losses_stay_suspicions_and_only_the_real_change_is_reported(self) -> None:
        self.wait_status(lambda a: a["ready"] and a["cycles"] >= 2)
        self.assertEqual(self.events(), ["started", "first-verdict"])

        for _ in range(SPELLS):
            self.nft("-f", "-", script=DROP)
            try:
                time.sleep(SPELL_S)
            finally:
                self.nft("delete", "table", "inet", "confirmtest")
            time.sleep(6)
        agent: dict[str, Any] = self.status()
        self.assertGreaterEqual(agent["changes"]["unconfirmed_total"], 1,
                                "no probe met a spell of loss: the test proved nothing")
        self.assertGreaterEqual(agent["changes"]["confirm_probes_total"], 1)
        self.assertEqual(self.events(), ["started", "first-verdict"],
                         "a short loss reached the journal as a fact")

        # The real change.
        self.lab.set_options(hop_limit=1)
        self.wait_status(lambda a: any(c["name"] == "c1" and c["imdsv2"] == "no"
                                       for c in a["containers"]), timeout=30)
        time.sleep(3)  # more cycles: each change is reported once
        events = self.events()
        self.assertEqual(events.count("option-changed"), 1, events)
        self.assertEqual(events.count("container-imdsv2-lost"), 1, events)
        for never in ("imds-unreachable", "imds-back", "flapping", "container-imdsv2-gained"):
            self.assertNotIn(never, events)
        lost = [line for line in self.agent.lines if "IMDS_EVENT=container-imdsv2-lost" in line]
        self.assertIn("c1", lost[0])
        self.assertEqual(self.status()["suspected"], [])
        print(f"\nagent_confirm: {agent['changes']['unconfirmed_total']} suspicion(s) that did "
              f"not hold, {self.status()['changes']['confirm_probes_total']} re-probes; events: "
              f"{events}", file=sys.stderr)

    def tearDown(self) -> None:
        self.assertIsNone(TOKEN_LIKE.search("\n".join(self.agent.lines)))
        self.assertEqual(self.lab.forbidden_requests(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
