#!/usr/bin/python3
"""The Debian 12 root file system the end-to-end test boots: debootstrapped from the
machine's own apt mirror, cached as a tarball keyed by its package list.

`python3 e2e_rootfs.py PKG...` builds (or finds) the tarball and prints its path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = "bookworm"
CACHE_DIR = Path("/var/cache/imds-agent-e2e")
# What the test itself needs inside the container, before our package's dependencies:
# an init, D-Bus for systemctl, the lab's tools (ip, nft, sysctl), a client for the
# agent's socket, python3 for lab.py, and setpriv (util-linux, essential) for the
# non-member check.
# acl: setfacl, as imds-agent.conf(5) tells users to give the agent a fleet output directory.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "nftables", "curl", "python3",
                 "ca-certificates", "procps", "acl")
# Bumped when the way the tree is made changes (not only its package list).
LAYOUT_VERSION = "1"


class RootfsError(RuntimeError):
    pass


def apt_mirror() -> str:
    """The Debian archive URI this machine's apt uses for the bookworm suite."""
    sources = Path("/etc/apt/sources.list.d")
    for f in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        # deb822 stanzas: blank-line separated, "Key: value" lines.
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = {}
            for line in stanza.splitlines():
                m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                if m:
                    fields[m.group(1).lower()] = m.group(2).split()
            if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
                    and "main" in fields.get("components", [])):
                return fields["uris"][0]
    lists = [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s+.*\bmain\b", line)
            if m:
                return m.group(1)
    raise RootfsError(f"no apt source for Debian {SUITE} main in /etc/apt/sources.list*: "
                      "configure one (debootstrap needs a mirror)")


def cache_key(packages: list[str]) -> str:
    text = LAYOUT_VERSION + "\n" + SUITE + "\n" + "\n".join(sorted(set(packages)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _debootstrap(packages: list[str], target: Path, log) -> None:
    mirror = apt_mirror()
    argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(sorted(set(packages))),
            SUITE, str(target), mirror]
    print(f"e2e: {' '.join(argv)}", file=log, flush=True)
    r = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0:
        raise RootfsError(f"debootstrap exited {r.returncode} (mirror {mirror}); see the log "
                          "above")
    # The machine-id is made at first boot; an empty file keeps it out of the tarball
    # and lets systemd treat the container as freshly provisioned.
    (target / "etc" / "machine-id").write_text("")
    # Nothing inside may reach a network (there is none with --private-network), and
    # apt must not try: packages come as files.
    (target / "etc" / "apt" / "apt.conf.d" / "99e2e-offline").write_text(
        'Acquire::Languages "none";\nAPT::Install-Recommends "false";\n')


def rootfs_tarball(packages: list[str], log=sys.stderr, use_cache: bool = True) -> Path:
    """A tarball of a bootable rootfs holding BASE_PACKAGES + packages."""
    packages = sorted(set(BASE_PACKAGES) | set(packages))
    key = cache_key(packages)
    CACHE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"rootfs-{SUITE}-{key}.tar.zst"
    with open(CACHE_DIR / ".lock", "w") as lock:
        # Two test runs on one machine share the cache; one builds, the other waits.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if use_cache and tarball.is_file():
            print(f"e2e: using cached rootfs {tarball}", file=log, flush=True)
            return tarball
        work = Path(tempfile.mkdtemp(prefix="imds-e2e-debootstrap-", dir="/var/tmp"))
        try:
            _debootstrap(packages, work / "root", log)
            partial = tarball.with_suffix(".partial")
            r = subprocess.run(["tar", "--zstd", "-C", str(work / "root"), "--numeric-owner",
                                "--xattrs", "-cpf", str(partial), "."],
                               stdout=log, stderr=subprocess.STDOUT, check=False)
            if r.returncode != 0:
                raise RootfsError(f"archiving the rootfs into {partial} failed")
            os.replace(partial, tarball)
            # Older trees of other package lists are dead weight.
            for old in CACHE_DIR.glob(f"rootfs-{SUITE}-*.tar.zst"):
                if old != tarball:
                    old.unlink(missing_ok=True)
        finally:
            # --one-file-system: never follow a mount that a failed step left behind.
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
        return tarball


def extract(tarball: Path, target: Path) -> None:
    target.mkdir(mode=0o755)
    r = subprocess.run(["tar", "--zstd", "-C", str(target), "--numeric-owner", "--xattrs",
                        "-xpf", str(tarball)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RootfsError(f"extracting {tarball} failed: {r.stderr.strip()}")


def main(argv: list[str]) -> int:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        print("e2e_rootfs: needs root and debootstrap", file=sys.stderr)
        return 77
    print(rootfs_tarball(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
