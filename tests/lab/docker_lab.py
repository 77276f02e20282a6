"""A real Docker engine (Debian's docker.io) in a lab: containers made by Docker itself, on
its default bridge, on a user-defined bridge network and with `--network host`.

The engine runs in the lab's host network namespace (never the machine's own: its containers
would send IMDS traffic off the machine, and dockerd rewrites that namespace's iptables) and
in PID and mount namespaces of its own (`unshare --pid --fork --mount-proc`):
- the PID namespace makes a /proc scan from inside see only the engine, its containers and
  what the test starts there, never the machine's processes (whose network namespace is the
  machine's own);
- in the mount namespace dockerd bind-mounts each container's network namespace onto a file
  of `<exec-root>/netns`, and those mounts stay there: seen from the test's own mount
  namespace the files are empty, as from a tool container without mount propagation.
  /run/netns is an empty tmpfs inside, as on a Docker host (the machine's holds the labs').

Everything lives under the lab's directory and goes with the lab (`Lab.on_close`): the
containers, then dockerd (by its pid: SIGTERM, then SIGKILL), and with it, as the init of its
PID namespace, every process left in there; its mounts go with its mount namespace, its
bridges and iptables rules with the lab's host namespace. If the test process dies, the
engine dies too (parent-death signals on unshare and on dockerd).
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Sequence

from lab import SKIP, Lab, LabError

# Debian's client, which matches Debian's daemon (/usr/local/bin may hold a newer client
# whose API the 20.10 daemon does not speak).
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"  # busybox-static: runs in an image with nothing else in it
IMAGE = "imds-lab/busybox:1"
# Applets the containers use: the shell, sleep, and wget for IMDSv1 calls.
_APPLETS = ("sh", "sleep", "wget", "true", "cat")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_ID_RE = re.compile(r"^[0-9a-f]{64}$")


def skip_unless_docker_possible() -> None:
    """Exit 77 (meson's SKIP) without root; fail (not skip) when root lacks the tools, which
    packaging/install-deps --release-tools installs: CI must run these tests."""
    if os.geteuid() != 0:
        print("SKIP: the Docker lab needs root", file=sys.stderr)
        sys.exit(SKIP)
    missing = [p for p in (DOCKER, DOCKERD, BUSYBOX, shutil.which("unshare") or "unshare",
                           shutil.which("nsenter") or "nsenter") if not os.access(p, os.X_OK)]
    if missing:
        raise LabError(f"the Docker lab needs {', '.join(missing)}: run "
                       "packaging/install-deps --release-tools (docker.io, busybox-static)")


@dataclasses.dataclass(frozen=True)
class Container:
    id: str  # the full 64-hex id
    name: str
    network: str  # "bridge", "host" or a user-defined network's name

    @property
    def short(self) -> str:
        """The 12-hex id, as `docker ps` and imds-probe show it."""
        return self.id[:12]


def _image_tar() -> bytes:
    """An image root file system: /bin/busybox and its applets, nothing else."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for d in ("bin", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755 if d == "bin" else 0o1777
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in _APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return out.getvalue()


def _die_with_parent() -> None:
    # SIGKILL, not the lab's SIGTERM: `unshare --fork` ignores SIGTERM (it passes it on to
    # its child), and this must end it whatever it does.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class DockerEngine:
    """dockerd and its containerd in `lab`'s host namespace; see the module's docstring."""

    def __init__(self, lab: Lab, bridge_cidr: str = "10.213.0.1/24", start_timeout: float = 60):
        self.lab = lab
        self.dir = lab.dir / "docker"
        self.data_root = self.dir / "data"
        self.exec_root = self.dir / "exec"
        self.socket = self.dir / "docker.sock"
        self.log_path = self.dir / "dockerd.log"
        self.containers: dict[str, Container] = {}
        self._closed = False
        for d in (self.data_root, self.exec_root):
            d.mkdir(parents=True, mode=0o711)
        dockerd = [DOCKERD, "--data-root", str(self.data_root), "--exec-root",
                   str(self.exec_root), "-H", f"unix://{self.socket}",
                   "--pidfile", str(self.dir / "dockerd.pid"), "--bip", bridge_cidr,
                   # vfs: no overlayfs on whatever file system /run is on; the image is tiny.
                   "--storage-driver", "vfs", "--userland-proxy=false", "--log-level", "warn",
                   "--shutdown-timeout", "2"]
        script = ("mount -t tmpfs -o size=64k,mode=0755 imds-lab-netns /run/netns && "
                  'exec "$@"')
        with open(self.log_path, "w") as log:
            # --kill-child: dockerd, the init of the PID namespace, dies with unshare (and so
            # does everything in there); unshare dies with this process (pdeathsig).
            self._holder = subprocess.Popen(
                ["nsenter", f"--net={lab.host.path}", "--", "unshare", "--pid", "--fork",
                 "--kill-child", "--mount-proc", "--propagation", "private", "--",
                 "sh", "-c", script, "dockerd", *dockerd],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=lab.env(), start_new_session=True, preexec_fn=_die_with_parent)
        lab.on_close(self.close)
        try:
            self.init_pid = self._find_init(start_timeout)
            self._wait_ready(start_timeout)
            self.docker("import", "-", IMAGE, input_bytes=_image_tar())
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"DockerEngine({self.dir})"

    # ----- start -----------------------------------------------------------------------

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    def _find_init(self, timeout: float) -> int:
        """The pid (in our PID namespace) of unshare's child: dockerd, once it has exec'd."""
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{self._holder.pid}/task/{self._holder.pid}/children")
        while time.monotonic() < deadline:
            if self._holder.poll() is not None:
                raise LabError(f"dockerd exited at once ({self._holder.returncode}):\n"
                               f"{self._log_tail()}")
            try:
                pids = children.read_text().split()
                if pids and os.path.basename(os.readlink(f"/proc/{pids[0]}/exe")) == "dockerd":
                    return int(pids[0])
            except OSError:
                pass
            time.sleep(0.02)
        raise LabError(f"dockerd never started:\n{self._log_tail()}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._holder.poll() is not None:
                raise LabError(f"dockerd exited ({self._holder.returncode}):\n{self._log_tail()}")
            r = self.client(["version", "--format", "{{.Server.Version}}"], timeout=10)
            if r.returncode == 0:
                return
            last = r.stderr.strip()
            time.sleep(0.1)
        raise LabError(f"dockerd never answered on {self.socket}: {last}\n{self._log_tail()}")

    # ----- the client ------------------------------------------------------------------

    def client(self, args: Sequence[str], timeout: float, input_bytes: bytes | None = None
               ) -> subprocess.CompletedProcess[str]:
        """The Docker client's run, whatever its exit status (docker() raises on failure)."""
        # The client only talks to the socket: it runs where the test runs.
        try:
            r = subprocess.run([DOCKER, "-H", f"unix://{self.socket}", *args],
                               input=input_bytes, capture_output=True, timeout=timeout,
                               env={**self.lab.env(), "DOCKER_CONFIG": str(self.dir / "client")},
                               check=False)
        except subprocess.TimeoutExpired as e:
            raise LabError(f"docker {' '.join(args)}: no answer in {timeout} s") from e
        return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                           r.stderr.decode(errors="replace"))

    def docker(self, *args: str, timeout: float = 60, input_bytes: bytes | None = None) -> str:
        """Run the Docker client against this engine; its stdout, or LabError."""
        if self._closed:
            raise LabError("the Docker engine is closed")
        r = self.client(args, timeout, input_bytes)
        if r.returncode != 0:
            raise LabError(f"docker {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def network(self, name: str, subnet: str) -> None:
        """A user-defined bridge network."""
        self.docker("network", "create", "--driver", "bridge", "--subnet", subnet, name)

    def run(self, name: str, network: str = "bridge", command: Sequence[str] = ("sleep", "3600"),
            extra: Sequence[str] = ()) -> Container:
        """`docker run -d` a container of the lab's image; returns it once it runs."""
        if not _NAME_RE.match(name) or name in self.containers:
            raise ValueError(f"container name {name!r}: lowercase, unique in this engine")
        out = self.docker("run", "-d", "--name", name, "--network", network, *extra, IMAGE,
                          *command).strip()
        if not _ID_RE.match(out):
            raise LabError(f"docker run {name}: unexpected output {out!r}")
        c = Container(id=out, name=name, network=network)
        self.containers[name] = c
        return c

    def remove(self, c: Container) -> None:
        self.docker("rm", "-f", c.id)
        self.containers.pop(c.name, None)

    def exec_in(self, c: Container, argv: Sequence[str], timeout: float = 30) -> str:
        """`docker exec` argv in container c; its stdout."""
        return self.docker("exec", c.id, *argv, timeout=timeout)

    # ----- running things where dockerd runs --------------------------------------------

    @property
    def netns_dir(self) -> Path:
        """Where dockerd bind-mounts its containers' network namespaces."""
        return self.exec_root / "netns"

    def inside(self, argv: Sequence[str]) -> list[str]:
        """argv entered into dockerd's PID, mount and network namespaces."""
        return ["nsenter", "-t", str(self.init_pid), "-p", "-m", "-n", "--", *argv]

    def popen(self, argv: Sequence[str], env: dict[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[str]:
        """Start argv where dockerd runs (its own process group; the lab kills it on close
        if it still runs)."""
        if self._closed:
            raise LabError("the Docker engine is closed")
        proc = subprocess.Popen(self.inside(argv), env=self.lab.env(env), text=True,
                                start_new_session=True, **kwargs)
        self.lab._children.append(proc)  # noqa: SLF001 - the lab's own kill-on-close list
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 20) -> int | None:
        """SIGTERM what popen() started (nsenter forks into the PID namespace: its child is
        the process), give it `timeout` seconds, then SIGKILL the group; its exit status."""
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        try:
            for pid in children.read_text().split():
                os.kill(int(pid), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        try:
            proc.wait(timeout=timeout)  # nsenter exits once its child has
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return proc.returncode

    def exec(self, argv: Sequence[str], timeout: float = 30, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
        """Run argv where dockerd runs; on timeout its process group is killed and
        subprocess.TimeoutExpired raised."""
        proc = self.popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    # ----- teardown --------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._holder.poll() is None and self.containers:
                ids = [c.id for c in self.containers.values()]
                self.client(["rm", "-f", *ids], timeout=30)
        except LabError:
            pass  # dockerd's end below takes every container with it
        finally:
            self.containers.clear()
            self._stop()

    def _stop(self) -> None:
        if self._holder.poll() is None:
            try:
                os.kill(self.init_pid, signal.SIGTERM)
            except (AttributeError, ProcessLookupError):
                pass  # never found: the holder's end below ends it
            try:
                self._holder.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        if self._holder.poll() is None:
            os.killpg(self._holder.pid, signal.SIGKILL)  # --kill-child ends dockerd with it
            self._holder.wait()
