#!/usr/bin/python3
"""imds-probe and imds-agent against containers a real Docker engine made (docker_lab.py):
`web` on a user-defined bridge network, `worker` on the default bridge, `hostnet` with
`--network host`, under HttpTokens=required.

- From a mount namespace without dockerd's bind mounts (the test's own, like a tool
  container without mount propagation) the namespace files are empty: a warning, exit 1,
  never healthy, at hop limit 1 and at hop limit 2 alike.
- From dockerd's mount namespace the directory scan finds both, names both, and gives each
  its verdict (no token at hop limit 1, IMDSv2 at 2).
- The /proc scan alone (no namespace directory) finds the same, inside dockerd's PID
  namespace, where it sees only the lab's processes.
- The agent does the same, names them in /v1/status and the journal, and diagnoses a new
  container within seconds of `docker run`.

Usage: docker_test.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from docker_lab import DockerEngine, skip_unless_docker_possible  # noqa: E402
from lab import (Lab, LoggedProcess, build_dir_from_argv, metric_value,  # noqa: E402
                 skip_unless_lab_possible, stop_process, unix_http, wait_packet_sockets)

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")
PROBE = str(BUILD_DIR / "probe" / "imds-probe")
AGENT = str(BUILD_DIR / "agent" / "imds-agent")


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str]):
        self.rc = proc.returncode
        self.stdout, self.stderr = proc.stdout, proc.stderr
        self.doc: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}

    def verdicts(self) -> dict[str, dict[str, Any]]:
        return {v["target"]: v for v in self.doc["inference"]["targets"]}

    def names(self) -> dict[str, str | None]:
        """Target name (the 12-hex id) -> Docker name, for the containers."""
        return {t["name"]: t.get("container_name") for t in self.doc["targets"]
                if not t["is_host"]}

    def finding_ids(self) -> list[str]:
        return [f["id"] for f in self.doc["findings"]]


class RealDockerContainers(unittest.TestCase):
    lab: Lab
    engine: DockerEngine

    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, emulator_args=["--http-tokens", "required", "--hop-limit", "1"])
        try:
            started = time.monotonic()
            cls.engine = DockerEngine(cls.lab)
            cls.engine.network("labnet", "10.214.0.0/24")
            cls.web = cls.engine.run("web", network="labnet")
            cls.worker = cls.engine.run("worker")
            cls.hostnet = cls.engine.run("hostnet", network="host")
            print(f"docker lab: engine and 3 containers in {time.monotonic() - started:.1f} s",
                  file=sys.stderr)
        except BaseException:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.lab.close()

    def setUp(self) -> None:
        self.outputs: list[str] = []
        self.lab.set_options(http_tokens="required", hop_limit=1)
        self.lab.clear_requests()

    def tearDown(self) -> None:
        self.lab.assert_nothing_secret(self, self.outputs)

    # ----- helpers -----------------------------------------------------------------------

    def probe(self, *args: str, inside: bool, json_out: bool = True, every: bool = True) -> Run:
        argv = [PROBE, "--timeout", "1s", *(["--all-containers"] if every else []),
                "--docker-root", str(self.engine.data_root),
                *(["--json=short"] if json_out else []), *args]
        if inside:
            proc = self.engine.exec(argv, timeout=60)
        else:
            proc = self.lab.exec(self.lab.host, argv, timeout=60)
        self.outputs += [proc.stdout, proc.stderr]
        run = Run(proc)
        if json_out:
            self.assertTrue(run.doc, f"no JSON: {proc.stdout!r} {proc.stderr!r}")
        return run

    def wait(self, what: str, pred: Callable[[], Any], timeout: float = 20,
             agent: LoggedProcess | None = None) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if value := pred():
                    return value
            except (OSError, ValueError, KeyError):
                pass
            if agent is not None and agent.proc.poll() is not None:
                break
            time.sleep(0.1)
        log = ""
        if agent is not None:
            with agent.lock:
                log = "\n".join(agent.lines[-30:])
        raise AssertionError(f"never: {what}\n{log}")

    def start_agent(self, inside: bool, conf: str, callers: bool = False
                    ) -> tuple[LoggedProcess, str, Path]:
        work = Path(tempfile.mkdtemp(prefix="imds-docker-agent-", dir=self.lab.dir))
        sock = str(work / "agent.sock")
        (work / "agent.conf").write_text(
            "interval = 1s\njitter = 0\nv1-interval = never\nrequest-timeout = 1s\n"
            f"socket = {sock}\nwatch-callers = {'yes' if callers else 'no'}\n"
            f"docker-root = {self.engine.data_root}\n"
            + conf)
        argv = [AGENT, "--config", str(work / "agent.conf"), "--config-dir", str(work / "d")]
        kwargs: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE,
                                  "stderr": subprocess.STDOUT}
        proc = self.engine.popen(argv, **kwargs) if inside else \
            self.lab.popen(self.lab.host, argv, **kwargs)
        agent = LoggedProcess(proc)
        agent.inside = inside  # type: ignore[attr-defined]
        return agent, sock, work

    @staticmethod
    def status(sock: str) -> dict[str, Any]:
        code, _, body = unix_http(sock, "GET", "/v1/status", timeout=5)
        assert code == 200, body
        return json.loads(body)

    def stop_agent(self, agent: LoggedProcess, work: Path) -> None:
        if getattr(agent, "inside", False):
            self.engine.stop(agent.proc, timeout=20)
        else:
            stop_process(agent.proc, timeout=20)
        if agent.proc.stdout is not None:
            agent.proc.stdout.close()
        with agent.lock:
            self.outputs.append("\n".join(agent.lines))
        shutil.rmtree(work, ignore_errors=True)

    # ----- the probe ---------------------------------------------------------------------

    def test_without_dockerds_mounts_the_run_is_a_warning_at_any_hop_limit(self) -> None:
        netns = str(self.engine.netns_dir)
        for hop in (1, 2):
            with self.subTest(hop_limit=hop):
                self.lab.set_options(hop_limit=hop)
                run = self.probe("--netns-dir", netns, "--no-proc-scan", inside=False)
                doc = run.doc
                self.assertEqual(run.rc, 1, run.stdout)
                self.assertFalse(doc["healthy"])
                self.assertEqual(doc["discovery"]["containers_found"], 0)
                [look] = doc["discovery"]["netns_dirs"]
                # web's and worker's sandboxes, and "default" (hostnet's: dockerd's own); a
                # removed container's file, until Docker unlinks it, is stale, not hidden.
                stale = look["unusable"].get("stale", 0)
                self.assertEqual((look["dir"], look["entries"], look["usable"],
                                  look["unusable"].get("not_mounted_here")),
                                 (netns, 3 + stale, 0, 3))
                blind = [f for f in doc["findings"] if f["id"] == "discovery-blind"]
                self.assertEqual([f["severity"] for f in blind], ["warning"])
                self.assertIn("rslave", blind[0]["fix"])
                # Their processes are there: two container namespaces nobody probed.
                self.assertEqual(doc["discovery"]["unlisted_container_namespaces"], 2)
                self.assertIn("discovery-unlisted-containers", run.finding_ids())
        text = self.probe("--netns-dir", netns, "--no-proc-scan", inside=False, json_out=False)
        self.assertEqual(text.rc, 1)
        self.assertRegex(text.stdout, rf"containers: 0 found \({netns}: \d+ entries, 0 usable "
                         r"\(3 not mounted here(, \d+ stale)?\);")
        self.assertNotIn("verdict: healthy", text.stdout)

    def test_in_dockerds_mount_namespace_both_are_found_named_and_judged(self) -> None:
        netns = str(self.engine.netns_dir)
        run = self.probe("--netns-dir", netns, "--no-proc-scan", inside=True)
        doc = run.doc
        [look] = doc["discovery"]["netns_dirs"]
        stale = look["unusable"].get("stale", 0)
        self.assertEqual((look["entries"], look["usable"], look["unusable"]),
                         (3 + stale, 3, {"stale": stale} if stale else {}))
        # "default" is dockerd's own namespace, the host: one target, not a container.
        self.assertEqual(doc["discovery"]["containers_found"], 2)
        self.assertEqual(run.names(), {self.web.short: "web", self.worker.short: "worker"})
        for c in (self.web, self.worker):
            v = run.verdicts()[c.short]
            self.assertEqual((v["distance"], v["imdsv2"], v["imdsv1"]), (1, "no", "no"), v)
        self.assertEqual(run.rc, 1)
        self.assertFalse([i for i in run.finding_ids()
                          if i in ("discovery-blind", "discovery-unlisted-containers")])
        text = self.probe("--netns-dir", netns, "--no-proc-scan", inside=True, json_out=False)
        self.assertRegex(text.stdout, rf"\n  {self.web.short} web +1 hop +IMDSv2 no ")
        self.assertRegex(text.stdout, rf"\n  {self.worker.short} worker +1 hop +IMDSv2 no ")
        self.assertIn(f"{self.web.short} web (1 hop)", text.stdout, "the finding names them")
        # Hop limit 2: both get their token; nothing is missing, so healthy.
        self.lab.set_options(hop_limit=2)
        run = self.probe("--netns-dir", netns, "--no-proc-scan", inside=True)
        for c in (self.web, self.worker):
            self.assertEqual(run.verdicts()[c.short]["imdsv2"], "yes")
        self.assertEqual((run.rc, run.doc["healthy"]), (0, True), run.doc["findings"])

    def test_a_removed_containers_file_is_stale_never_a_warning(self) -> None:
        # Docker unmounts a removed container's namespace file at once and unlinks it about a
        # minute later. In dockerd's mount namespace that empty file is no hidden container:
        # before the fix it was a discovery-blind warning after every `docker rm`.
        self.lab.set_options(hop_limit=2)
        gone = self.engine.run("gone")
        sandbox = json.loads(self.engine.docker("inspect", gone.id))[0]["NetworkSettings"][
            "SandboxKey"].rsplit("/", 1)[1]
        self.engine.remove(gone)
        for inside in (True, False):
            with self.subTest(inside=inside):
                run = self.probe("--netns-dir", str(self.engine.netns_dir), "--no-proc-scan",
                                 inside=inside)
                [look] = run.doc["discovery"]["netns_dirs"]
                if (self.engine.netns_dir / sandbox).exists():
                    self.assertEqual(look["unusable"].get("stale"), 1, look)
                    self.assertIn("discovery-stale-entries", run.finding_ids())
                else:
                    print("docker_test: Docker unlinked the file already", file=sys.stderr)
                self.assertEqual(look["unusable"].get("not_mounted_here", 0),
                                 0 if inside else 3, look)
                self.assertEqual("discovery-blind" in run.finding_ids(), not inside)
                self.assertEqual((run.rc, run.doc["healthy"]), (0, True) if inside else
                                 (1, False), run.doc["findings"])

    def test_the_proc_scan_alone_finds_and_names_them(self) -> None:
        # Default directories only: /run/netns is empty in there and /run/docker/netns absent
        # (this engine's exec root is elsewhere), so whatever is found, /proc found.
        run = self.probe(inside=True)
        d = run.doc["discovery"]
        self.assertTrue(d["proc_scanned"])
        self.assertEqual([(x["dir"], x["usable"]) for x in d["netns_dirs"]],
                         [("/run/netns", 0), ("/run/docker/netns", 0)])
        self.assertEqual((d["containers_found"], d["proc_namespaces"]), (2, 2))
        self.assertEqual(run.names(), {self.web.short: "web", self.worker.short: "worker"})
        sources = {t["name"]: (t["source"], t["container_id"], t["runtime"])
                   for t in run.doc["targets"] if not t["is_host"]}
        for c in (self.web, self.worker):
            self.assertEqual(sources[c.short], ("proc", c.id, "docker"))
            self.assertEqual(run.verdicts()[c.short]["imdsv2"], "no")
        # hostnet shares the host's namespace: the host's verdict is its verdict.
        self.assertNotIn(self.hostnet.short, run.names())
        self.assertEqual(run.rc, 1)
        # One container asked for by name, as `docker ps` shows it: the same target.
        one = self.probe("--container", self.worker.short, inside=True, every=False)
        self.assertEqual(one.names(), {self.worker.short: "worker"})

    # ----- the caller watch --------------------------------------------------------------

    def test_the_caller_watch_names_the_container_that_calls_imdsv1(self) -> None:
        # busybox wget sends tokenless GETs: IMDSv1, answered 401 under HttpTokens=required.
        # The watch listens in the lab's host namespace, where Docker's bridge carries the
        # containers' traffic, and finds the namespace (the /proc scan, inside dockerd's PID
        # namespace), the container id and Docker's name.
        argv = [PROBE, "callers", "--watch", "6s", "--docker-root", str(self.engine.data_root),
                "--netns-dir", str(self.engine.netns_dir)]
        watch = self.engine.popen([*argv, "--json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        table = self.engine.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for w in (watch, table):
            wait_packet_sockets(w, 2)  # IPv4 and IPv6: each captures from here on
        for _ in range(3):
            r = self.engine.client(["exec", self.web.id, "wget", "-q", "-O", "-",
                                    "http://169.254.169.254/latest/meta-data/ami-id"], timeout=20)
            self.assertIn("401 Unauthorized", r.stderr, f"wget: {r}")
        out, err = watch.communicate(timeout=40)
        self.outputs += [out, err]
        self.assertEqual(watch.returncode, 0, err)
        report = json.loads(out)
        mine = [c for c in report["callers"] if c.get("container_id") == self.web.id]
        self.assertEqual(len(mine), 1, json.dumps(report, indent=1))
        c = mine[0]
        self.assertEqual((c["where"], c["container_name"]), (self.web.short, "web"), c)
        self.assertGreaterEqual(c["imdsv1_calls"], 3, c)
        self.assertGreaterEqual(c["imdsv1_answered_401"], 3, c)
        text, err = table.communicate(timeout=40)
        self.outputs += [text, err]
        self.assertEqual(table.returncode, 0, err)
        # The CONTAINER column: the id, then Docker's name.
        self.assertRegex(text, rf"\n{self.web.short} +{self.web.short} web +wget ")

    # ----- the agent ---------------------------------------------------------------------

    def test_the_agent_names_them_and_diagnoses_a_new_container_within_seconds(self) -> None:
        agent, sock, work = self.start_agent(True, "proc-scan = yes\n", callers=True)
        late = None
        try:
            def listed() -> dict[str, dict[str, Any]]:
                return {c["container_name"]: c for c in self.status(sock)["agent"]["containers"]}

            # Known verdicts: a container without IMDSv2 is re-probed before it is said.
            first = self.wait("both containers judged in /v1/status",
                              lambda: (x := listed()).keys() >= {"web", "worker"} and all(
                                  x[n]["imdsv2"] != "unknown" for n in ("web", "worker")) and x,
                              agent=agent)
            for c in (self.web, self.worker):
                entry = first[c.name]
                self.assertEqual((entry["container_id"], entry["imdsv2"], entry["distance"]),
                                 (c.id, "no", 1), entry)
            t0 = time.monotonic()
            late = self.engine.run("late")
            entry = self.wait("the new container diagnosed",
                              lambda: (x := listed().get("late")) and x["imdsv2"] != "unknown"
                              and x, agent=agent)
            took = time.monotonic() - t0
            print(f"docker run -> diagnosed by the agent: {took:.2f} s", file=sys.stderr)
            self.assertLess(took, 10, "within seconds of docker run")
            self.assertEqual((entry["imdsv2"], entry["distance"]), ("no", 1))
            appeared = self.wait("its container-appeared event", lambda: [
                line for line in list(agent.lines)
                if "IMDS_EVENT=container-appeared" in line and "IMDS_CONTAINER_NAME=late" in line],
                agent=agent)
            self.assertIn(f"IMDS_CONTAINER_ID={late.id}", appeared[0])
            # Its caller watch names the container that calls IMDSv1, in /v1/callers and
            # in the journal.
            self.wait("the caller watch running", lambda: self.status(sock)["agent"][
                "callers_watch"]["state"] == "running", agent=agent)
            self.engine.client(["exec", self.worker.id, "wget", "-q", "-O", "-",
                                "http://169.254.169.254/latest/meta-data/ami-id"], timeout=20)

            def worker_caller() -> dict[str, Any] | None:
                code, _, body = unix_http(sock, "GET", "/v1/callers", timeout=5)
                assert code == 200, body
                return next((c for c in json.loads(body)["callers"]
                             if c["container_id"] == self.worker.id), None)

            c = self.wait("the worker in /v1/callers", worker_caller, agent=agent)
            self.assertEqual((c["where"], c["container_name"], c["imdsv1_answered_401"]),
                             (self.worker.short, "worker", 1), c)
            event = self.wait("its imdsv1-caller event", lambda: [
                line for line in list(agent.lines)
                if "IMDS_EVENT=imdsv1-caller" in line and "IMDS_CONTAINER_NAME=worker" in line],
                agent=agent)
            self.assertIn(f"IMDS_CONTAINER_ID={self.worker.id}", event[0])
        finally:
            if late is not None:
                self.engine.remove(late)
            self.stop_agent(agent, work)

    def test_the_agent_outside_dockerds_mounts_reports_what_it_cannot_see(self) -> None:
        agent, sock, work = self.start_agent(
            False, f"proc-scan = no\nnetns-dir = {self.engine.netns_dir}\n")
        try:
            doc = self.wait("a first cycle", lambda: (d := self.status(sock))["agent"]["cycles"]
                            >= 1 and d, agent=agent)
            [look] = doc["discovery"]["netns_dirs"]
            self.assertEqual(look["unusable"].get("not_mounted_here"), 3, look)
            self.assertIn("discovery-blind", [f["id"] for f in doc["findings"]])
            self.assertEqual(doc["agent"]["containers"], [])
            code, _, metrics = unix_http(sock, "GET", "/metrics", timeout=5)
            self.assertEqual(code, 200)
            self.assertEqual(metric_value(metrics, "imds_discovery_unusable_entries",
                                          dir=re.escape(str(self.engine.netns_dir)),
                                          problem="not_mounted_here"), 3, metrics)
            self.assertIn("imds_discovery_unlisted_container_namespaces 2\n", metrics)
            self.wait("the discovery-changed event", lambda: [
                line for line in list(agent.lines) if "IMDS_EVENT=discovery-changed" in line],
                agent=agent)
        finally:
            self.stop_agent(agent, work)


if __name__ == "__main__":
    skip_unless_lab_possible()
    skip_unless_docker_possible()
    unittest.main(verbosity=2)
