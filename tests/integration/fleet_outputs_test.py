#!/usr/bin/python3
"""imds-agent's fleet outputs, read by the engines that collect them on real fleets:

- `textfile-dir`: Debian's prometheus-node-exporter, started on the lab host's loopback with
  only its textfile collector on that directory, is scraped with curl: the agent's metrics
  are there, node_exporter found no error in the file, and a change of options reaches the
  scrape after the next cycle; a stopped agent's file is gone (a stale file would be scraped
  as current for ever).
- `ssm-inventory-dir`: the custom inventory file is checked here against the limits of SSM
  Inventory's InventoryItem (the PutInventory API: TypeName, SchemaVersion, CaptureTime
  patterns, 10000 entries of at most 50 string attributes, keys 1-64 and values 0-4096
  characters) by this test's own reading of them, not the agent's; a directory that goes
  away is an error in /v1/status, the agent keeps running, and the file is back when the
  directory is.

Usage: fleet_outputs_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (AgentBeside, Lab, build_dir_from_argv, check_prometheus_text,  # noqa: E402
                 metric_value, skip_unless_lab_possible, start_agent, stop_process)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
SCRAPE = "http://127.0.0.1:9100/metrics"  # the lab host's own loopback

# SSM Inventory's InventoryItem, as the PutInventory API reference states it.
CAPTURE_TIME = re.compile(r"^(20)[0-9][0-9]-(0[1-9]|1[012])-([12][0-9]|3[01]|0[1-9])(T)"
                          r"(2[0-3]|[0-1][0-9])(:[0-5][0-9])(:[0-5][0-9])(Z)$")
SCHEMA_VERSION = re.compile(r"^([0-9]{1,6})(\.[0-9]{1,6})$")


def inventory_problems(doc: Any) -> list[str]:
    """Every way `doc` breaks the InventoryItem rules (empty: none)."""
    out: list[str] = []
    if not isinstance(doc, dict):
        return ["not an object"]
    type_name = doc.get("TypeName")
    if not (isinstance(type_name, str) and 1 <= len(type_name) <= 100
            and type_name.startswith("Custom:")):
        out.append(f"TypeName {type_name!r}")
    if not (isinstance(doc.get("SchemaVersion"), str)
            and SCHEMA_VERSION.match(doc["SchemaVersion"])):
        out.append(f"SchemaVersion {doc.get('SchemaVersion')!r}")
    if not (isinstance(doc.get("CaptureTime"), str) and CAPTURE_TIME.match(doc["CaptureTime"])):
        out.append(f"CaptureTime {doc.get('CaptureTime')!r}")
    content = doc.get("Content")
    if not isinstance(content, list) or len(content) > 10000:
        return out + ["Content is not a list of at most 10000 entries"]
    for i, entry in enumerate(content):
        if not isinstance(entry, dict) or len(entry) > 50:
            out.append(f"Content[{i}] is not a map of at most 50 entries")
            continue
        for k, v in entry.items():
            if not 1 <= len(k) <= 64:
                out.append(f"Content[{i}] key {k!r}")
            if not isinstance(v, str) or len(v) > 4096:
                out.append(f"Content[{i}].{k} is not a string of at most 4096 characters")
    return out


class FleetOutputs(AgentBeside):
    exporter: subprocess.Popen[bytes] | None = None

    @classmethod
    def setUpClass(cls) -> None:
        skip_unless_lab_possible(["curl", NODE_EXPORTER])
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "required", "--hop-limit", "1"])
        cls.work = Path(tempfile.mkdtemp(prefix="imds-fleet-"))
        try:
            cls.c1 = cls.lab.add_bridge_container("c1")
            cls.textfile_dir = cls.work / "node-exporter"
            cls.inventory_dir = cls.work / "inventory"
            for d in (cls.textfile_dir, cls.inventory_dir):
                d.mkdir()
            os.chmod(cls.work, 0o755)
            cls.socket = str(cls.work / "agent.sock")
            conf = cls.work / "agent.conf"
            conf.write_text(
                "interval = 2s\njitter = 0\nv1-interval = 0\nmin-probe-gap = 1s\n"
                "request-timeout = 1s\nproc-scan = no\nwatch-callers = no\nmin-event-gap = 1s\n"
                f"netns-dir = {cls.lab.netns_dir}\nsocket = {cls.socket}\n"
                f"textfile-dir = {cls.textfile_dir}\nssm-inventory-dir = {cls.inventory_dir}\n")
            cls.agent = start_agent(cls.lab, AGENT, conf, cls.work / "conf.d")
            cls.exporter_log = open(cls.work / "node-exporter.log", "wb")
            cls.exporter = cls.lab.popen(cls.lab.host, [
                NODE_EXPORTER, "--web.listen-address=127.0.0.1:9100",
                "--collector.disable-defaults", "--collector.textfile",
                f"--collector.textfile.directory={cls.textfile_dir}"],
                stdin=subprocess.DEVNULL, stdout=cls.exporter_log, stderr=subprocess.STDOUT)
        except BaseException:
            cls.close()
            raise

    @classmethod
    def close(cls) -> None:
        try:
            if cls.exporter is not None:
                stop_process(cls.exporter, timeout=10)
        finally:
            super().close()

    def setUp(self) -> None:
        self.outputs: list[str] = []

    def tearDown(self) -> None:
        if self.agent is not None:
            self.outputs.append("\n".join(self.agent.lines))
        for d in (self.textfile_dir, self.inventory_dir):
            for f in d.glob("*") if d.is_dir() else []:
                self.outputs.append(f.read_text(errors="replace"))
        self.lab.assert_nothing_secret(self, self.outputs)

    # ----- helpers -----

    def scrape(self) -> str:
        """node_exporter's whole answer, read with curl in the lab host."""
        deadline = time.monotonic() + 15
        while True:
            r = self.lab.exec(self.lab.host, ["curl", "-sS", "--max-time", "5", SCRAPE],
                              timeout=10)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # node_exporter may still be starting
        self.assertEqual(r.returncode, 0, f"curl {SCRAPE}: {r.stderr}")
        self.outputs.append(r.stdout)
        return r.stdout

    def wait_scrape(self, what: str, pred: Any, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.scrape()
            if pred(text):
                return text
            time.sleep(0.3)
        self.fail(f"node_exporter never showed {what}:\n{text[-3000:]}")

    def inventory(self) -> dict[str, Any]:
        text = (self.inventory_dir / "ImdsPosture.json").read_text()
        self.outputs.append(text)
        return json.loads(text)

    def by_namespace(self, doc: dict[str, Any]) -> dict[str, dict[str, str]]:
        return {("host" if e["Namespace"] == "host" else Path(e["Namespace"]).name): e
                for e in doc["Content"]}

    # ----- the tests, in order: each builds on the state the last one left -----

    def test_1_node_exporter_serves_the_agents_metrics_from_the_textfile(self) -> None:
        # Written after the cycle that confirmed c1's verdict (an alarm is re-probed first).
        agent = self.wait_status(lambda a: a["outputs"]["textfile"]["last_written"] and any(
            c["name"] == "c1" and c["imdsv2"] != "unknown" for c in a["containers"]) and
            not a["suspected"])
        self.assertIsNone(agent["outputs"]["textfile"]["error"])
        self.assertEqual(agent["outputs"]["textfile"]["path"],
                         str(self.textfile_dir / "imds_agent.prom"))
        text = self.wait_scrape("the agent's metrics", lambda t: "imds_probe_cycles_total" in t)
        self.assertIn("node_textfile_scrape_error 0\n", text)
        self.assertRegex(text, r'node_textfile_mtime_seconds\{file="[^"]*imds_agent\.prom"\} ')
        self.assertIn("imds_http_tokens_required 1\n", text)
        self.assertIn("imds_hop_limit 1\n", text)
        self.assertEqual(metric_value(text, "imds_target_imdsv2_ok", netns=".*/c1"), 0)
        self.assertEqual(metric_value(text, "imds_target_imdsv2_ok", netns="host"), 1)
        # The file itself is what the socket serves, in the text format.
        textfile = (self.textfile_dir / "imds_agent.prom").read_text()
        check_prometheus_text(textfile)
        self.assertEqual(list(self.textfile_dir.iterdir()),
                         [self.textfile_dir / "imds_agent.prom"], "no temporary file is left")
        self.assertEqual((self.textfile_dir / "imds_agent.prom").stat().st_mode & 0o777, 0o644)

    def test_2_the_inventory_file_is_a_custom_inventory_item_within_ssms_limits(self) -> None:
        self.wait_status(lambda a: a["outputs"]["ssm_inventory"]["last_written"])
        doc = self.inventory()
        self.assertEqual(inventory_problems(doc), [])
        self.assertEqual(doc["TypeName"], "Custom:ImdsPosture")
        self.assertLess(len(json.dumps(doc)), 200 * 1024)
        entries = self.by_namespace(doc)
        self.assertEqual(sorted(entries), ["c1", "host"])
        self.assertEqual(doc["Content"][0]["Namespace"], "host", "the host comes first")
        self.assertEqual(entries["host"]["Imdsv2"], "yes")
        self.assertEqual(entries["c1"]["Imdsv2"], "no")
        self.assertEqual(entries["c1"]["Hops"], "1")
        for e in entries.values():
            self.assertEqual(e["HttpTokens"], "required")
            self.assertEqual(e["HopLimit"], "1")

    def test_3_a_change_of_options_reaches_both_files_after_the_next_cycle(self) -> None:
        self.lab.set_options(hop_limit=2)
        self.wait_scrape("hop limit 2 and c1 with IMDSv2",
                         lambda t: "imds_hop_limit 2\n" in t and metric_value(
                             t, "imds_target_imdsv2_ok", netns=".*/c1") == 1)
        deadline = time.monotonic() + 20
        while self.by_namespace(self.inventory())["c1"]["Imdsv2"] != "yes":
            self.assertLess(time.monotonic(), deadline, "the inventory never showed c1's IMDSv2")
            time.sleep(0.3)
        doc = self.inventory()
        self.assertEqual(inventory_problems(doc), [])
        self.assertEqual(self.by_namespace(doc)["c1"]["HopLimit"], "2")

    def test_4_a_directory_that_goes_away_is_an_error_and_the_file_comes_back(self) -> None:
        moved = self.work / "inventory-moved"
        self.inventory_dir.rename(moved)
        try:
            agent = self.wait_status(lambda a: a["outputs"]["ssm_inventory"]["error"])
            out = agent["outputs"]["ssm_inventory"]
            self.assertIn(str(self.inventory_dir), out["error"])
            self.assertIn("No such file or directory", out["error"])
            self.assertGreaterEqual(out["failures_total"], 1)
            # Said once in the log, not once per cycle.
            cycles = agent["cycles"]
            self.wait_status(lambda a: a["cycles"] >= cycles + 2)
            said = [line for line in self.agent.lines if "cannot write" in line]
            self.assertEqual(len(said), 1, said)
            # The other output goes on.
            self.assertIsNone(self.status()["outputs"]["textfile"]["error"])
        finally:
            moved.rename(self.inventory_dir)
        agent = self.wait_status(lambda a: a["outputs"]["ssm_inventory"]["error"] is None)
        self.assertIsNone(self.agent.proc.poll(), "the agent kept running")
        self.assertEqual(inventory_problems(self.inventory()), [])
        self.assertTrue(any("written again" in line for line in self.agent.lines))

    def test_9_a_stopped_agent_leaves_no_textfile_but_its_inventory(self) -> None:
        self.assertEqual(stop_process(self.agent.proc, timeout=20), 0)
        self.assertFalse((self.textfile_dir / "imds_agent.prom").exists())
        self.assertTrue((self.inventory_dir / "ImdsPosture.json").exists())
        text = self.scrape()
        self.assertNotIn("imds_probe_cycles_total", text)
        self.assertIn("node_textfile_scrape_error 0\n", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
