#!/usr/bin/python3
"""imds-agent against a real systemd-journald, started by this test.

The test re-executes itself in private mount and network namespaces (`unshare -m -n`):
tmpfs over /run/systemd, /run/log and /var/log/journal give it a journald of its own at the
path libsystemd sends to, and loopback is its own. The emulator listens on that loopback;
the agent probes it with --endpoint. The entries are read back with `journalctl -o json`
and checked for MESSAGE_ID, PRIORITY, the IMDS_* fields and CODE_*; the catalog is then
indexed with `journalctl --update-catalog` and `journalctl -x` must expand it.

Usage: journald_agent_test.py --build BUILD_DIR --source SOURCE_DIR    (root; 77 otherwise)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

from lab import UnixHTTPConnection, stop_process  # noqa: E402

SKIP = 77
JOURNALD = "/lib/systemd/systemd-journald"
PORT = 8080

IDS = {
    "started": "3c502ce89a38470a8b5401cc076d14ba",
    "first-verdict": "dc945e5354594578bb1ca8d316f49047",
    "option-changed": "82f6000580cd4b1190daebc52835d1bf",
    "policy-drift": "17b08986f2c24b4cb4d3c5110e72b4f9",
    "policy-compliant-again": "006e54f3fe2f4427a6b4faedbf8711f4",
    "imds-unreachable": "bd076fbdd1cf4762aedf5c4126bc1303",
    "imds-back": "3dd77fe1007c42e08b05544048db169c",
    "config-reloaded": "c2530a4d1d6d443ca731fb41e72ff76f",
    "stopping": "338369f5107e4f468d77647a4b813b27",
}
PRIORITIES = {"started": 6, "option-changed": 5, "policy-drift": 4,
              "policy-compliant-again": 5, "imds-unreachable": 3, "imds-back": 5,
              "config-reloaded": 6, "stopping": 6}


def control(sock: str, method: str, path: str, body: Any = None) -> Any:
    conn = UnixHTTPConnection(sock, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status // 100 != 2:
        raise RuntimeError(f"{method} {path}: {resp.status} {data!r}")
    return json.loads(data) if data.strip() else None


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def entries() -> list[dict[str, Any]]:
    out = subprocess.run(["journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=imds-agent"],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def events(name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in entries() if "IMDS_EVENT" in e and (name is None or e["IMDS_EVENT"] == name)]


class NotifyListener:
    """The sd_notify side of systemd: a datagram socket collecting what the agent sends."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(path))
        self.messages: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except OSError:
                return


