#!/usr/bin/python3
"""The README demo: an emulated instance with HttpTokens=required, hop limit 1 and the IPv6
endpoint on, one bridge-networked container next to it, and the diagnosis from inside.

Runs `imds-probe` in the instance's namespace when the build has a working one; otherwise
shows what curl sees from each namespace. Always tears the lab down.

  python3 tests/lab/demo.py --build BUILDDIR
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import IMDS_V4, IMDS_V6, Lab, LabError, Netns  # noqa: E402

EMULATOR_ARGS = ["--http-tokens", "required", "--hop-limit", "1"]
CURL_MAX_TIME = 2
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


def probe_command(probe: Path, lab: Lab) -> list[str]:
    """The one place that says how the demo runs imds-probe.

    Only the lab's namespaces are probed: --no-proc-scan, because a /proc scan would also
    find this machine's own namespace, where the IMDS address routes off the machine (and
    /proc/1/ns/net, the usual way to exclude it, is not readable in every sandbox); the
    namespace this demo was started in is excluded for good measure.
    """
    return [str(probe), "--all-containers", "--netns-dir", lab.netns_dir, "--no-proc-scan",
            "--exclude-netns", f"/proc/{os.getpid()}/ns/net"]


def probe_works(lab: Lab, probe: Path) -> bool:
    if not os.access(probe, os.X_OK):
        return False
    try:
        r = lab.exec(lab.host, [str(probe), "--help"], timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and "--netns-dir" in r.stdout


def run_probe(lab: Lab, probe: Path) -> bool:
    """Print the probe's report; False when the probe could not run (usage error, crash)."""
    argv = probe_command(probe, lab)
    print(f"$ ip netns exec {lab.host.name} {' '.join(argv)}\n", flush=True)
    env = {"NO_COLOR": "1"} if not sys.stdout.isatty() else {}
    try:
        r = lab.exec(lab.host, argv, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        print("imds-probe did not finish within 60 s", file=sys.stderr)
        return False
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    # 0 healthy, 1 findings, 3 IMDS unreachable: all are diagnoses (probe/render.hpp).
    if r.returncode in (0, 1, 3) and r.stdout.strip():
        print(f"\n(imds-probe exit status {r.returncode})")
        return True
    print(f"\nimds-probe exited {r.returncode}; showing what curl sees instead.\n",
          file=sys.stderr)
    return False


class CurlView:
    """What plain curl sees from one namespace: status (or failure) and time of each step."""

    def __init__(self, lab: Lab, ns: Netns, url_base: str):
        self.lab, self.ns, self.base = lab, ns, url_base

    def _curl(self, method: str, path: str, headers: list[str]) -> tuple[str, str | None]:
        with tempfile.TemporaryDirectory(dir=self.lab.dir) as work:
            hdr, body = Path(work) / "h", Path(work) / "b"
            # Headers through a file: a token never appears on a command line.
            hdr.write_text("".join(h + "\n" for h in headers))
            r = self.lab.exec(self.ns, [
                "curl", "-s", "-g", "-X", method, "-H", f"@{hdr}", "-o", str(body),
                "-m", str(CURL_MAX_TIME), "-w", "%{http_code} %{time_total}",
                self.base + path], timeout=CURL_MAX_TIME + 10)
            code, _, seconds = r.stdout.partition(" ")
            took = f"{float(seconds or 0) * 1000:.0f} ms"
            outcome = {0: None, 7: "refused/unreachable", 28: "timeout",
                       56: "reset"}.get(r.returncode, f"curl error {r.returncode}")
            text = f"{code} in {took}" if outcome is None else f"{outcome} after {took}"
            content = body.read_text(errors="replace") if r.returncode == 0 else None
            return text, content if code == "200" else None

    def row(self) -> list[str]:
        put, token = self._curl("PUT", "/latest/api/token", [f"{TTL_HEADER}: 60"])
        if token:
            v2_get, _ = self._curl("GET", "/latest/meta-data/instance-id",
                                   [f"{TOKEN_HEADER}: {token}"])
        else:
            v2_get = "(no token)"
        v1_get, _ = self._curl("GET", "/latest/meta-data/instance-id", [])
        return [put, v2_get, v1_get]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def verdict(put: str, v2_get: str, v1_get: str) -> str:
    if put.startswith("200") and v2_get.startswith("200"):
        return "IMDSv2 works"
    if v1_get.startswith("200"):
        return f"no token ({put.split(' after')[0]}): SDKs fall back to IMDSv1, slowly"
    return f"no token ({put.split(' after')[0]}) and IMDSv1 refused: no metadata at all"


def curl_table(lab: Lab, namespaces: list[Netns]) -> None:
    rows = [["namespace", "hops", "endpoint", "IMDSv2 token PUT", "GET with token",
             "GET without token (IMDSv1)", "verdict"]]
    for ns in namespaces:
        for name, base in (("IPv4", f"http://{IMDS_V4}"), ("IPv6", f"http://[{IMDS_V6}]")):
            cells = CurlView(lab, ns, base).row()
            rows.append([ns.label, str(ns.distance), name, *cells, verdict(*cells)])
    print_table(rows)
    print("""
The token PUT's answer leaves the IMDS with TTL = the hop limit; every forwarding hop on
the way back (the host routing into a container's bridge) takes one off, and at 0 the
kernel drops it: the PUT times out. GETs are not limited. A container N hops away needs
hop limit > N: aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2""")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="the meson build directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: needs root (it builds network namespaces); run it with sudo",
              file=sys.stderr)
        return 1
    build = Path(args.build).resolve()
    try:
        with Lab(build, emulator_args=EMULATOR_ARGS, ipv6=True) as lab:
            container = lab.add_bridge_container("c1")
            o = lab.options()
            print(f"Emulated instance {o.get('instance_id', '?')} ({o.get('region', '?')}): "
                  f"HttpTokens={o['http_tokens']}, HttpPutResponseHopLimit={o['hop_limit']}, "
                  f"HttpProtocolIpv6={o['ipv6']}.\n"
                  f"Namespaces: the instance ({lab.host.name}) and a bridge container "
                  f"'{container.label}' one forwarding hop away ({container.name}).\n",
                  flush=True)
            probe = build / "probe" / "imds-probe"
            if probe_works(lab, probe) and run_probe(lab, probe):
                pass
            else:
                if not probe.exists():
                    print(f"({probe} is not built yet: showing what curl sees.)\n")
                curl_table(lab, [lab.host, container])
            bad = lab.forbidden_requests()
            if bad:
                print(f"demo: something asked the IMDS for secrets: {bad}", file=sys.stderr)
                return 1
    except LabError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
