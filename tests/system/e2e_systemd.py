#!/usr/bin/python3
"""End to end under a real systemd: boot a Debian 12 container with systemd-nspawn, build
the emulator lab inside it, install the built .deb with apt, and check what an AMI
builder and an SRE would: the unit runs hardened and READY, journald holds the
structured events and the catalog explains them, the socket answers its group only,
reload/changes/new containers/watchdog behave, and remove/purge clean up.

Usage: e2e_systemd.py --source SRC --build BUILD --packages-dir DIR [--deb PATH] [--no-cache]
Exits 77 (skip) when not root or a tool is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_rootfs  # noqa: E402

SKIP = 77
TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "tar", "zstd", "dpkg-deb", "ldd")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SOCKET = "/run/imds-agent/imds-agent.sock"
UNIT = "imds-agent.service"
# What the agent is told inside the container (a drop-in, so the packaged conffile
# stays as shipped): probe often, watch only the lab's container namespaces.
INTERVAL_S = 5
# The unit's capabilities (linux/capability.h numbers): NET_RAW 13, SYS_PTRACE 19,
# SYS_ADMIN 21. The probe worker thread holds exactly these, the main thread none.
EXPECTED_CAPS = (1 << 13) | (1 << 19) | (1 << 21)
# `systemd-analyze security` of the installed unit: packaging/README.md says what each
# remaining point costs and why it stays (check-unit enforces the same offline).
EXPOSURE_LIMIT = 2.3
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
# Docker's namespace directory. There is no Docker in the container: the unit makes
# /run/docker (0700) and netns/ (0755) as Docker would, and the test adds a namespace.
DOCKER_NETNS = "/run/docker/netns"
# Debian's node_exporter textfile directory (node_exporter itself is not installed there).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


class E2EError(AssertionError):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def message_ids(source: Path) -> dict[str, str]:
    """Event name -> MESSAGE_ID, read from the agent's event table (the one source)."""
    text = (source / "agent" / "events.hpp").read_text()
    ids = dict(re.findall(r'EventKind::\w+,\s*"([a-z0-9-]+)",\s*"([0-9a-f]{32})"', text))
    if "started" not in ids:
        raise E2EError("could not read the event table from agent/events.hpp")
    return ids


def package_dependencies(deb: Path, emulator: Path) -> list[str]:
    """Packages the rootfs needs preinstalled: the container has no network, so apt can
    only install our .deb if everything it depends on is already there."""
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                             text=True, check=True).stdout
    # debootstrap --include takes real packages only: a virtual one (libspdlog1.10-fmt9)
    # is replaced by the package that provides it on this machine, which built the .deb.
    installed = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Provides}\n"],
                               capture_output=True, text=True, check=True).stdout
    real, provider = set(), {}
    for line in installed.splitlines():
        pkg, _, provides = line.partition("\t")
        real.add(pkg)
        for virtual in provides.split(","):
            provider.setdefault(re.split(r"[\s(]", virtual.strip(), maxsplit=1)[0], pkg)
    names = set()
    for clause in depends.split(","):
        first = clause.split("|")[0].strip()  # first alternative, as apt would pick
        name = re.split(r"[\s(:]", first, maxsplit=1)[0]
        if name:
            names.add(name if name in real or name not in provider else provider[name])
    # The emulator is copied in as a binary: the packages of its shared libraries.
    ldd = subprocess.run(["ldd", str(emulator)], capture_output=True, text=True, check=True)
    for lib in re.findall(r"=>\s*(/\S+)", ldd.stdout):
        r = subprocess.run(["dpkg", "-S", os.path.realpath(lib)], capture_output=True,
                           text=True, check=False)
        if r.returncode != 0:
            r = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True, check=False)
        if r.returncode == 0:
            names.add(r.stdout.split(":")[0].strip())
    return sorted(names)