class Processes:
    """Children of this test, ended by pid in reverse order."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=env)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> int:
        return stop_process(p, timeout=15)

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def start_emulator(procs: Processes, build: Path, work: Path, *args: str) -> subprocess.Popen[bytes]:
    ctl = work / "control.sock"
    if ctl.exists():
        ctl.unlink()
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    with open(work / "emulator.log", "ab") as log:
        p = subprocess.Popen([str(build / "tests/emulator/imds-emulator"), "--listen", "127.0.0.1",
                              "--port", str(PORT), "--control", str(ctl), "--ready-fd", str(wfd),
                              *args], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             pass_fds=(wfd,))
    procs.procs.append(p)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        if r.readline().strip() != b"ready":
            raise AssertionError("the emulator did not start: " + (work / "emulator.log").read_text())
    return p


def inner(build: Path, source: Path) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for d in ("/run/systemd", "/run/log", "/var/log/journal"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", d], check=True)
    os.makedirs("/run/systemd/journal")
    work = Path(tempfile.mkdtemp(prefix="imds-agent-journald-"))
    procs = Processes()
    try:
        procs.start([JOURNALD], work / "journald.log")
        wait_for("journald's socket", lambda: os.path.exists("/run/systemd/journal/socket"))
        emulator = start_emulator(procs, build, work, "--http-tokens", "optional",
                                  "--hop-limit", "1")
        conf = work / "imds-agent.conf"
        conf.write_text("interval = 1s\njitter = 0\nmin-probe-gap = 0\nbackoff-max = 1s\nmin-event-gap = 1s\n"
                        f"endpoint = http://127.0.0.1:{PORT}\nipv6 = no\nproc-scan = no\n"
                        "netns-dir =\nrequest-timeout = 500ms\nexpect = http-tokens=required\nv1-interval = 0\n"
                        f"socket = {work}/agent.sock\n")
        notify = NotifyListener(work / "notify.sock")
        # As under systemd: stderr is a journal stream and $JOURNAL_STREAM names it (set by
        # hand here: systemd-cat connects the stream but does not export the variable), a
        # notify socket and a watchdog.
        agent = procs.start(
            ["systemd-cat", "-t", "imds-agent", "sh", "-c",
             'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"', "sh",
             str(build / "agent/imds-agent"), "--config", str(conf),
             "--config-dir", str(work / "conf.d")], work / "agent.log",
            env={**os.environ, "NOTIFY_SOCKET": str(work / "notify.sock"),
                 "WATCHDOG_USEC": "400000"})

        first = wait_for("first-verdict", lambda: events("first-verdict"))[0]
        assert first["MESSAGE_ID"] == IDS["first-verdict"], first
        assert first["IMDS_HTTP_TOKENS"] == "optional", first
        assert first["IMDS_HTTP_ENDPOINT"] == "enabled", first
        assert first["PRIORITY"] == "4", first  # a policy violation makes it a warning
        # One IMDS_FINDING= per finding at warning or worse: journald keeps repeated fields
        # (journalctl shows them as a list).
        findings = first.get("IMDS_FINDING", [])
        findings = [findings] if isinstance(findings, str) else findings
        assert "tokens-optional" in findings, first
        drift = wait_for("policy-drift", lambda: events("policy-drift"))[0]
        assert drift["IMDS_OPTION"] == "HttpTokens" and drift["IMDS_EXPECTED"] == "required", drift
        assert drift["MESSAGE"] == "IMDS option HttpTokens is optional, policy expects required"

        control(str(work / "control.sock"), "POST", "/options", {"http_tokens": "required"})
        changed = wait_for("option-changed", lambda: events("option-changed"))
        wait_for("policy-compliant-again", lambda: events("policy-compliant-again"))
        time.sleep(3)  # three more cycles: the change must be reported exactly once
        changed = events("option-changed")
        assert len(changed) == 1, changed
        c = changed[0]
        assert (c["IMDS_OPTION"], c["IMDS_OLD_VALUE"], c["IMDS_NEW_VALUE"]) == \
            ("HttpTokens", "optional", "required"), c
        assert c["IMDS_HTTP_TOKENS"] == "required", c
        assert c["MESSAGE"] == "IMDS option HttpTokens changed from optional to required", c
        assert c["CODE_FILE"].endswith("agent.cpp") and int(c["CODE_LINE"]) > 0, c
        assert c["CODE_FUNC"], c

        procs.stop(emulator)
        down = wait_for("imds-unreachable", lambda: events("imds-unreachable"))[0]
        assert down["IMDS_ENDPOINT"] == f"http://127.0.0.1:{PORT}", down
        assert down["IMDS_REASON"] == "connection refused", down
        start_emulator(procs, build, work, "--http-tokens", "required", "--hop-limit", "1")
        wait_for("imds-back", lambda: events("imds-back"))
        time.sleep(2)
        assert len(events("imds-unreachable")) == 1 and len(events("imds-back")) == 1
        assert len(events("option-changed")) == 1, "an outage must not look like an option change"

        agent.send_signal(signal.SIGHUP)
        wait_for("config-reloaded", lambda: events("config-reloaded"))
        rc = procs.stop(agent)
        assert rc == 0, f"imds-agent exited {rc} on SIGTERM"
        wait_for("stopping", lambda: events("stopping"))

        # sd_notify: READY=1 once after the first probe with a STATUS, WATCHDOG=1 at half
        # of WATCHDOG_USEC, RELOADING=1 + MONOTONIC_USEC then READY=1 on SIGHUP, STOPPING=1.
        msgs = list(notify.messages)
        ready = [i for i, m in enumerate(msgs) if "READY=1" in m.split("\n")]
        assert len(ready) == 2, msgs  # start-up and after the reload
        assert "STATUS=HttpTokens optional" in msgs[ready[0]], msgs[ready[0]]
        reloading = [i for i, m in enumerate(msgs) if m.startswith("RELOADING=1\nMONOTONIC_USEC=")]
        assert len(reloading) == 1 and reloading[0] < ready[1], msgs
        assert any(m.startswith("STOPPING=1") for m in msgs), msgs
        pings = msgs.count("WATCHDOG=1")
        assert pings >= 10, f"only {pings} watchdog pings"

        # Human logs went to the journal with priorities (stderr is the journal stream), and
        # events were not echoed there a second time.
        human = [e for e in entries() if "IMDS_EVENT" not in e]
        group_warning = [e for e in human if "socket group" in e["MESSAGE"]]
        assert group_warning and group_warning[0]["PRIORITY"] == "4", human
        assert not any("IMDS option HttpTokens changed" in e["MESSAGE"] for e in human), human
        assert (work / "agent.log").read_text() == "", "stderr was used despite JOURNAL_STREAM"

        for e in events():
            name = e["IMDS_EVENT"]
            if name in IDS:
                assert e["MESSAGE_ID"] == IDS[name], e
            if name in PRIORITIES:
                assert int(e["PRIORITY"]) == PRIORITIES[name], e
            assert "@" not in e["MESSAGE"], f"unfilled template: {e['MESSAGE']}"
            assert e["SYSLOG_IDENTIFIER"] == "imds-agent"
            for key in e:
                if key.startswith("IMDS_"):
                    assert key.upper() == key
        seen = {e["IMDS_EVENT"] for e in events()}
        missing = set(IDS) - seen
        assert not missing, f"events never logged: {missing}"

        # The catalog: in this mount namespace, the catalog source dir holds only ours and
        # the binary database is on a tmpfs; index it and let journalctl -x expand an event.
        catalog_src = work / "catalog"
        catalog_src.mkdir()
        shutil.copy(source / "packaging/catalog/imds-agent.catalog", catalog_src)
        os.makedirs("/var/lib/systemd/catalog", exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/var/lib/systemd/catalog"], check=True)
        subprocess.run(["mount", "--bind", str(catalog_src), "/usr/lib/systemd/catalog"],
                       check=True)
        subprocess.run(["journalctl", "--update-catalog"], check=True, capture_output=True)
        listed = subprocess.run(["journalctl", "--list-catalog"], check=True,
                                capture_output=True, text=True).stdout
        for name, mid in IDS.items():
            assert mid in listed, f"{name} ({mid}) is not in the indexed catalog"
        explained = subprocess.run(
            ["journalctl", "-x", "--no-pager", f"MESSAGE_ID={IDS['option-changed']}"],
            check=True, capture_output=True, text=True).stdout
        assert "Subject: An IMDS metadata option changed" in explained, explained
        assert "The instance metadata option HttpTokens changed from optional to" in explained, \
            explained
        assert "@IMDS_" not in explained, "catalog fields were not substituted"
        unreachable = subprocess.run(
            ["journalctl", "-x", "--no-pager", f"MESSAGE_ID={IDS['imds-unreachable']}"],
            check=True, capture_output=True, text=True).stdout
        assert f"http://127.0.0.1:{PORT} cannot be reached from the" in unreachable, unreachable
        print("ok: %d agent entries checked" % len(entries()))
        return 0
    except BaseException:
        r = subprocess.run(["journalctl", "--no-pager", "-o", "short-precise",
                            "SYSLOG_IDENTIFIER=imds-agent"], capture_output=True, text=True)
        print(f"--- journal of imds-agent:\n{r.stdout[-4000:]}", file=sys.stderr)
        for log in ("agent.log", "emulator.log", "journald.log"):
            p = work / log
            if p.exists():
                print(f"--- {log}:\n{p.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--source", required=True, type=Path)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        return inner(args.build.resolve(), args.source.resolve())
    if os.geteuid() != 0:
        print("SKIP: needs root (mount and network namespaces)", file=sys.stderr)
        return SKIP
    for tool in (JOURNALD, shutil.which("journalctl"), shutil.which("unshare")):
        if not tool or not os.path.exists(tool):
            print(f"SKIP: {tool or 'journalctl/unshare'} is missing", file=sys.stderr)
            return SKIP
    r = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "--",
                        sys.executable, __file__, "--inner", "--build", str(args.build),
                        "--source", str(args.source)], timeout=300)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
