#!/usr/bin/python3
"""Benchmark of imds-probe in the namespace lab: prints figures, asserts nothing about time.

Wall time of a host-only run; of runs over 1, 10, 50 and 200 bridge-container namespaces with
hop limit 2 (every PUT answered) and hop limit 1 (PUT responses dropped after one hop), with
and without packet sockets (without them the dropped PUTs cannot be predicted and cost a
timeout); peak RSS; and the same diagnosis done the way people do it today: a shell loop of
`nsenter` + `curl` per namespace, and botocore's region lookup run in each container.

Usage: bench_probe.py --build BUILD_DIR [--sizes 1,10,50,200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import Lab, Netns, skip_unless_lab_possible  # noqa: E402

TIMEOUT = "1s"  # per request, for the probe and the baselines alike (botocore's default)

# What people run per namespace: token PUT, then a GET with it, else a tokenless GET. The
# token only ever lives in a shell variable; nothing is printed.
SHELL_LOOP = r"""
for ns in "$@"; do
  nsenter --net="$ns" sh -c '
    t=$(curl -s -f -m 1 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
        http://169.254.169.254/latest/api/token)
    if [ -n "$t" ]; then
      curl -s -f -m 1 -H "X-aws-ec2-metadata-token: $t" \
        http://169.254.169.254/latest/meta-data/instance-id >/dev/null && echo "v2 ok" || echo "v2 failed"
    else
      curl -s -f -m 1 http://169.254.169.254/latest/meta-data/instance-id >/dev/null \
        && echo "v1 only" || echo "nothing"
    fi'
done
"""

# botocore's own IMDS client, as an SDK in a container uses it (region lookup: token PUT,
# then placement/availability-zone; never credentials).
BOTOCORE = r"""
from botocore.utils import IMDSRegionProvider
import botocore.session
session = botocore.session.get_session()
print(IMDSRegionProvider(session).provide())
"""


def timed(fn) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


WRONG: list[str] = []  # verdicts that did not match the lab, reported under the table


def run_probe(lab: Lab, probe: str, extra: list[str], containers: str | None,
              want_token: bool | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB, from /usr/bin/time) of one probe run. With
    want_token, also checks that every container got (or did not get) a token: a fast run
    that gave wrong answers would be no figure at all, so wrong verdicts are reported."""
    argv = ["/usr/bin/time", "-f", "BENCH-RSS %M", probe, "--json=short", "--timeout", TIMEOUT]
    if containers:
        argv += ["--all-containers", "--netns-dir", containers, "--no-proc-scan",
                 "--exclude-netns", f"/proc/{os.getpid()}/ns/net"]
    t = time.monotonic()
    r = lab.exec(lab.host, argv + extra, timeout=600)
    wall = time.monotonic() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"imds-probe exited {r.returncode}: {r.stderr[-2000:]}")
    if want_token is not None:
        doc = json.loads(r.stdout)
        wrong = [v["target"] for v in doc["inference"]["targets"]
                 if v["target"] != "host" and (v["imdsv2"] == "yes") != want_token]
        if wrong:
            first = next(v for v in doc["inference"]["targets"] if v["target"] == wrong[0])
            WRONG.append(f"{len(wrong)} of {len(doc['inference']['targets']) - 1} namespaces "
                         f"wrong with {' '.join(extra)} (want token: {want_token}), e.g. "
                         f"{wrong[0]}: {first['summary']}")
    rss = 0
    for line in r.stderr.splitlines():
        if line.startswith("BENCH-RSS "):
            rss = int(line.split()[1])
    return wall, rss


def median_probe(lab: Lab, probe: str, extra: list[str], containers: str | None,
                 repeat: int, want_token: bool | None = None) -> tuple[float, int]:
    runs = [run_probe(lab, probe, extra, containers, want_token) for _ in range(repeat)]
    return statistics.median(w for w, _ in runs), max(r for _, r in runs)


def shell_loop(lab: Lab, namespaces: list[Netns]) -> float:
    paths = [ns.path for ns in namespaces]
    return timed(lambda: lab.exec(lab.host, ["sh", "-c", SHELL_LOOP, "loop", *paths],
                                  timeout=900))


