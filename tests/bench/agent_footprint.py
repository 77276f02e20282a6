#!/usr/bin/python3
"""Footprint of imds-agent over many probe cycles with many container namespaces.

Builds a lab with N bridge containers (default 50), runs the agent in the lab's host
namespace with a long interval, and drives >= 1000 cycles with POST /v1/probe back to back.
Prints peak RSS (VmHWM), RSS after the first cycles and at the end (steady state), CPU time
per cycle (utime + stime from /proc/PID/stat), wall time per cycle, and open file
descriptors before and after. Fails only if descriptors grew (a leak), not on timings.

It also counts what a quiet lab should never show, so that runs can be compared: cycles the
agent counted as errors (and of which kind), cycles in which a container did not get IMDSv2,
and connections whose first SYN got no answer and were retried (with what the retry got).
The agent's request-rate bound paces the cycles (about 10 s each at its default of 20
requests/s with 50 containers); --request-rate and --request-burst raise it for quicker runs.

Usage: agent_footprint.py --build BUILD_DIR [--cycles N] [--containers N]
                          [--request-rate N] [--request-burst N]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import (FORBIDDEN_PATH_PARTS, Lab, UnixHTTPConnection,  # noqa: E402
                 skip_unless_lab_possible, stop_process, unix_http)


def api(sock: str, method: str, path: str) -> tuple[int, str]:
    status, _, body = unix_http(sock, method, path, timeout=60)
    return status, body


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])  # kB
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (after pid, comm, state)
    return ticks / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> list[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    out = []
    for fd in sorted(fd_dir.iterdir(), key=lambda p: int(p.name)):
        try:
            out.append(f"{fd.name} -> {os.readlink(fd)}")
        except FileNotFoundError:
            pass
    return out


class Anomalies:
    """What each cycle's answer to POST /v1/probe shows beyond the footprint."""

    def __init__(self, errors_total: int) -> None:
        self.errors_total = errors_total
        self.error_cycles = 0
        self.error_kinds: collections.Counter[str] = collections.Counter()
        self.container_cycles = 0
        self.container_verdicts: collections.Counter[str] = collections.Counter()
        self.retried: collections.Counter[str] = collections.Counter()

    def add(self, doc: dict) -> None:
        agent = doc["agent"]
        if agent["errors_total"] > self.errors_total:
            self.error_cycles += 1
            self.error_kinds[str(agent["last_error"])] += 1
        self.errors_total = agent["errors_total"]
        failing = [t for t in doc.get("inference", {}).get("targets", [])
                   if t.get("target") != "host" and t.get("imdsv2") != "yes"]
        if failing:
            self.container_cycles += 1
            for t in failing:
                self.container_verdicts[t.get("summary", "?")] += 1
        for t in doc.get("targets", []):
            where = "host" if t.get("is_host") else "container"
            for o in t.get("observations", []):
                if o.get("retried"):
                    got = ("answered" if o["outcome"] == "http" or o["connected"]
                           else "no answer again")
                    self.retried[f"{where}, {got}"] += 1

    def report(self, cycles: int) -> None:
        print(f"  cycles with errors:          {self.error_cycles} of {cycles}")
        for kind, n in self.error_kinds.most_common():
            print(f"      {n:6d} x {kind}")
        print(f"  cycles with a container not on IMDSv2: {self.container_cycles} of {cycles}")
        for summary, n in self.container_verdicts.most_common(5):
            print(f"      {n:6d} x {summary}")
        print(f"  connections retried after no answer: {sum(self.retried.values())}")
        for kind, n in sorted(self.retried.items()):
            print(f"      {n:6d} x {kind}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--request-rate", type=float, help="the agent's request-rate (1..100)")
    ap.add_argument("--request-burst", type=int, help="the agent's request-burst (14..200)")
    args = ap.parse_args()
    skip_unless_lab_possible()
    agent_exe = str(args.build.resolve() / "agent" / "imds-agent")

    with Lab(args.build, emulator_args=["--http-tokens", "required", "--hop-limit", "2"]) as lab:
        print(f"building {args.containers} bridge containers...", flush=True)
        for i in range(args.containers):
            lab.add_bridge_container(f"b{i}")
        work = Path(tempfile.mkdtemp(prefix="imds-agent-bench-"))
        sock = str(work / "agent.sock")
        conf = work / "agent.conf"
        conf.write_text("interval = 1h\nmin-probe-gap = 0\nv1-interval = never\n"
                        f"proc-scan = no\nnetns-dir = {lab.netns_dir}\nsocket = {sock}\n"
                        "request-timeout = 1s\nlog-level = warning\n"
                        + (f"request-rate = {args.request_rate}\n" if args.request_rate else "")
                        + (f"request-burst = {args.request_burst}\n" if args.request_burst else ""))
        proc = lab.popen(lab.host, [agent_exe, "--config", str(conf), "--config-dir",
                                    str(work / "conf.d")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(work / "agent.log", "w"))
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(sock):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the agent did not start: " + (work / "agent.log").read_text())
                time.sleep(0.1)
            while True:
                status, body = api(sock, "GET", "/v1/status")
                doc = json.loads(body)
                if doc["agent"]["ready"]:
                    break
                time.sleep(0.1)
            pid = doc["agent"]["pid"]
            targets = 1 + len(doc["agent"]["containers"])
            # Warm-up: the first cycles allocate what the steady state reuses.
            for _ in range(10):
                api(sock, "POST", "/v1/probe")
            fds_before = open_fds(pid)
            rss_early = proc_status(pid)["VmRSS"]
            cpu0 = cpu_seconds(pid)
            t0 = time.monotonic()
            cycles0 = json.loads(api(sock, "GET", "/v1/status")[1])["agent"]["cycles"]
            errors0 = json.loads(api(sock, "GET", "/v1/status")[1])["agent"]["errors_total"]
            anomalies = Anomalies(errors0)
            rss_samples = []
            for i in range(args.cycles):
                status, body = api(sock, "POST", "/v1/probe")
                if status != 200:
                    raise RuntimeError(f"POST /v1/probe answered {status}: {body[:200]}")
                anomalies.add(json.loads(body))
                if i % 100 == 99:
                    rss_samples.append(proc_status(pid)["VmRSS"])
                    reqs = lab.requests()
                    bad = [r for r in reqs if any(p in r.get("path", "") for p in FORBIDDEN_PATH_PARTS)]
                    if bad:
                        raise RuntimeError(f"forbidden requests: {bad[:3]}")
                    lab._control("DELETE", "/requests")  # keep the emulator's log small
                    print(f"  {i + 1} cycles, RSS {rss_samples[-1]} kB", flush=True)
            wall = time.monotonic() - t0
            cpu = cpu_seconds(pid) - cpu0
            final = json.loads(api(sock, "GET", "/v1/status")[1])["agent"]
            fds_after = open_fds(pid)
            st = proc_status(pid)
            done = final["cycles"] - cycles0
            print()
            print(f"imds-agent footprint: {done} probe cycles x {targets} namespaces "
                  f"(host + {targets - 1} containers), IPv4 + IPv6, hop limit 2")
            print(f"  peak RSS (VmHWM):            {st['VmHWM'] / 1024:.1f} MiB")
            print(f"  RSS after warm-up:           {rss_early / 1024:.1f} MiB")
            print("  RSS steady (every 100):      "
                  + ", ".join(f"{s / 1024:.1f}" for s in rss_samples) + " MiB")
            print(f"  RSS at the end:              {st['VmRSS'] / 1024:.1f} MiB")
            print(f"  CPU time per cycle:          {cpu / max(done, 1) * 1000:.1f} ms "
                  f"({cpu / max(done, 1) / targets * 1000:.2f} ms per namespace)")
            print(f"  wall time per cycle:         {wall / max(done, 1) * 1000:.1f} ms")
            print(f"  open fds before / after:     {len(fds_before)} / {len(fds_after)}")
            anomalies.report(done)
            if final["errors_total"] - errors0 != anomalies.error_cycles:
                print(f"  (the agent counted {final['errors_total'] - errors0} errors)")
            if done < args.cycles:
                print(f"FAIL: only {done} cycles ran", file=sys.stderr)
                return 1
            if len(fds_after) > len(fds_before):
                print("FAIL: file descriptors grew:\n  " + "\n  ".join(
                    sorted(set(fds_after) - set(fds_before))), file=sys.stderr)
                return 1
            return 0
        finally:
            stop_process(proc, timeout=30)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
