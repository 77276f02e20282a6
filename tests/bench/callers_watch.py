#!/usr/bin/python3
"""Benchmark of the passive caller watch (`imds-probe callers --watch`) in the namespace lab:
prints figures, asserts nothing about time.

N bridge containers each send a burst of tokenless GETs with curl while the watch listens in
the host namespace (hop limit 2, tokens optional); the watch's own CPU time (user + system,
from wait4), peak RSS, the requests it booked against those sent, and its cost idle.

Usage: callers_watch.py --build BUILD_DIR [--containers 10] [--requests 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import IMDS_V4, Lab, skip_unless_lab_possible  # noqa: E402

# One container's burst: sequential tokenless GETs, each its own connection.
BURST = r"""
i=0
while [ "$i" -lt "$1" ]; do
  curl -s -o /dev/null -m 2 "http://%s/latest/meta-data/ami-id"
  i=$((i + 1))
done
""" % IMDS_V4


def cpu_and_rss(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS (MiB) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return cpu, hwm


def watch(lab: Lab, probe: str, seconds: float, load=None,
          extra: tuple[str, ...] = ()) -> tuple[dict, float, float, float]:
    """A watch for `seconds` (with `load` run meanwhile); its JSON, its CPU seconds and peak
    RSS read just before SIGINT ends it (`ip netns exec` execs the probe), and the wall time."""
    started = time.monotonic()
    proc = lab.popen(lab.host, [probe, "callers", "--watch", "10m", "--json=short",
                                "--netns-dir", lab.netns_dir, "--no-proc-scan", "--no-ipv6", *extra],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    if load is not None:
        load()
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    cpu, rss = cpu_and_rss(proc.pid)
    wall = time.monotonic() - started
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return json.loads(out), cpu, rss, wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--containers", type=int, default=10)
    ap.add_argument("--requests", type=int, default=100, help="per container")
    args = ap.parse_args()
    skip_unless_lab_possible(["curl"])
    probe = str(Path(args.build).resolve() / "probe" / "imds-probe")
    lab = Lab(Path(args.build).resolve(), emulator_args=["--http-tokens", "optional",
                                                         "--hop-limit", "2"], ipv6=False)
    try:
        containers = [lab.add_bridge_container(f"c{i}", families=("v4",))
                      for i in range(args.containers)]
        idle, idle_cpu, idle_rss, idle_wall = watch(lab, probe, 10)

        def load() -> None:
            procs = [lab.popen(ns, ["sh", "-c", BURST, "burst", str(args.requests)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for ns in containers]
            for p in procs:
                p.wait(timeout=600)

        busy, busy_cpu, busy_rss, busy_wall = watch(lab, probe, 5, load)
        bare, bare_cpu, bare_rss, bare_wall = watch(lab, probe, 5, load, ("--no-process-lookup",))
        sent = args.containers * args.requests
        booked = sum(c["imdsv1_calls"] for c in busy["callers"])
        print()
        print(f"passive caller watch, {args.containers} containers x {args.requests} tokenless "
              f"GETs (curl, one connection each), all at once")
        print(f"{'case':22} {'wall s':>7} {'CPU ms':>8} {'CPU us/req':>11} {'peak RSS MiB':>13} "
              f"{'requests':>9} {'packets':>8}")
        print(f"{'idle':22} {idle_wall:7.1f} {idle_cpu * 1000:8.0f} {'-':>11} "
              f"{idle_rss:13.1f} {idle['exchanges']:9d} {idle['packets']['seen']:8d}")
        print(f"{'under load':22} {busy_wall:7.1f} {busy_cpu * 1000:8.0f} "
              f"{busy_cpu * 1e6 / max(sent, 1):11.1f} {busy_rss:13.1f} "
              f"{booked:9d} {busy['packets']['seen']:8d}")
        bare_booked = sum(c["imdsv1_calls"] for c in bare["callers"])
        print(f"{'load, no process lookup':22} {bare_wall:7.1f} {bare_cpu * 1000:8.0f} "
              f"{bare_cpu * 1e6 / max(sent, 1):11.1f} {bare_rss:13.1f} "
              f"{bare_booked:9d} {bare['packets']['seen']:8d}")
        print(f"requests sent {sent}, booked {booked} ({100.0 * booked / max(sent, 1):.1f} %), "
              f"callers {len(busy['callers'])}, packet copies {busy['packets']['copies']}, "
              f"dropped by the kernel {busy['packets']['dropped_by_kernel']}, "
              f"owners found {busy['processes']['found']} of {sent}")
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
