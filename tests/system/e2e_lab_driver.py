#!/usr/bin/python3
"""Runs INSIDE the end-to-end test's nspawn container: builds the emulator lab there and
connects the container's own network namespace (where imds-agent runs, as on an
instance's host) straight to the lab's IMDS namespace, then obeys commands.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.
  first line out: {"ok": true, "netns_dir": ..., "containers": {label: path}}
  {"cmd": "add_bridge_container", "label": "c2"}   -> {"ok": true, "path": ...}
  {"cmd": "set_options", "options": {...}}          -> {"ok": true, "options": {...}}
  {"cmd": "requests"}                               -> {"ok": true, "requests": [...]}
  {"cmd": "forbidden"}                              -> {"ok": true, "requests": [...]}
  {"cmd": "quit"} or end of input                   -> the lab is torn down
Usage: e2e_lab_driver.py BUILD_DIR [emulator args...]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import IMDS_V4, IMDS_V6, Lab  # noqa: E402  (copied next to this file)

# The link between the container's root namespace and the lab's IMDS namespace. The
# container has no other interface (--private-network), so nothing can leave it.
ROOT_LINK = "imds-e2e"
ROOT_V4, IMDS_SIDE_V4 = "10.254.254.2", "10.254.254.1"
ROOT_V6, IMDS_SIDE_V6 = "fd00:e2e::2", "fd00:e2e::1"


def run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` exited {r.returncode}: {r.stderr.strip()}")


def connect_root_namespace(lab: Lab) -> None:
    """Route the IMDS addresses from this (the container's root) namespace to the lab's
    IMDS directly: the agent here sees the IMDS as an instance's host does, 0 hops."""
    run(["ip", "link", "add", ROOT_LINK, "type", "veth", "peer", "name", "root0",
         "netns", lab.imds.name])
    run(["ip", "addr", "add", f"{ROOT_V4}/30", "dev", ROOT_LINK])
    run(["ip", "addr", "add", f"{ROOT_V6}/64", "dev", ROOT_LINK, "nodad"])
    run(["ip", "link", "set", ROOT_LINK, "up"])
    run(["ip", "-n", lab.imds.name, "addr", "add", f"{IMDS_SIDE_V4}/30", "dev", "root0"])
    run(["ip", "-n", lab.imds.name, "addr", "add", f"{IMDS_SIDE_V6}/64", "dev", "root0",
         "nodad"])
    run(["ip", "-n", lab.imds.name, "link", "set", "root0", "up"])
    run(["ip", "route", "add", f"{IMDS_V4}/32", "via", IMDS_SIDE_V4])
    run(["ip", "-6", "route", "add", f"{IMDS_V6}/128", "via", IMDS_SIDE_V6])


def answer(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with Lab(argv[0], emulator_args=argv[1:], ipv6=True) as lab:
        connect_root_namespace(lab)
        c1 = lab.add_bridge_container("c1")
        answer({"ok": True, "netns_dir": lab.netns_dir, "containers": {"c1": c1.path}})
        for line in sys.stdin:
            try:
                req = json.loads(line)
                cmd = req.get("cmd")
                if cmd == "quit":
                    break
                if cmd == "add_bridge_container":
                    ns = lab.add_bridge_container(req["label"])
                    answer({"ok": True, "path": ns.path, "name": ns.name})
                elif cmd == "set_options":
                    answer({"ok": True, "options": lab.set_options(**req["options"])})
                elif cmd == "requests":
                    answer({"ok": True, "requests": lab.all_requests()})
                elif cmd == "forbidden":
                    answer({"ok": True, "requests": lab.forbidden_requests()})
                else:
                    answer({"ok": False, "error": f"unknown command {cmd!r}"})
            except Exception as e:  # noqa: BLE001  (reported to the driving test)
                answer({"ok": False, "error": f"{type(e).__name__}: {e}"})
    answer({"ok": True, "closed": True})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