class Machine:
    """A booted nspawn container, always stopped and removed by close()."""

    def __init__(self, tarball: Path, workdir: Path):
        self.workdir = workdir
        self.root = workdir / "root"
        # mkdtemp's suffix may hold "_", which systemd-nspawn refuses in a machine name.
        suffix = re.sub(r"[^a-z0-9]", "x", workdir.name.rsplit("-", 1)[-1][-8:].lower())
        self.name = "imds-e2e-" + suffix
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.console_log = workdir / "console.log"
        e2e_rootfs.extract(tarball, self.root)

    def boot(self, timeout: float = 120) -> None:
        notify_path = str(self.workdir / "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        notify.bind(notify_path)
        notify.settimeout(1)
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env["NOTIFY_SOCKET"] = notify_path  # nspawn says READY=1 and its leader's pid here
        with open(self.console_log, "wb") as console:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
                 "--private-network", "--notify-ready=yes", "--console=read-only",
                 f"--machine={self.name}", "-D", str(self.root)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        ready = False
        try:
            while time.monotonic() < deadline and not ready:
                try:
                    msg = notify.recv(4096).decode(errors="replace")
                except socket.timeout:
                    if self.proc.poll() is not None:
                        raise E2EError(f"systemd-nspawn exited {self.proc.returncode} while "
                                       f"booting:\n{self.console_tail()}") from None
                    continue
                for line in msg.splitlines():
                    if line.startswith("X_NSPAWN_LEADER_PID="):
                        self.leader = int(line.split("=", 1)[1])
                    ready = ready or line == "READY=1"
        finally:
            notify.close()
        if not ready or self.leader is None:
            raise E2EError(f"the container did not report READY=1 within {timeout:.0f} s:\n"
                           + self.console_tail())
        # READY=1 from the container's systemd means boot finished; wait for its jobs.
        r = self.run(["systemctl", "is-system-running", "--wait"], timeout=timeout, check=False)
        if r.stdout.strip() not in ("running", "degraded"):
            raise E2EError(f"the container's systemd is {r.stdout.strip()!r}")
        if r.stdout.strip() == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            log(f"note: container is degraded (not our unit): {failed.strip()}")

    def console_tail(self) -> str:
        try:
            return self.console_log.read_bytes()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def argv(self, cmd: list[str]) -> list[str]:
        if self.leader is None:
            raise E2EError("the container is not running")
        return ["nsenter", "-t", str(self.leader), "-a", "--", "env", "-i",
                f"PATH={CONTAINER_PATH}", "LANG=C.UTF-8", *cmd]

    def run(self, cmd: list[str], timeout: float = 60, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(self.argv(cmd), capture_output=True, text=True, timeout=timeout,
                           input=input, check=False)
        if check and r.returncode != 0:
            raise E2EError(f"in the container, `{' '.join(cmd)}` exited {r.returncode}:\n"
                           f"{r.stdout}{r.stderr}")
        return r

    def popen(self, cmd: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)

    def close(self) -> None:
        """Stop the container (never SIGKILL nspawn: that orphans it) and remove it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container to power off
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log("container did not power off within 60 s: killing its PID 1")
                if self.leader is not None:
                    try:
                        os.kill(self.leader, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log("systemd-nspawn still running: leaving it, NOT removing its tree")
                    return
        # --one-file-system: if anything is still mounted in there, leave it alone.
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.workdir)], check=False)


class LabDriver:
    """tests/system/e2e_lab_driver.py running inside the container."""

    def __init__(self, machine: Machine, emulator_args: list[str]):
        self.proc = machine.popen(["python3", "/root/e2e/e2e_lab_driver.py", "/root/e2e/build",
                                   *emulator_args])
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise E2EError(f"the lab driver exited ({self.proc.wait()}) without answering")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise E2EError(f"lab driver: {reply.get('error')}")
        return reply

    def call(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.terminate()  # the driver tears its lab down on SIGTERM
                self.proc.wait(timeout=30)


def wait_for(what: str, check: Callable[[], Any], timeout: float, step: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


class Checks:
    """The assertions, in the order an operator would meet them."""

    def __init__(self, m: Machine, ids: dict[str, str], deb_name: str):
        self.m = m
        self.ids = ids
        self.deb = f"/root/e2e/{deb_name}"
        self.passed: list[str] = []

    def ok(self, what: str) -> None:
        self.passed.append(what)
        log(f"PASS {what}")

    def unit(self, *props: str) -> dict[str, str]:
        out = self.m.run(["systemctl", "show", UNIT, *(f"--property={p}" for p in props)],
                         check=False).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *match: str) -> list[dict[str, Any]]:
        out = self.m.run(["journalctl", "--no-pager", "-o", "json", "-u", UNIT, *match],
                         check=False).stdout
        entries = []
        for line in out.splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return entries

    def events(self, name: str) -> list[dict[str, Any]]:
        return self.journal(f"MESSAGE_ID={self.ids[name]}")

    def curl(self, path: str, identity: list[str] | None = None
             ) -> subprocess.CompletedProcess[str]:
        """GET path on the agent's socket, as root or as the setpriv identity given."""
        cmd = ["curl", "-sS", "--max-time", "20", "--unix-socket", SOCKET,
               f"http://localhost{path}", "-o", "-", "-w", "\n%{http_code}"]
        if identity:
            cmd = ["setpriv", *identity, "--", *cmd]
        return self.m.run(cmd, check=False, timeout=30)

    # ---------------------------------------------------------------------------------

    def install(self) -> None:
        r = self.m.run(["apt-get", "install", "-y", "--no-install-recommends", self.deb],
                       timeout=300, check=False)
        if r.returncode != 0:
            raise E2EError(f"apt-get install of the .deb failed:\n{r.stdout}{r.stderr}")
        self.ok("apt installs the .deb offline (its dependencies are in the image)")

    def started_and_ready(self) -> None:
        self.m.run(["systemctl", "start", UNIT], timeout=120)
        props = self.unit("ActiveState", "SubState", "Type", "StatusText", "MainPID",
                          "NRestarts", "User")
        if props.get("ActiveState") != "active" or props.get("SubState") != "running":
            raise E2EError(f"{UNIT} is not active/running: {props}\n"
                           + self.m.run(["journalctl", "-u", UNIT, "--no-pager", "-n", "50"],
                                        check=False).stdout)
        # Type=notify: systemctl start returns only after READY=1; STATUS= is the summary.
        if props.get("Type") != "notify" or not props.get("StatusText"):
            raise E2EError(f"no READY/STATUS from the daemon: {props}")
        pid = props["MainPID"]
        status = self.m.run(["cat", f"/proc/{pid}/status"]).stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if (int(fields.get("CapBnd", "0"), 16) != EXPECTED_CAPS
                or fields.get("NoNewPrivs") != "1" or fields.get("Seccomp") != "2"):
            raise E2EError(f"the daemon runs with CapBnd {fields.get('CapBnd')} (expected "
                           f"{EXPECTED_CAPS:016x}), NoNewPrivs {fields.get('NoNewPrivs')}, "
                           f"Seccomp {fields.get('Seccomp')}")
        limits = self.m.run(["cat", f"/proc/{props['MainPID']}/limits"]).stdout
        bounds = self.unit("MemoryMax", "TasksMax")
        core = [line.split()[4:6] for line in limits.splitlines()
                if line.startswith("Max core file size")]
        files = [line.split()[3:5] for line in limits.splitlines()
                 if line.startswith("Max open files")]
        if (core != [["0", "0"]] or files != [["4096", "4096"]]
                or bounds.get("MemoryMax") != str(128 * 1024 * 1024)
                or bounds.get("TasksMax") != "32"):
            raise E2EError(f"resource limits not in force: core {core}, open files {files}, "
                           f"{bounds}")
        # What the kernel enforces, read from the service's own cgroup: on the unified
        # hierarchy (cgroup v2) only; a cgroup v1 host (this CI machine is one) keeps the
        # controllers in per-controller trees that nspawn does not give the container.
        cgroup = self.unit("ControlGroup")["ControlGroup"]
        unified = self.m.run(["test", "-e", "/sys/fs/cgroup/cgroup.controllers"],
                             check=False).returncode == 0
        where = "systemd's view of the unit; cgroup v1 here, so no memory.max/pids.max to read"
        if unified:
            kernel = {f: self.m.run(["cat", f"/sys/fs/cgroup{cgroup}/{f}"]).stdout.strip()
                      for f in ("memory.max", "pids.max")}
            if kernel != {"memory.max": str(128 * 1024 * 1024), "pids.max": "32"}:
                raise E2EError(f"the service's cgroup {cgroup} does not enforce the limits: "
                               f"{kernel}")
            where = f"memory.max/pids.max of {cgroup}"
        self.ok("LimitCORE=0 (no core dump can hold a token), LimitNOFILE=4096, "
                "MemoryMax=128M and TasksMax=32 are in force for the running daemon (its "
                f"limits, and {where})")
        self.ok(f"unit active after systemctl start, READY reached, status "
                f"{props['StatusText']!r}, running as {props.get('User')} with the bounding "
                "set CAP_SYS_ADMIN CAP_NET_RAW CAP_SYS_PTRACE, seccomp on")

    def thread_capabilities(self) -> None:
        """Capabilities are per thread: the main thread none once the worker exists (it
        does by READY), the worker exactly the probe's; none may pass any on."""
        pid = self.unit("MainPID")["MainPID"]
        out = self.m.run(["sh", "-c", f"grep -H '^Cap' /proc/{pid}/task/*/status"]).stdout
        threads: dict[str, dict[str, int]] = {}
        for tid, key, value in re.findall(r"/task/(\d+)/status:(Cap\w+):\s*([0-9a-f]+)", out):
            threads.setdefault(tid, {})[key] = int(value, 16)
        for caps in threads.values():
            caps.pop("CapBnd", None)
        for tid, caps in threads.items():
            log(f"  thread {tid}{' (main)' if tid == pid else ''}: "
                + " ".join(f"{k} {v:016x}" for k, v in caps.items()))
        zero = {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0}
        worker = {"CapInh": 0, "CapPrm": EXPECTED_CAPS, "CapEff": EXPECTED_CAPS, "CapAmb": 0}
        others = [caps for tid, caps in threads.items() if tid != pid]
        if threads.get(pid) != zero:
            raise E2EError(f"the main thread holds capabilities: {threads.get(pid)}")
        if worker not in others or any((c["CapPrm"] | c["CapEff"]) & ~EXPECTED_CAPS
                                       or c["CapInh"] | c["CapAmb"] for c in others):
            raise E2EError(f"no thread holds exactly the probe's capabilities, or one holds "
                           f"more: {threads}")
        self.ok(f"per thread: the main thread ({pid}) holds no capability, the probe worker "
                f"exactly CAP_SYS_ADMIN CAP_NET_RAW CAP_SYS_PTRACE ({len(threads)} threads)")

    def exposure(self) -> None:
        r = self.m.run(["systemd-analyze", "security", "--no-pager", UNIT], check=False)
        m = EXPOSURE_RE.search(r.stdout)
        if m is None:
            raise E2EError(f"systemd-analyze security printed no exposure:\n{r.stdout}{r.stderr}")
        exposure = float(m.group(1))
        log(f"systemd-analyze security {UNIT} (the loaded unit): {exposure}")
        for line in r.stdout.splitlines():
            if line.startswith("✗"):
                log("  " + re.sub(r"\s{2,}", "  ", line.strip()))
        if exposure > EXPOSURE_LIMIT:
            raise E2EError(f"the installed unit is rated {exposure}, above {EXPOSURE_LIMIT}")
        self.ok(f"systemd-analyze security rates the running unit {exposure} "
                f"(at most {EXPOSURE_LIMIT})")

    def docker_netns(self) -> None:
        """Docker's namespaces without CAP_DAC_READ_SEARCH: the unit made /run/docker and
        netns/ with Docker's modes and binds netns/ into the service's view; a namespace
        added there later is seen (mount propagation) and probed, and nothing else of
        /run/docker is visible to the daemon. A process of another user (nobody) in a
        docker-ID.scope runs in that namespace: its container id in the event shows that
        the worker reads other users' /proc/PID/ns/net and cgroup under
        ProtectProc=ptraceable."""
        mode = self.m.run(["stat", "-c", "%a %U", "/run/docker", DOCKER_NETNS]).stdout.split("\n")
        if mode[:2] != ["700 root", "755 root"]:
            raise E2EError(f"/run/docker and its netns/ are {mode[:2]}, not 700/755 root")
        name, source = "e2e-docker", "e2e-docker-source"
        container_id = hashlib.sha256(b"imds-agent e2e").hexdigest()
        scope = f"docker-{container_id}.scope"
        self.m.run(["ip", "netns", "add", source])
        self.m.run(["sh", "-c", f"systemd-run --quiet --scope --unit={scope} -- nsenter "
                    f"--net=/run/netns/{source} -- setpriv --reuid nobody --regid nogroup "
                    "--clear-groups -- sleep 600 </dev/null >/dev/null 2>&1 &"])
        wait_for(f"{scope} running", lambda: self.m.run(
            ["systemctl", "is-active", scope], check=False).stdout.strip() == "active", 30)
        self.m.run(["touch", f"{DOCKER_NETNS}/{name}"])
        self.m.run(["mount", "--bind", f"/run/netns/{source}", f"{DOCKER_NETNS}/{name}"])
        pid = self.unit("MainPID")["MainPID"]
        seen = self.m.run(["nsenter", "-t", pid, "-m", "--", "ls", "-A", "/run/docker"]).stdout
        if seen.split() != ["netns"]:
            raise E2EError(f"the daemon sees more of /run/docker than netns/: {seen.split()}")
        appeared = wait_for(f"the container-appeared event of {DOCKER_NETNS}/{name}",
                            lambda: [e for e in self.events("container-appeared")
                                     if e.get("IMDS_NETNS") == f"{DOCKER_NETNS}/{name}"],
                            3 * INTERVAL_S + 30)
        if appeared[0].get("IMDS_CONTAINER_ID") != container_id:
            raise E2EError(f"{DOCKER_NETNS}/{name} was probed without the container id of "
                           f"the process of nobody in it: {appeared[0]}")
        self.m.run(["systemctl", "stop", scope], check=False)
        self.ok(f"a namespace made in {DOCKER_NETNS} after start is probed by a daemon without "
                f"CAP_DAC_READ_SEARCH, which sees only netns/ of /run/docker, and labelled "
                f"with the container id of another user's process in it "
                f"({appeared[0].get('MESSAGE')!r})")

    def journal_events(self) -> None:
        started = wait_for("the started event", lambda: self.events("started"), 30)
        verdict = wait_for("the first verdict event", lambda: self.events("first-verdict"), 60)
        for name, entries in (("started", started), ("first-verdict", verdict)):
            e = entries[-1]
            fields = sorted(k for k in e if k.startswith("IMDS_"))
            if not fields or "PRIORITY" not in e or "CODE_FILE" not in e:
                raise E2EError(f"{name} event lacks structured fields: {e}")
        self.ok("journalctl -o json -u imds-agent holds the started and first-verdict events "
                f"with their MESSAGE_IDs and IMDS_* fields ({verdict[-1].get('MESSAGE')!r})")

    def catalog(self) -> None:
        out = self.m.run(["journalctl", "--no-pager", "--catalog", "-u", UNIT,
                          f"MESSAGE_ID={self.ids['started']}"], check=False).stdout
        explained = [line for line in out.splitlines() if line.startswith("░░")]
        if not explained:
            raise E2EError("journalctl --catalog does not expand the started event:\n" + out)
        self.ok(f"journalctl --catalog expands the events ({explained[0].strip()!r})")

    def socket_api(self) -> None:
        r = self.curl("/v1/status")
        body, _, code = r.stdout.rpartition("\n")
        if r.returncode != 0 or code != "200":
            raise E2EError(f"GET /v1/status: curl {r.returncode}, HTTP {code}: {r.stderr}")
        status = json.loads(body)
        if "schema_version" not in json.dumps(status):
            raise E2EError(f"/v1/status is not the probe's schema: {body[:500]}")
        r = self.curl("/metrics")
        body, _, code = r.stdout.rpartition("\n")
        if code != "200" or not re.search(r"^# TYPE \S+ (gauge|counter|histogram)", body, re.M):
            raise E2EError(f"GET /metrics: HTTP {code}, not Prometheus text: {body[:500]}")
        self.ok("curl --unix-socket gets /v1/status (JSON) and /metrics (Prometheus text)")

    def caller_watch(self) -> None:
        """The caller watch runs under the hardened unit (packet sockets, NETLINK_ROUTE into
        the lab's namespaces): a tokenless curl from this host is refused (tokens required)
        and reaches the real journal as one imdsv1-caller event at warning."""
        def running() -> dict[str, Any] | None:
            r = self.curl("/v1/callers")
            body, _, code = r.stdout.rpartition("\n")
            if code != "200":
                return None
            doc = json.loads(body)
            return doc if doc["watch"]["state"] == "running" else None
        doc = wait_for("the caller watch to run", running, 30)
        if doc["namespaces_mapped"] < 1:
            raise E2EError(f"the caller watch mapped no container namespace: {doc}")
        for _ in range(2):
            self.m.run(["curl", "-s", "-o", "/dev/null", "--max-time", "5",
                        "http://169.254.169.254/latest/meta-data/ami-id"], check=False)
        events = wait_for("the imdsv1-caller event of a tokenless curl on the host",
                          lambda: [e for e in self.events("imdsv1-caller")
                                   if e.get("IMDS_CALLER") == "host" and
                                   e.get("IMDS_SDK_PRODUCT") == "curl"], 30)
        e = events[-1]
        if e.get("PRIORITY") != "4" or "401" not in e.get("IMDS_ANSWERS", ""):
            raise E2EError(f"a refused IMDSv1 caller is not a warning with its 401: {e}")
        r = self.curl("/v1/callers")
        record = json.loads(r.stdout.rpartition("\n")[0])
        host = [c for c in record["callers"] if c["where"] == "host" and
                (c["sdk"] or {}).get("product") == "curl"]
        if not host or host[0]["imdsv1_answered_401"] < 2:
            raise E2EError(f"GET /v1/callers does not count the host's curl: {record}")
        self.ok(f"the caller watch runs under the unit ({doc['namespaces_mapped']} namespaces "
                f"mapped) and a refused tokenless curl is one journal event "
                f"({e.get('MESSAGE')!r})")

    def socket_group_only(self) -> None:
        self.m.run(["useradd", "--system", "--user-group", "--no-create-home", "e2e-member"])
        self.m.run(["usermod", "-aG", "imds-agent", "e2e-member"])
        member = self.curl("/v1/status", ["--reuid", "e2e-member", "--regid", "e2e-member",
                                          "--init-groups"])
        if member.returncode != 0 or not member.stdout.endswith("200"):
            raise E2EError(f"a member of imds-agent was refused: {member.stderr}")
        # A plain connect(2), so the refusal's errno is visible (curl only says "failed").
        stranger = self.m.run(
            ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--",
             "python3", "-c", "import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n"
             "    print(e.strerror); sys.exit(1)\n", SOCKET], check=False)
        if stranger.returncode == 0 or "Permission denied" not in stranger.stdout:
            raise E2EError("nobody (not in the imds-agent group) was not refused with EACCES: "
                           f"{stranger.stdout}{stranger.stderr}")
        self.ok("a member of the imds-agent group gets /v1/status, a non-member is refused "
                f"({stranger.stdout.strip()})")

    def reload(self, netns_dir: str) -> None:
        before = len(self.events("config-reloaded"))
        pid = self.unit("MainPID")["MainPID"]
        # A policy the lab violates (hop limit 1): the reloaded config must say so.
        self.write_dropin(netns_dir, extra="expect = hop-limit=>=2\n")
        self.m.run(["systemctl", "reload", UNIT], timeout=60)
        wait_for("the config-reloaded event",
                 lambda: len(self.events("config-reloaded")) > before, 30)
        if self.unit("MainPID")["MainPID"] != pid:
            raise E2EError("systemctl reload restarted the daemon instead of reloading")
        drift = wait_for("a policy-drift event after adding expect=hop-limit=>=2",
                         lambda: self.events("policy-drift"), 3 * INTERVAL_S + 30)
        self.ok("systemctl reload re-reads the config (config-reloaded, same PID, then "
                f"{drift[-1].get('MESSAGE')!r})")

    def write_dropin(self, netns_dir: str, extra: str = "") -> None:
        text = (f"# written by tests/system/e2e_systemd.py\ninterval = {INTERVAL_S}s\n"
                f"jitter = 0\nnetns-dir = {netns_dir}\nnetns-dir = {DOCKER_NETNS}\n"
                "proc-scan = no\n" + extra)
        self.m.run(["mkdir", "-p", "/etc/imds-agent/conf.d"])
        self.m.run(["tee", "/etc/imds-agent/conf.d/e2e.conf"], input=text)

    def option_change(self, lab: LabDriver) -> None:
        # What `aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2`
        # does. (HttpTokens would only show through tokenless GETs, which the agent
        # sends rarely on purpose.)
        before = len(self.events("option-changed"))
        lab.call(cmd="set_options", options={"hop_limit": 2})
        changed = wait_for("an option-changed event after hop limit 1 -> 2",
                           lambda: self.events("option-changed")[before:], 3 * INTERVAL_S + 30)
        hop = [e for e in changed if "HopLimit" in json.dumps(e)]
        if not hop or str(hop[0].get("IMDS_NEW_VALUE")) != "2":
            raise E2EError(f"no hop-limit change to 2 among the option-changed events: {changed}")
        self.ok(f"changing the emulator's options produces {hop[0].get('MESSAGE')!r}")

    def new_container(self, lab: LabDriver) -> None:
        ns = lab.call(cmd="add_bridge_container", label="late")
        started = time.monotonic()
        appeared = wait_for("the container-appeared event of a namespace made after start",
                            lambda: [e for e in self.events("container-appeared")
                                     if ns["name"] in json.dumps(e) or "late" in json.dumps(e)],
                            3 * INTERVAL_S + 30)
        took = time.monotonic() - started
        self.ok(f"a container namespace created after start is diagnosed in {took:.1f} s "
                f"({appeared[0].get('MESSAGE')!r})")

    def fleet_outputs(self, netns_dir: str) -> None:
        """textfile-dir under the shipped unit, set up as imds-agent.conf(5) says (FLEET
        OUTPUTS): refused with a clear error until the unit drop-in and the ACL are there."""
        self.m.run(["mkdir", "-p", TEXTFILE_DIR])
        self.write_dropin(netns_dir, extra=f"textfile-dir = {TEXTFILE_DIR}\n")
        self.m.run(["systemctl", "reload", UNIT], timeout=60)

        def textfile() -> dict[str, Any]:
            body = self.curl("/v1/status").stdout.rpartition("\n")[0]
            return json.loads(body)["agent"]["outputs"]["textfile"] or {}

        error = wait_for("the textfile error under the shipped unit",
                         lambda: textfile().get("error"), 3 * INTERVAL_S + 30)
        if "Read-only file system" not in error:
            raise E2EError(f"textfile-dir without the drop-in: {error!r}, not EROFS")
        # The documented fix: the unit may write there, and so may its user.
        self.m.run(["mkdir", "-p", f"/etc/systemd/system/{UNIT}.d"])
        self.m.run(["tee", f"/etc/systemd/system/{UNIT}.d/fleet.conf"],
                   input=f"[Service]\nReadWritePaths={TEXTFILE_DIR}\n")
        self.m.run(["setfacl", "-m", "u:imds-agent:rwx", TEXTFILE_DIR])
        self.m.run(["systemctl", "daemon-reload"])
        self.m.run(["systemctl", "restart", UNIT], timeout=90)
        path = f"{TEXTFILE_DIR}/imds_agent.prom"
        wait_for("the textfile written by the unit",
                 lambda: self.m.run(["test", "-s", path], check=False).returncode == 0,
                 3 * INTERVAL_S + 30)
        owner = self.m.run(["stat", "-c", "%U %a", path]).stdout.strip()
        text = self.m.run(["cat", path]).stdout
        if owner != "imds-agent 644" or "imds_probe_cycles_total" not in text:
            raise E2EError(f"{path}: {owner!r}, {text[:300]!r}")
        self.ok(f"textfile-dir: refused by the shipped unit ({error!r}), written with the "
                f"documented drop-in and ACL ({owner})")

    def watchdog(self) -> None:
        props = self.unit("MainPID", "NRestarts", "WatchdogUSec")
        pid, restarts = props["MainPID"], int(props.get("NRestarts", "0"))
        watchdog_s = int(props["WatchdogUSec"]) / 1e6 if props.get("WatchdogUSec", "").isdigit() \
            else 30
        self.m.run(["kill", "-STOP", pid])

        def restarted() -> bool:
            p = self.unit("MainPID", "NRestarts", "ActiveState")
            return (p.get("MainPID") not in ("0", pid) and int(p.get("NRestarts", "0")) > restarts
                    and p.get("ActiveState") == "active")
        started = time.monotonic()
        wait_for("the watchdog to restart the stopped daemon", restarted, watchdog_s + 60)
        took = time.monotonic() - started
        said = self.m.run(["journalctl", "--no-pager", "-u", UNIT, "-o", "cat"],
                          check=False).stdout
        if "Watchdog timeout" not in said:
            raise E2EError("the daemon was restarted, but systemd logged no watchdog timeout")
        self.ok(f"SIGSTOP on the daemon gets it restarted by the watchdog in {took:.0f} s "
                f"(WatchdogSec {watchdog_s:.0f} s)")

    def remove_and_purge(self) -> None:
        self.m.run(["apt-get", "remove", "-y", "imds-agent"], timeout=300)
        state = self.unit("ActiveState", "LoadState")
        if state.get("ActiveState") == "active":
            raise E2EError(f"apt remove left the unit running: {state}")
        left = [p for p in ("/usr/sbin/imds-agent", "/usr/bin/imds-probe",
                            "/lib/systemd/system/imds-agent.service",
                            "/usr/lib/systemd/system/imds-agent.service")
                if self.m.run(["test", "-e", p], check=False).returncode == 0]
        if left:
            raise E2EError(f"apt remove left files behind: {left}")
        if self.m.run(["test", "-e", f"{TEXTFILE_DIR}/imds_agent.prom"],
                      check=False).returncode == 0:
            raise E2EError("the stopped agent left its node_exporter textfile behind")
        if self.m.run(["test", "-e", "/etc/imds-agent/imds-agent.conf"],
                      check=False).returncode != 0:
            raise E2EError("apt remove deleted the configuration (only purge may)")
        self.ok("apt remove stops the unit and removes its files (and the textfile), keeping "
                "the configuration")
        self.m.run(["apt-get", "purge", "-y", "imds-agent"], timeout=300)
        if self.m.run(["test", "-e", "/etc/imds-agent"], check=False).returncode == 0:
            listing = self.m.run(["find", "/etc/imds-agent"], check=False).stdout
            raise E2EError(f"apt purge left /etc/imds-agent behind:\n{listing}")
        self.ok("apt purge removes the configuration too")


def copy_into(machine: Machine, source: Path, build: Path, deb: Path) -> None:
    dest = machine.root / "root" / "e2e"
    (dest / "build" / "tests" / "emulator").mkdir(parents=True)
    shutil.copy2(build / "tests" / "emulator" / "imds-emulator",
                 dest / "build" / "tests" / "emulator" / "imds-emulator")
    shutil.copy2(source / "tests" / "lab" / "lab.py", dest / "lab.py")
    shutil.copy2(source / "tests" / "system" / "e2e_lab_driver.py", dest / "e2e_lab_driver.py")
    shutil.copy2(deb, dest / deb.name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--packages-dir", type=Path, required=True)
    ap.add_argument("--no-cache", action="store_true", help="debootstrap even if cached")
    ap.add_argument("--deb", type=Path, help="test this .deb instead of building one")
    args = ap.parse_args()

    # meson's timeout sends SIGTERM: unwind so the container is stopped and removed.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    if os.geteuid() != 0:
        print("SKIP: the end-to-end test needs root (debootstrap, systemd-nspawn)",
              file=sys.stderr)
        return SKIP
    for tool in TOOLS:
        if shutil.which(tool) is None:
            print(f"SKIP: `{tool}` is not installed (./packaging/install-deps --release-tools)",
                  file=sys.stderr)
            return SKIP
    emulator = args.build / "tests" / "emulator" / "imds-emulator"
    if not emulator.exists():
        print(f"FAIL: {emulator} is not built", file=sys.stderr)
        return 1
    t0 = time.monotonic()

    if args.deb is None:
        r = subprocess.run([str(args.source / "packaging" / "build-deb"), "--reuse",
                            str(args.packages_dir)], check=False)
        if r.returncode != 0:
            return r.returncode
    debs = [args.deb] if args.deb else sorted(args.packages_dir.glob("imds-agent_*.deb"))
    if len(debs) != 1:
        print(f"FAIL: expected one imds-agent .deb in {args.packages_dir}, found {debs}",
              file=sys.stderr)
        return 1
    deb = debs[0]
    ids = message_ids(args.source)
    tarball = e2e_rootfs.rootfs_tarball(package_dependencies(deb, emulator),
                                        log=sys.stdout, use_cache=not args.no_cache)
    log(f"rootfs ready after {time.monotonic() - t0:.0f} s")

    workdir = Path(tempfile.mkdtemp(prefix="imds-e2e-", dir="/var/tmp"))
    machine: Machine | None = None
    lab: LabDriver | None = None
    checks: Checks | None = None
    try:
        machine = Machine(tarball, workdir)
        copy_into(machine, args.source, args.build, deb)
        boot_start = time.monotonic()
        machine.boot()
        log(f"container {machine.name} booted in {time.monotonic() - boot_start:.1f} s "
            f"(leader pid {machine.leader})")
        # The lab first (IMDS requires tokens, hop limit 1: c1 gets no IMDSv2), then the
        # agent's drop-in, then the package, whose postinst starts the agent.
        lab = LabDriver(machine, ["--http-tokens", "required", "--hop-limit", "1"])
        netns_dir = lab.hello["netns_dir"]
        checks = Checks(machine, ids, deb.name)
        checks.write_dropin(netns_dir)
        checks.install()
        checks.started_and_ready()
        checks.thread_capabilities()
        checks.exposure()
        checks.journal_events()
        checks.catalog()
        checks.socket_api()
        checks.caller_watch()
        checks.socket_group_only()
        checks.reload(netns_dir)
        checks.option_change(lab)
        checks.new_container(lab)
        checks.fleet_outputs(netns_dir)
        checks.docker_netns()
        checks.watchdog()
        forbidden = lab.call(cmd="forbidden")["requests"]
        if forbidden:
            raise E2EError(f"the agent requested secret paths: {forbidden}")
        checks.ok("no request for credentials or user data reached the emulator")
        checks.remove_and_purge()
    except Exception as e:  # noqa: BLE001  (any failure: report, then clean up)
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        if machine is not None and machine.leader is not None:
            tail = subprocess.run(machine.argv(["journalctl", "--no-pager", "-n", "60"]),
                                  capture_output=True, text=True, check=False).stdout
            print("--- container journal (last 60 lines) ---\n" + tail, file=sys.stderr)
        return 1
    finally:
        teardown = time.monotonic()
        if lab is not None:
            lab.close()
        if machine is not None:
            machine.close()
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(workdir)], check=False)
        log(f"teardown took {time.monotonic() - teardown:.0f} s")
        log(f"end to end took {time.monotonic() - t0:.0f} s; "
            f"{len(checks.passed) if checks else 0} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
