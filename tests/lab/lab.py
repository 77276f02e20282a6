#!/usr/bin/python3
"""Network-namespace lab: an emulated IMDS, the instance ("host") and containers at
known forwarding distances, built with real veths, bridges, routes and nftables.

Used by the lab-suite tests and the README demo (see HACKING.md, "The lab").
`python3 lab.py cleanup` removes what crashed runs left behind.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import http.client
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path
from typing import Any, Iterable, Sequence

IMDS_V4 = "169.254.169.254"
IMDS_V6 = "fd00:ec2::254"
HOST_V4 = "169.254.0.2"
HOST_V6 = "fd00:ec2::2"
BRIDGE_V4 = "172.17.0.1"
BRIDGE_V6 = "fd00:172:17::1"
NESTED_BRIDGE_V4 = "172.18.0.1"
NESTED_BRIDGE_V6 = "fd00:172:18::1"

LAB_ROOT = Path("/run/imds-lab")
NETNS_ROOT = Path("/run/netns")
NFT_TABLE = "imdslab"

# Paths no test may ever request (they carry secrets on a real instance).
FORBIDDEN_PATH_PARTS = ("iam/security-credentials", "identity-credentials", "user-data")

# il<base36 pid><4 random>: the pid lets `cleanup` tell a crashed run from a live one.
_PREFIX_RE = re.compile(r"^il([0-9a-z]{1,5})[0-9a-z]{4}$")
_LABEL_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_B36 = string.digits + string.ascii_lowercase

# Client environment inside the lab: no proxies or AWS settings leak in from the caller,
# and HOME points into the lab so no ~/.aws of the machine is read.
_CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Kept from the caller: tests/sanitize/run.py runs the lab suite against sanitizer builds and
# needs every report of the binaries started here (log_path, abort on error).
_SANITIZER_VARIABLES = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS")

SKIP = 77

# Address families, as the `families` keywords name them.
FAMILIES = ("v4", "v6")


class LabError(RuntimeError):
    """The lab could not be built or driven; the message says which step failed."""


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(argv: Sequence[str], what: str, input_text: str | None = None) -> str:
    r = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise LabError(f"{what} failed: `{' '.join(argv)}` exited {r.returncode}: "
                       f"{(r.stderr or r.stdout).strip()}")
    return r.stdout


def _families(families: Iterable[str], what: str) -> tuple[str, ...]:
    """`families` checked and in canonical order: a non-empty subset of ("v4", "v6")."""
    if isinstance(families, str):  # ("v4") instead of ("v4",): a common slip
        families = (families,)
    given = set(families)
    if not given or not given <= set(FAMILIES):
        raise ValueError(f"{what}: families {tuple(families)!r}: give a non-empty subset of "
                         f"{FAMILIES!r}")
    return tuple(f for f in FAMILIES if f in given)


def skip_unless_lab_possible(tools: Iterable[str] = ()) -> None:
    """Exit 77 (meson's SKIP) when this process cannot build a lab or a needed tool is missing."""
    if os.geteuid() != 0:
        print("SKIP: the lab needs root (network namespaces, nftables)", file=sys.stderr)
        sys.exit(SKIP)
    for tool in ("ip", "nft", *tools):
        if shutil.which(tool, path=_CLEAN_PATH) is None:
            print(f"SKIP: `{tool}` is not installed", file=sys.stderr)
            sys.exit(SKIP)


def _set_pdeathsig() -> None:
    # The emulator must not outlive the lab process, even when that is SIGKILLed.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


@dataclasses.dataclass(eq=False)  # identity: exec() only accepts the lab's own objects
class Netns:
    """One network namespace of the lab."""

    name: str  # the `ip netns` name
    label: str  # what tests and reports call it: host, c1, ...
    distance: int  # forwarding hops between the IMDS and this namespace
    v4: str | None = None  # None: the namespace has no IPv4 address or route (families)
    v6: str | None = None  # None: no IPv6 address or route (loopback aside)
    outer: Netns | None = None  # for a DinD container: the container it runs in

    @property
    def families(self) -> tuple[str, ...]:
        """The address families this namespace has an address and a route in."""
        return tuple(f for f, addr in (("v4", self.v4), ("v6", self.v6)) if addr)

    @property
    def path(self) -> str:
        return str(NETNS_ROOT / self.name)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (the emulator's control socket, the agent's API)."""

    def __init__(self, path: str, timeout: float = 15):
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def unix_http(path: str, method: str, url: str, timeout: float = 15) -> tuple[int, str, str]:
    """One request over a Unix socket (the agent's API): status, Content-Type, body."""
    conn = UnixHTTPConnection(path, timeout=timeout)
    try:
        conn.request(method, url)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read().decode()
    finally:
        conn.close()


# The emulator's tokens: 56 characters of the URL-safe base64 alphabet. Tests search every
# output for such a string: a printed token is a defect.
TOKEN_LIKE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{56}(?![A-Za-z0-9_-])")


def stop_process(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM a process this test started, give it `timeout` seconds to exit cleanly, then
    SIGKILL it; returns its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_packet_sockets(proc: subprocess.Popen[Any], count: int, timeout: float = 15) -> None:
    """Wait until `proc` (a caller watch) holds `count` bound packet sockets: from then on
    it captures every IMDS packet of its namespace (the kernel queues them for it), so a
    client may start. A fixed sleep raced the watch's start on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"the watch exited ({proc.returncode}) before it was ready")
        # The process itself, or (nsenter -p forks) its child.
        pids = [str(proc.pid)]
        try:
            pids += Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            pass
        for pid in pids:
            try:
                owned = set()
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        owned.add(target[8:-1])
                with open(f"/proc/{pid}/net/packet") as f:
                    bound = {line.split()[-1] for line in f.readlines()[1:] if line.split()}
            except OSError:
                continue
            if len(owned & bound) >= count:
                return
        time.sleep(0.05)
    raise LabError(f"the watch (pid {proc.pid}) held no {count} packet sockets in {timeout} s")


class LoggedProcess:
    """A process of the test's whose merged stdout/stderr a thread collects line by line
    into `lines` (read under `lock`): the agent's human log and events, in the lab."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.proc = proc
        self.lines: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))


def start_agent(lab: "Lab", agent: str, conf: Path, conf_dir: Path) -> LoggedProcess:
    """imds-agent in the lab's host namespace with `conf` and drop-in dir `conf_dir`, its
    log collected."""
    return LoggedProcess(lab.popen(lab.host, [agent, "--config", str(conf),
                                              "--config-dir", str(conf_dir)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT))


def close_agent_lab(lab: "Lab", agent: subprocess.Popen, work: Path) -> list:
    """Stops the agent, tears the lab down and removes `work`, whatever fails; returns the
    credential or user-data requests the emulator saw (there must be none)."""
    try:
        stop_process(agent, timeout=20)
    finally:
        forbidden = lab.forbidden_requests()
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return forbidden


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels` (a regular expression
    each, matched whole) in Prometheus text, parsed by the Prometheus project's own parser;
    None when there is none. The order of labels in the text does not matter."""
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                    re.fullmatch(pattern, sample.labels.get(key, "")) is not None
                    for key, pattern in labels.items()):
                return float(sample.value)
    return None


def check_prometheus_text(text: str) -> None:
    """The Prometheus project's own Python parser, promtool when installed, and a strict
    line check."""
    from prometheus_client.parser import text_string_to_metric_families
    families = list(text_string_to_metric_families(text))  # raises on malformed text
    assert any(f.name == "imds_probe_cycles" for f in families), [f.name for f in families]
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, f"promtool check metrics: {r.stdout}{r.stderr}"
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
                        r"(-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$")
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert sample.match(line), f"not a Prometheus sample line: {line!r}"


class AgentBeside(unittest.TestCase):
    """A lab (cls.lab), a work dir (cls.work) and perhaps an imds-agent (cls.agent) in it:
    torn down together, also when setUpClass fails half-way."""
    lab: Lab
    work: Path
    socket: str
    agent: Any = None

    @classmethod
    def close(cls) -> None:
        try:
            if cls.agent is not None:
                stop_process(cls.agent.proc, timeout=20)
        finally:
            cls.lab.close()
            shutil.rmtree(cls.work, ignore_errors=True)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.close()

    @classmethod
    def status(cls) -> dict[str, Any]:
        code, _, body = unix_http(cls.socket, "GET", "/v1/status", timeout=5)
        assert code == 200, body
        return json.loads(body)["agent"]

    @classmethod
    def callers_record(cls, probe: str, pred: Any, timeout: float = 15) -> dict[str, Any]:
        """The agent's caller record as `imds-probe callers --json` reads it, once pred(record)
        holds, else the last one read after `timeout`."""
        deadline = time.monotonic() + timeout
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = cls.lab.exec(cls.lab.host, [probe, "callers", "--socket", cls.socket,
                                            "--json=short"], timeout=10)
            assert r.returncode == 0, r.stderr
            record = json.loads(r.stdout)
            if pred(record):
                break
            time.sleep(0.5)
        return record

    @classmethod
    def wait_status(cls, pred: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        agent: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                agent = cls.status()
                if pred(agent):
                    return agent
            except (OSError, ValueError, KeyError, AssertionError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"the agent never got there: {json.dumps(agent, indent=1)}\n" +
                             "\n".join(cls.agent.lines[-30:] if cls.agent else []))


def build_dir_from_argv(default: Path) -> Path:
    """Takes `--build DIR` off the front of sys.argv (meson passes it; unittest must not see
    it) and returns DIR, or `default`."""
    if len(sys.argv) > 2 and sys.argv[1] == "--build":
        path = sys.argv[2]
        del sys.argv[1:3]
        return Path(path).resolve()
    return default.resolve()


_live_labs: set[Lab] = set()
_handlers_installed = False
_install_lock = threading.Lock()


def _close_all_labs() -> None:
    for lab in list(_live_labs):
        lab.close()


def _on_signal(signum: int, _frame: Any) -> None:
    _close_all_labs()
    # Unwind like a normal exit so callers' finally blocks and atexit still run.
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    global _handlers_installed
    with _install_lock:
        if _handlers_installed:
            return
        _handlers_installed = True
        atexit.register(_close_all_labs)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, _on_signal)


class Lab:
    """An emulated IMDS, the instance namespace and containers; see HACKING.md.

    `ipv6=True` starts the emulator with `--ipv6 enabled` (unless emulator_args say
    otherwise); the IPv6 addresses and routes exist in every topology either way (unless
    a container's `families` leaves them out), so with the endpoint off clients see it
    refuse connections.
    """

    def __init__(self, build_dir: str | os.PathLike[str], emulator_args: Sequence[str] = (),
                 ipv6: bool = False, start: bool = True):
        self.build_dir = Path(build_dir).resolve()
        self.emulator_exe = self.build_dir / "tests" / "emulator" / "imds-emulator"
        self.emulator_args = list(emulator_args)
        if ipv6 and "--ipv6" not in self.emulator_args:
            self.emulator_args += ["--ipv6", "enabled"]
        self.prefix = "il" + _base36(os.getpid()) + "".join(
            secrets.choice(_B36) for _ in range(4))
        self.dir = LAB_ROOT / self.prefix
        self.netns_dir = str(self.dir / "netns")
        self.control_socket = str(self.dir / "control.sock")
        self.emulator_log = str(self.dir / "emulator.log")
        self._namespaces: dict[str, Netns] = {}  # by name, everything we must delete
        self._labels: dict[str, Netns] = {}
        self._next_host_port = 2  # vb<N> on the host bridge and 172.17.0.<N>
        self._emulator: subprocess.Popen[bytes] | None = None
        self._history: list[dict[str, Any]] = []
        self._children: list[subprocess.Popen[str]] = []
        self._closers: list[Any] = []  # on_close(): run first, last registered first
        self._closed = False
        self.imds: Netns
        self.host: Netns
        if not self.emulator_exe.exists():
            raise LabError(f"{self.emulator_exe} does not exist: build it with "
                           f"`meson compile -C {self.build_dir} tests/emulator/imds-emulator`")
        _install_handlers()
        _live_labs.add(self)
        try:
            self._build_base()
            if start:
                self.start_emulator()
        except BaseException:
            self.close()
            raise

    # ----- context manager -------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- topology --------------------------------------------------------------------

    def _new_netns(self, label: str, distance: int) -> Netns:
        ns = Netns(name=f"{self.prefix}-{label}", label=label, distance=distance)
        _run(["ip", "netns", "add", ns.name], f"creating namespace {ns.name}")
        self._namespaces[ns.name] = ns
        # Interfaces created after this inherit "no DAD": IPv6 addresses work at once.
        self._sysctl(ns, {"net.ipv6.conf.all.accept_dad": "0",
                          "net.ipv6.conf.default.accept_dad": "0"})
        self._ip(ns, ["link set lo up"])
        return ns

    def _ip(self, ns: Netns, commands: list[str]) -> None:
        _run(["ip", "-n", ns.name, "-batch", "-"], f"configuring {ns.label} ({ns.name})",
             "\n".join(commands) + "\n")

    def _wait_link_ready(self, parent: Netns, port: str, ns: Netns,
                         timeout: float = 5.0) -> None:
        """Until `port` of parent's br0 forwards and the container's eth0 is operationally up,
        so that a namespace is named only once a SYN from it can leave and cross the bridge.
        The kernel activates a link's queueing (until then a noop qdisc drops every packet)
        and a bridge port's forwarding when it has processed the carrier change (linkwatch),
        which can lag `link set up` on a busy machine; a SYN sent in between is lost and the
        connect times out."""
        deadline = time.monotonic() + timeout
        while True:
            port_state = subprocess.run(
                ["bridge", "-n", parent.name, "link", "show", "dev", port],
                capture_output=True, text=True, check=False).stdout
            inside = subprocess.run(["ip", "-n", ns.name, "-o", "link", "show", "dev", "eth0"],
                                    capture_output=True, text=True, check=False).stdout
            if ("state forwarding" in port_state and "LOWER_UP" in port_state and
                    "state UP" in inside and "qdisc noop" not in inside):
                return
            if time.monotonic() > deadline:
                raise LabError(f"{ns.name}: link not ready after {timeout:.0f}s: "
                               f"{port_state.strip()!r} {inside.strip()!r}")
            time.sleep(0.002)

    def _sysctl(self, ns: Netns, values: dict[str, str]) -> None:
        _run(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w",
              *(f"{k}={v}" for k, v in values.items())], f"sysctl in {ns.label}")

    def _nft(self, ns: Netns, script: str) -> None:
        _run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], f"nftables in {ns.label}",
             script)

    def _router(self, ns: Netns, bridge_v4: str, bridge_v6: str) -> None:
        """Make `ns` a Docker-like host: bridge br0, forwarding, masquerade."""
        net_v4 = bridge_v4.rsplit(".", 2)[0] + ".0.0/16"
        net_v6 = bridge_v6.rsplit(":", 1)[0] + ":/64"
        self._ip(ns, [
            # A fixed MAC, as Docker gives docker0: a bridge otherwise takes the lowest MAC
            # of its ports, so adding a container would change the gateway's MAC under the
            # containers already there and their next connects would time out.
            "link add br0 address 02:42:ac:11:00:01 type bridge forward_delay 0 stp_state 0",
            f"addr add {bridge_v4}/16 dev br0",
            f"addr add {bridge_v6}/64 dev br0 nodad",
            "link set br0 up",
        ])
        self._sysctl(ns, {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})
        # Same shape as Docker's `-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE`, in our
        # own table so nothing else's rules are touched.
        self._nft(ns, f"""
table inet {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {net_v4} oifname != "br0" masquerade
    ip6 saddr {net_v6} oifname != "br0" masquerade
  }}
}}
""")

    def _build_base(self) -> None:
        (self.dir / "netns").mkdir(parents=True, mode=0o755)
        (self.dir / "home").mkdir(mode=0o700)
        self.imds = self._new_netns("imds", 0)
        self.imds.v4, self.imds.v6 = IMDS_V4, IMDS_V6
        self.host = self._new_netns("host", 0)
        self.host.v4, self.host.v6 = HOST_V4, HOST_V6
        # Created inside the namespaces: no name ever appears in the initial namespace.
        self._ip(self.imds, [
            f"link add eth0 type veth peer name imds0 netns {self.host.name}",
            f"addr add {IMDS_V4}/16 dev eth0",
            f"addr add {IMDS_V6}/64 dev eth0 nodad",
            "link set eth0 up",
        ])
        self._ip(self.host, [
            f"addr add {HOST_V4}/16 dev imds0",
            f"addr add {HOST_V6}/64 dev imds0 nodad",
            "link set imds0 up",
        ])
        self._router(self.host, BRIDGE_V4, BRIDGE_V6)

    def _claim_label(self, label: str) -> None:
        if not _LABEL_RE.match(label) or label in ("host", "imds") or label.endswith("-outer"):
            raise ValueError(f"container label {label!r}: use 1-16 lowercase letters, digits "
                             "or '-', starting with a letter; not host, imds or *-outer")
        if label in self._labels:
            raise ValueError(f"container label {label!r} is already used in this lab")

    def _attach(self, parent: Netns, label: str, distance: int, index: int,
                v4_base: str, v6_base: str, families: tuple[str, ...] = FAMILIES) -> Netns:
        """A container namespace on `parent`'s br0, default routes via the bridge, with an
        address and a route in each of `families` only."""
        if not 2 <= index <= 250:
            raise LabError("too many containers on one bridge (at most 249)")
        ns = self._new_netns(label, distance)
        if "v6" not in families:
            # As in a Docker container on a network without IPv6: not even a link-local
            # address on eth0 (set before the link exists: it inherits "default"), so
            # every IPv6 destination but loopback is "Network is unreachable".
            self._sysctl(ns, {"net.ipv6.conf.default.disable_ipv6": "1"})
        self._ip(parent, [
            f"link add vb{index} type veth peer name eth0 netns {ns.name}",
            f"link set vb{index} master br0 up",
        ])
        commands = []
        if "v4" in families:
            ns.v4 = f"{v4_base}.0.{index}"
            commands.append(f"addr add {ns.v4}/16 dev eth0")
        if "v6" in families:
            ns.v6 = f"{v6_base}::{index:x}"
            commands.append(f"addr add {ns.v6}/64 dev eth0 nodad")
        commands.append("link set eth0 up")
        if "v4" in families:
            commands.append(f"route add default via {v4_base}.0.1")
        if "v6" in families:
            commands.append(f"route add default via {v6_base}::1")
        self._ip(ns, commands)
        self._wait_link_ready(parent, f"vb{index}", ns)
        self._labels[label] = ns
        (Path(self.netns_dir) / label).symlink_to(ns.path)
        return ns

    def _host_port(self) -> int:
        index = self._next_host_port
        self._next_host_port += 1
        return index

    def add_bridge_container(self, label: str, families: Iterable[str] = FAMILIES) -> Netns:
        """A container on the host's bridge, one forwarding hop from the IMDS (docker0).

        `families=("v4",)`: IPv4 only (no IPv6 address or route: IPv6 destinations are
        "Network is unreachable"); `("v6",)`: IPv6 only, likewise."""
        families = _families(families, f"container {label!r}")
        self._claim_label(label)
        return self._attach(self.host, label, 1, self._host_port(), "172.17", "fd00:172:17",
                            families)

    def add_dind_container(self, label: str, families: Iterable[str] = FAMILIES) -> Netns:
        """A container inside a bridge container that routes and masquerades: 2 hops.

        `families` restricts the inner (2-hop) namespace as in add_bridge_container; the
        outer one keeps both, as a Docker host with IPv6 whose inner daemon has none."""
        families = _families(families, f"container {label!r}")
        self._claim_label(label)
        outer = self._attach(self.host, label + "-outer", 1, self._host_port(), "172.17",
                             "fd00:172:17")
        self._router(outer, NESTED_BRIDGE_V4, NESTED_BRIDGE_V6)
        inner = self._attach(outer, label, 2, 2, "172.18", "fd00:172:18", families)
        inner.outer = outer
        return inner

    def add_blackholed_container(self, label: str, families: Iterable[str] = FAMILIES
                                 ) -> Netns:
        """A bridge container whose routes to the IMDS are blackholed (ECS awsvpc blocking).

        `families` says which routes are: `("v4",)` blackholes 169.254.169.254 only and
        leaves fd00:ec2::254 reachable (the container has both families either way)."""
        families = _families(families, f"container {label!r}")
        ns = self.add_bridge_container(label)
        self._ip(ns, [{"v4": f"route add blackhole {IMDS_V4}/32",
                       "v6": f"route add blackhole {IMDS_V6}/128"}[f] for f in families])
        return ns

    def add_firewalled_container(self, label: str, families: Iterable[str] = FAMILIES
                                 ) -> Netns:
        """A bridge container whose IMDS traffic the host drops in its forward chain.

        `families` says which traffic is dropped: `("v4",)` drops IPv4 only (an iptables
        rule without its ip6tables twin); the container has both families either way."""
        families = _families(families, f"container {label!r}")
        ns = self.add_bridge_container(label)
        rules = {"v4": f"add rule inet {NFT_TABLE} forward ip saddr {ns.v4} "
                       f"ip daddr {IMDS_V4} drop",
                 "v6": f"add rule inet {NFT_TABLE} forward ip6 saddr {ns.v6} "
                       f"ip6 daddr {IMDS_V6} drop"}
        self._nft(self.host, "\n".join(rules[f] for f in families) + "\n")
        return ns

    # ----- namespace churn: one name, many namespaces -------------------------------------

    def add_incarnation(self, label: str, reachable: bool) -> Netns:
        """A new namespace that `netns_dir/<label>` points at from now on (the link is
        replaced atomically, so discovery sees either the old namespace or this one, fully
        built). `reachable=True`: a 1-hop bridge container, IPv4 only; False: loopback only,
        so the IMDS is "Network is unreachable". Each call makes a new namespace with a new
        inode; retire() the one it replaces. For churn tests: many incarnations per label."""
        if not _LABEL_RE.match(label) or label in ("host", "imds") or label in self._labels:
            raise ValueError(f"incarnation label {label!r}: a container label not used by "
                             "add_*_container")
        n = self._incarnations = getattr(self, "_incarnations", 0) + 1
        if n > 250 * 150:
            raise LabError("too many incarnations in one lab")
        ns = Netns(name=f"{self.prefix}-{label}-{n}", label=label, distance=1)
        inside = ["link set lo up"]
        if reachable:
            # 172.17.100.2 and up: apart from add_bridge_container's 172.17.0.N; a retired
            # namespace still entered by a probe keeps its veth and address until freed.
            ns.v4 = f"172.17.{100 + (n - 1) // 249}.{2 + (n - 1) % 249}"
            inside += [f"link add eth0 type veth peer name vi{n} netns {self.host.name}",
                       f"addr add {ns.v4}/16 dev eth0", "link set eth0 up",
                       f"route add default via {BRIDGE_V4}"]
        _run(["ip", "netns", "add", ns.name], f"creating incarnation {ns.name}")
        self._namespaces[ns.name] = ns
        _run(["ip", "-n", ns.name, "-batch", "-"], f"configuring incarnation {ns.name}",
             "\n".join(inside) + "\n")
        if reachable:
            self._ip(self.host, [f"link set vi{n} master br0 up"])
            self._wait_link_ready(self.host, f"vi{n}", ns)
        link = Path(self.netns_dir) / label
        tmp = Path(self.netns_dir) / f".{label}.{n}"
        tmp.symlink_to(ns.path)
        os.replace(tmp, link)
        return ns

    def retire(self, ns: Netns) -> None:
        """Delete an incarnation's namespace (`ip netns del`: a process still inside keeps
        it alive until it leaves, as the kernel does for any namespace)."""
        if self._namespaces.get(ns.name) is not ns or ns.label in self._labels:
            raise LabError(f"{ns.name} is not an incarnation of this lab")
        _run(["ip", "netns", "del", ns.name], f"deleting incarnation {ns.name}")
        del self._namespaces[ns.name]

    @property
    def containers(self) -> list[Netns]:
        """Every container namespace (also DinD outer ones), in creation order."""
        return list(self._labels.values())

    # ----- running things inside -------------------------------------------------------

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": _CLEAN_PATH, "LANG": "C.UTF-8", "HOME": str(self.dir / "home")}
        env.update({k: os.environ[k] for k in _SANITIZER_VARIABLES if k in os.environ})
        env.update(extra or {})
        return env

    def _check_ns(self, ns: Netns | None) -> Netns:
        if ns is None or not isinstance(ns, Netns) or self._namespaces.get(ns.name) is not ns:
            # Never the initial namespace: the IMDS address routes off this machine there.
            raise LabError(f"refusing to run outside this lab's namespaces (got {ns!r})")
        if self._closed:
            raise LabError("the lab is closed")
        return ns

    def popen(self, ns: Netns, argv: Sequence[str], env: dict[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[str]:
        """Start argv inside ns in its own process group; the caller waits for it (close()
        kills the group if it is still running then)."""
        ns = self._check_ns(ns)
        proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *argv], env=self.env(env),
                                text=True, start_new_session=True, **kwargs)
        self._children = [p for p in self._children if p.poll() is None] + [proc]
        return proc

    def exec(self, ns: Netns, argv: Sequence[str], timeout: float = 10,
             env: dict[str, str] | None = None, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
        """Run argv inside ns. On timeout its whole process group is killed and
        subprocess.TimeoutExpired is raised (after the kill)."""
        proc = self.popen(ns, argv, env=env, stdin=subprocess.PIPE if input is not None
                          else subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(proc)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(proc.args, timeout, out, err) from None
        except BaseException:
            self._kill_group(proc)
            proc.wait()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    @staticmethod
    def _kill_group(proc: subprocess.Popen[Any]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session, started by popen()
        except ProcessLookupError:
            pass

    # ----- the emulator ----------------------------------------------------------------

    def start_emulator(self, extra_args: Sequence[str] = ()) -> None:
        """Start the emulator in the IMDS namespace with the lab's arguments (the options
        set at run time are not kept across a restart) and wait until it listens."""
        if self._emulator is not None and self._emulator.poll() is None:
            raise LabError("the emulator is already running")
        if os.path.exists(self.control_socket):
            os.unlink(self.control_socket)
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        try:
            with open(self.emulator_log, "ab") as log:
                self._emulator = subprocess.Popen(
                    ["ip", "netns", "exec", self.imds.name, str(self.emulator_exe),
                     "--listen", IMDS_V4, "--listen", IMDS_V6, "--port", "80",
                     "--control", self.control_socket, "--ready-fd", str(wfd),
                     *self.emulator_args, *extra_args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(wfd,),
                    preexec_fn=_set_pdeathsig, env=self.env())
            (self.dir / "emulator.pid").write_text(f"{self._emulator.pid}\n")
            os.close(wfd)
            wfd = -1
            got = b""
            deadline = time.monotonic() + 15
            while b"\n" not in got:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([rfd], [], [], left)[0]:
                    raise LabError("the emulator did not report ready within 15 s"
                                   + self._emulator_tail())
                chunk = os.read(rfd, 64)
                if not chunk:
                    raise LabError("the emulator exited before it was ready"
                                   + self._emulator_tail())
                got += chunk
            if got.strip() != b"ready":
                raise LabError(f"the emulator wrote {got!r} instead of 'ready'")
        except BaseException:
            self._stop_emulator_process()
            raise
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)

    def _emulator_tail(self) -> str:
        try:
            with open(self.emulator_log, "rb") as f:
                text = f.read()[-2000:].decode(errors="replace").strip()
        except OSError:
            return ""
        return f"; its log ({self.emulator_log}):\n{text}" if text else ""

    def emulator_log_text(self) -> str:
        """What the emulator wrote to stdout/stderr so far."""
        try:
            return Path(self.emulator_log).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def emulator_pid(self) -> int | None:
        return self._emulator.pid if self.emulator_running() else None

    def emulator_running(self) -> bool:
        return self._emulator is not None and self._emulator.poll() is None

    def _stop_emulator_process(self) -> None:
        proc, self._emulator = self._emulator, None
        if proc is None:
            return
        stop_process(proc, timeout=5)
        try:
            (self.dir / "emulator.pid").unlink()
        except FileNotFoundError:
            pass

    def stop_emulator(self) -> None:
        """Stop the emulator (the IMDS becomes unreachable: connections are refused)."""
        if self.emulator_running():
            try:
                self._history.extend(self._control("GET", "/requests"))
            except (OSError, LabError):
                pass
        self._stop_emulator_process()

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        if not self.emulator_running():
            raise LabError("the emulator is not running" + self._emulator_tail())
        conn = UnixHTTPConnection(self.control_socket, timeout=10)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            raise LabError(f"emulator control {method} {path} failed: {e}") from e
        finally:
            conn.close()
        if resp.status // 100 != 2:
            raise LabError(f"emulator control {method} {path} answered {resp.status}: "
                           f"{data.decode(errors='replace').strip()}")
        return json.loads(data) if data.strip() else None

    def options(self) -> dict[str, Any]:
        return self._control("GET", "/options")

    def set_options(self, **options: Any) -> dict[str, Any]:
        """POST /options, e.g. set_options(http_tokens="required", hop_limit=2)."""
        return self._control("POST", "/options", options)

    def set_faults(self, **faults: Any) -> Any:
        """POST /faults; set_faults() clears every fault."""
        return self._control("POST", "/faults", faults)

    def requests(self) -> list[dict[str, Any]]:
        return self._control("GET", "/requests")

    def clear_requests(self) -> None:
        self._history.extend(self.requests())
        self._control("DELETE", "/requests")

    def all_requests(self) -> list[dict[str, Any]]:
        """Every request this lab's emulators saw, across clears and restarts."""
        current = self.requests() if self.emulator_running() else []
        return self._history + current

    def assert_nothing_secret(self, case: Any, outputs: Iterable[str]) -> None:
        """The checks after every lab test (`case` a unittest.TestCase): no request for
        credentials or user data reached the emulator, and no output holds a token."""
        case.assertEqual(self.forbidden_requests(), [],
                         "the probe asked for credentials or user data")
        for text in outputs:
            case.assertIsNone(TOKEN_LIKE.search(text), "a token-like string was printed")

    def forbidden_requests(self) -> list[dict[str, Any]]:
        """Requests for credentials or user data: must always be empty."""
        return [r for r in self.all_requests()
                if any(part in str(r.get("path", "")) for part in FORBIDDEN_PATH_PARTS)]

    # ----- teardown --------------------------------------------------------------------

    def on_close(self, closer: Any) -> None:
        """Call `closer()` when the lab closes (also on a signal), before its processes and
        namespaces go: for what lives in them, such as a Docker engine (docker_lab.py)."""
        self._closers.append(closer)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _live_labs.discard(self)
        errors = []
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as e:  # noqa: BLE001 - teardown goes on whatever one part says
                errors.append(f"{closer!r}: {e}")
        self._closers.clear()
        for proc in self._children:
            if proc.poll() is None:
                self._kill_group(proc)
                proc.wait()
        self._stop_emulator_process()
        for name in reversed(list(self._namespaces)):
            r = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True,
                               check=False)
            if r.returncode != 0 and os.path.exists(NETNS_ROOT / name):
                errors.append(f"ip netns del {name}: {r.stderr.strip()}")
        self._namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            print("lab teardown: " + "; ".join(errors), file=sys.stderr)


# ----- leftovers of crashed runs -----------------------------------------------------------


def _owner_pid(prefix: str) -> int | None:
    m = _PREFIX_RE.match(prefix)
    return int(m.group(1), 36) if m else None


def _kill_leftover_emulator(lab_dir: Path) -> None:
    """Stop an emulator a crashed lab started, if its pid still names that emulator."""
    try:
        pid = int((lab_dir / "emulator.pid").read_text().strip())
        imds_ns = os.stat(NETNS_ROOT / f"{lab_dir.name}-imds").st_ino
        proc_ns = os.stat(f"/proc/{pid}/ns/net").st_ino
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except (OSError, ValueError):
        return
    if proc_ns == imds_ns and exe == "imds-emulator":
        os.kill(pid, signal.SIGTERM)


def cleanup(dry_run: bool = False) -> list[str]:
    """Remove the namespaces and directories of labs whose owning process is gone.

    Only prefixes with a lab directory are considered (it is created before the first
    namespace and removed after the last), so a namespace that merely looks like ours is
    never touched."""
    removed = []
    dirs = sorted(LAB_ROOT.iterdir()) if LAB_ROOT.is_dir() else []
    names = sorted(os.listdir(NETNS_ROOT)) if NETNS_ROOT.is_dir() else []
    for d in dirs:
        pid = _owner_pid(d.name)
        if pid is None or not d.is_dir() or _pid_alive(pid):
            continue
        if not dry_run:
            _kill_leftover_emulator(d)
        for name in names:
            if name.startswith(d.name + "-"):
                removed.append(f"netns {name}")
                if not dry_run:
                    subprocess.run(["ip", "netns", "del", name], check=False)
        removed.append(f"dir {d}")
        if not dry_run:
            shutil.rmtree(d, ignore_errors=True)
    return removed


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "cleanup" and set(argv[1:]) <= {"--dry-run"}:
        if os.geteuid() != 0:
            print("lab.py cleanup: needs root", file=sys.stderr)
            return 1
        dry = "--dry-run" in argv
        for what in cleanup(dry_run=dry):
            print(("would remove " if dry else "removed ") + what)
        return 0
    print("usage: lab.py cleanup [--dry-run]   remove what crashed lab runs left behind",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
