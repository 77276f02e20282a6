#!/usr/bin/python3
"""The README demo: an emulated instance with HttpTokens=required, hop limit 1 and the IPv6
endpoint on, one bridge-networked container next to it, and the diagnosis from inside.

Runs `imds-probe` in the instance's namespace and prints its report. Always tears the lab
down. Exit status 0 when the diagnosis was shown, 1 otherwise.

  python3 tests/lab/demo.py --build BUILDDIR
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import Lab, LabError  # noqa: E402

EMULATOR_ARGS = ["--http-tokens", "required", "--hop-limit", "1"]


def probe_command(probe: Path, lab: Lab) -> list[str]:
    """The one place that says how the demo runs imds-probe.

    Only the lab's namespaces are probed: --no-proc-scan, because a /proc scan would also
    find this machine's own namespace, where the IMDS address routes off the machine (and
    /proc/1/ns/net, the usual way to exclude it, is not readable in every sandbox); the
    namespace this demo was started in is excluded for good measure.
    """
    return [str(probe), "--all-containers", "--netns-dir", lab.netns_dir, "--no-proc-scan",
            "--exclude-netns", f"/proc/{os.getpid()}/ns/net"]


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
    print(f"\ndemo: imds-probe exited {r.returncode} without a diagnosis", file=sys.stderr)
    return False


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
            if not os.access(probe, os.X_OK):
                print(f"demo: {probe} is not built; run `meson compile -C {build}`",
                      file=sys.stderr)
                return 1
            if not run_probe(lab, probe):
                return 1
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