def botocore_loop(lab: Lab, namespaces: list[Netns]) -> float:
    def go() -> None:
        for ns in namespaces:
            lab.exec(ns, ["/usr/bin/python3", "-c", BOTOCORE], timeout=60)
    return timed(go)


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(HERE.parents[1] / "build"))
    parser.add_argument("--sizes", default="1,10,50,200")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-max", type=int, default=50,
                        help="largest N for the hop-limit-1 baselines (each costs N seconds)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if sizes[-1] > 240:
        parser.error("at most 240 containers fit on the lab's bridge")
    skip_unless_lab_possible(("nsenter", "curl"))
    probe = str(Path(args.build, "probe", "imds-probe").resolve())
    if not os.access(probe, os.X_OK):
        print(f"SKIP: {probe} is not built", file=sys.stderr)
        return 77

    rows = []
    with Lab(args.build, emulator_args=["--http-tokens", "required", "--hop-limit", "2"]) as lab:
        lab.set_options(hop_limit=2)
        host_wall, host_rss = median_probe(lab, probe, ["--no-ipv6"], None, args.repeat)
        # Every container first: a bridge takes the lowest MAC of its ports, so adding ports
        # between measurements can change the gateway's MAC under the older containers' ARP
        # caches and cost them a connect timeout (seen: the lab's br0 has no fixed MAC).
        t = time.monotonic()
        all_containers = [lab.add_bridge_container(f"b{i + 1}") for i in range(sizes[-1])]
        build = time.monotonic() - t
        for n in sizes:
            containers = all_containers[:n]
            subset = Path(lab.dir) / f"bench-{n}"
            subset.mkdir()
            for ns in containers:
                (subset / ns.label).symlink_to(ns.path)
            row: dict[str, object] = {"n": n}
            # A fresh emulator per row: the PUT responses dropped in the previous row's
            # hop-limit-1 runs linger as retransmitting server sockets, and a masqueraded
            # source port that meets one of them costs the new connection a SYN timeout.
            lab.stop_emulator()
            lab.start_emulator()
            for hop in (2, 1):
                lab.set_options(hop_limit=hop)
                row[f"probe{hop}"], row[f"rss{hop}"] = median_probe(
                    lab, probe, ["--no-ipv6"], str(subset), args.repeat, want_token=hop > 1)
                if hop == 1:  # without packet sockets nothing can be predicted
                    row["nopkt1"], _ = run_probe(lab, probe, ["--no-ipv6", "--no-packet-ttl"],
                                                 str(subset), want_token=False)
                big = hop == 1 and n > args.baseline_max
                row[f"shell{hop}"] = None if big else shell_loop(lab, containers)
                row[f"boto{hop}"] = None if n > 10 else botocore_loop(lab, containers)
            rows.append(row)
            print(f"... N={n} done", file=sys.stderr, flush=True)
        if lab.forbidden_requests():
            raise SystemExit("a request for credentials or user data reached the emulator")

    print()
    print(f"imds-probe benchmark (IPv4 only, per-request timeout {TIMEOUT}, median of "
          f"{args.repeat} probe runs; 2 shared cores: figures are indicative)")
    print(f"host only: {host_wall:.3f} s wall, peak RSS {host_rss / 1024:.1f} MiB; "
          f"building the {sizes[-1]} lab containers took {build:.1f} s")
    print()
    head = ("N", "probe hop 2", "probe hop 1", "hop 1 no pkt", "peak RSS", "nsenter+curl hop 2",
            "nsenter+curl hop 1", "botocore hop 2", "botocore hop 1")
    print(" | ".join(head))
    print(" | ".join("-" * len(h) for h in head))
    for r in rows:
        print(" | ".join([
            str(r["n"]), fmt_s(r["probe2"]), fmt_s(r["probe1"]), fmt_s(r["nopkt1"]),
            f"{max(r['rss2'], r['rss1']) / 1024:.1f} MiB",
            fmt_s(r["shell2"]), fmt_s(r["shell1"]), fmt_s(r["boto2"]), fmt_s(r["boto1"]),
        ]))
    print()
    print("Every probe run's verdicts were checked against the lab (all N containers get a "
          "token at hop limit 2, none at 1): " + ("all right." if not WRONG else "WRONG:"))
    for w in WRONG:
        print("  " + w)
    print("'-': not run (hop-limit-1 baselines cost one timeout per namespace; botocore runs "
          "only up to N=10).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
