#!/usr/bin/python3
"""Self-test of the lab: every topology is built at the distance the tests assume (real
packets, measured by TTL), the clients' safety rails hold, and nothing outlives a lab,
not even a SIGTERMed or SIGKILLed one."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lab as labmod  # noqa: E402
from lab import IMDS_V4, IMDS_V6, Lab, LabError, Netns, skip_unless_lab_possible  # noqa: E402

BUILD_DIR: Path
TTL_PROBE = str(HERE / "ttl_probe.py")
INSTANCE_ID_URL = f"http://{IMDS_V4}/latest/meta-data/instance-id"
INSTANCE_ID_URL_V6 = f"http://[{IMDS_V6}]/latest/meta-data/instance-id"


def running(pid: int) -> bool:
    """True while pid is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def leftovers(prefix: str) -> list[str]:
    names = [n for n in os.listdir(labmod.NETNS_ROOT) if n.startswith(prefix)] \
        if labmod.NETNS_ROOT.is_dir() else []
    if (labmod.LAB_ROOT / prefix).exists():
        names.append(str(labmod.LAB_ROOT / prefix))
    return names


class EchoLabCase(unittest.TestCase):
    """One lab per class with a UDP echo server in the IMDS namespace, so distances are
    measured with real packets independently of the emulator."""

    lab: Lab

    @classmethod
    def build(cls) -> None:
        """Add containers; subclasses override."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.lab = Lab(BUILD_DIR, ipv6=True)
        try:
            cls.build()
            cls.echo = cls.lab.popen(cls.lab.imds, ["/usr/bin/python3", TTL_PROBE, "echo",
                                                    IMDS_V4, IMDS_V6],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert cls.echo.stdout is not None
            if cls.echo.stdout.readline().strip() != "ready":
                raise LabError("the UDP echo server did not start in the IMDS namespace")
        except BaseException:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        Lab._kill_group(cls.echo)
        cls.echo.wait()
        cls.lab.close()

    def ttl(self, ns: Netns, addr: str) -> str:
        r = self.lab.exec(ns, ["/usr/bin/python3", TTL_PROBE, "ttl", addr], timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()


class TopologyTest(EchoLabCase):
    @classmethod
    def build(cls) -> None:
        cls.c1 = cls.lab.add_bridge_container("c1")
        cls.c2 = cls.lab.add_bridge_container("c2")
        cls.dind = cls.lab.add_dind_container("dind")
        cls.blackholed = cls.lab.add_blackholed_container("blackholed")
        cls.firewalled = cls.lab.add_firewalled_container("firewalled")

    def test_every_namespace_is_at_its_distance_from_the_imds_over_ipv4_and_ipv6(self):
        expect = {self.lab.host: 0, self.c1: 1, self.c2: 1, self.dind.outer: 1, self.dind: 2}
        for ns, distance in expect.items():
            self.assertEqual(ns.distance, distance)
            for addr in (IMDS_V4, IMDS_V6):
                with self.subTest(ns=ns.label, addr=addr):
                    self.assertEqual(self.ttl(ns, addr), str(64 - distance))

    def test_a_blackholed_container_cannot_send_to_the_imds_at_all(self):
        for addr in (IMDS_V4, IMDS_V6):
            with self.subTest(addr=addr):
                self.assertTrue(self.ttl(self.blackholed, addr).startswith("error"))

    def test_a_firewalled_container_gets_no_answer_from_the_imds(self):
        for addr in (IMDS_V4, IMDS_V6):
            with self.subTest(addr=addr):
                self.assertEqual(self.ttl(self.firewalled, addr), "none")
        # The drop matches its own address only: its neighbour still gets through.
        self.assertEqual(self.ttl(self.c2, IMDS_V4), "63")

    def test_the_emulator_answers_every_container_through_the_hosts_masquerade(self):
        self.lab.clear_requests()
        for ns in (self.lab.host, self.c1, self.dind):
            r = self.lab.exec(ns, ["curl", "-sS", "-m", "2", INSTANCE_ID_URL])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout.startswith("i-"), r.stdout)
        peers = [e["peer"] for e in self.lab.requests()]
        self.assertEqual(len(peers), 3)
        self.assertTrue(all("169.254.0.2" in p for p in peers), peers)

    def test_the_netns_dir_links_every_container_and_nothing_else(self):
        links = {p.name: os.readlink(p) for p in Path(self.lab.netns_dir).iterdir()}
        self.assertEqual(links, {ns.label: ns.path for ns in self.lab.containers})
        self.assertEqual(set(links), {"c1", "c2", "dind-outer", "dind", "blackholed",
                                      "firewalled"})
        for path in links.values():
            self.assertNotEqual(os.stat(path).st_ino, os.stat("/proc/self/ns/net").st_ino)

    def test_names_are_unique_per_lab_and_short_enough_for_interfaces(self):
        self.assertRegex(self.lab.prefix, r"^il[0-9a-z]+[0-9a-z]{4}$")
        self.assertEqual(int(self.lab.prefix[2:-4], 36), os.getpid())
        self.assertTrue(all(ns.name.startswith(self.lab.prefix + "-")
                            for ns in self.lab.containers))
        # Every veth's peer sits in another lab namespace, never in the initial one.
        for ns in [self.lab.imds, self.lab.host, *self.lab.containers]:
            links = subprocess.run(["ip", "-n", ns.name, "-o", "link", "show", "type", "veth"],
                                   capture_output=True, text=True, check=True).stdout
            self.assertTrue(links.strip(), ns.label)
            for line in links.splitlines():
                self.assertIn(f"link-netns {self.lab.prefix}-", line)

    def test_exec_refuses_to_run_outside_the_labs_namespaces(self):
        with self.assertRaises(LabError):
            self.lab.exec(None, ["true"])  # type: ignore[arg-type]
        stranger = Netns(name=self.c1.name, label="c1", distance=1)  # not the lab's object
        with self.assertRaises(LabError):
            self.lab.exec(stranger, ["true"])

    def test_exec_runs_clients_with_a_clean_environment(self):
        os.environ["http_proxy"] = "http://192.0.2.1:3128"
        try:
            r = self.lab.exec(self.c1, ["env"], env={"EXTRA": "1"})
        finally:
            del os.environ["http_proxy"]
        env = dict(line.split("=", 1) for line in r.stdout.splitlines())
        self.assertNotIn("http_proxy", env)
        self.assertEqual(env["EXTRA"], "1")
        self.assertTrue(env["HOME"].startswith(str(self.lab.dir)))

    def test_a_timed_out_exec_kills_everything_it_started(self):
        marker = self.lab.dir / "grandchild.pid"
        with self.assertRaises(subprocess.TimeoutExpired):
            self.lab.exec(self.c1, ["sh", "-c", f"sleep 60 & echo $! > {marker}; wait"],
                          timeout=1)
        pid = int(marker.read_text())
        time.sleep(0.2)
        self.assertFalse(running(pid), "the background sleep survived the timeout")

    def test_a_stopped_emulator_refuses_connections_until_started_again(self):
        self.lab.stop_emulator()
        try:
            r = self.lab.exec(self.c1, ["curl", "-sS", "-m", "2", INSTANCE_ID_URL])
            self.assertEqual(r.returncode, 7, r.stderr)
        finally:
            self.lab.start_emulator()
        r = self.lab.exec(self.c1, ["curl", "-sS", "-m", "2", INSTANCE_ID_URL])
        self.assertEqual(r.returncode, 0, r.stderr)


ENETUNREACH = f"error {errno.ENETUNREACH}"  # no route: "Network is unreachable"
EINVAL = f"error {errno.EINVAL}"  # what a blackhole route answers a sender


class AddressFamilyTopologyTest(EchoLabCase):
    """The `families` keywords: namespaces with one address family only, and containers
    blocked from the IMDS in one family while the other gets through."""

    @classmethod
    def build(cls) -> None:
        cls.v4_only = cls.lab.add_bridge_container("v4only", families=("v4",))
        cls.v6_only = cls.lab.add_bridge_container("v6only", families=("v6",))
        cls.dind_v4 = cls.lab.add_dind_container("dind4", families=("v4",))
        cls.blackholed_v4 = cls.lab.add_blackholed_container("bh4", families=("v4",))
        cls.firewalled_v4 = cls.lab.add_firewalled_container("fw4", families=("v4",))

    def curl(self, ns: Netns, url: str) -> subprocess.CompletedProcess[str]:
        return self.lab.exec(ns, ["curl", "-sS", "-v", "-m", "2", "-o", "/dev/null", url])

    def assert_one_family(self, ns: Netns, family: str) -> None:
        """ns has an address and a route in `family` only (loopback aside)."""
        other = {"v4": "-6", "v6": "-4"}[family]
        self.assertEqual(ns.families, (family,))
        self.assertEqual((ns.v4 is not None, ns.v6 is not None),
                         (family == "v4", family == "v6"))
        addrs = self.lab.exec(ns, ["ip", "-o", other, "addr", "show", "dev", "eth0"]).stdout
        self.assertEqual(addrs.strip(), "", f"{ns.label} has an address it should not have")
        routes = self.lab.exec(ns, ["ip", other, "route", "show", "table", "all"]).stdout
        self.assertEqual([r for r in routes.splitlines() if "dev lo" not in r], [],
                         f"{ns.label} has a route it should not have")

    def test_an_ipv4_only_container_answers_over_ipv4_and_has_no_route_over_ipv6(self):
        self.assert_one_family(self.v4_only, "v4")
        self.assertEqual(self.ttl(self.v4_only, IMDS_V4), "63")
        self.assertEqual(self.ttl(self.v4_only, IMDS_V6), ENETUNREACH)
        self.assertEqual(self.curl(self.v4_only, INSTANCE_ID_URL).returncode, 0)
        r = self.curl(self.v4_only, INSTANCE_ID_URL_V6)
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertIn("Network is unreachable", r.stderr)

    def test_an_ipv6_only_container_answers_over_ipv6_and_has_no_route_over_ipv4(self):
        self.assert_one_family(self.v6_only, "v6")
        self.assertEqual(self.ttl(self.v6_only, IMDS_V6), "63")
        self.assertEqual(self.ttl(self.v6_only, IMDS_V4), ENETUNREACH)
        self.assertEqual(self.curl(self.v6_only, INSTANCE_ID_URL_V6).returncode, 0)
        r = self.curl(self.v6_only, INSTANCE_ID_URL)
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertIn("Network is unreachable", r.stderr)

    def test_an_ipv4_only_dind_container_is_two_hops_away_inside_a_dual_stack_one(self):
        self.assert_one_family(self.dind_v4, "v4")
        self.assertEqual(self.dind_v4.distance, 2)
        self.assertEqual(self.ttl(self.dind_v4, IMDS_V4), "62")
        self.assertEqual(self.ttl(self.dind_v4, IMDS_V6), ENETUNREACH)
        outer = self.dind_v4.outer
        assert outer is not None
        self.assertEqual(outer.families, ("v4", "v6"))
        for addr in (IMDS_V4, IMDS_V6):
            self.assertEqual(self.ttl(outer, addr), "63", addr)

    def test_blocking_ipv4_only_leaves_ipv6_open(self):
        for ns, v4_result in ((self.blackholed_v4, EINVAL), (self.firewalled_v4, "none")):
            with self.subTest(ns=ns.label):
                self.assertEqual(ns.families, ("v4", "v6"))
                self.assertEqual(self.ttl(ns, IMDS_V4), v4_result)
                self.assertEqual(self.ttl(ns, IMDS_V6), "63")
                self.assertEqual(self.curl(ns, INSTANCE_ID_URL_V6).returncode, 0)

    def test_a_family_set_other_than_v4_and_v6_is_refused_before_anything_is_built(self):
        before = set(os.listdir(labmod.NETNS_ROOT))
        for families in ((), ("ipv4",), ("v4", "v5")):
            with self.subTest(families=families):
                with self.assertRaises(ValueError):
                    self.lab.add_bridge_container("bad", families=families)
        self.assertEqual(set(os.listdir(labmod.NETNS_ROOT)), before)
        # A bare string is one family, not a sequence of letters.
        self.assertEqual(labmod._families("v4", "test"), ("v4",))


CHILD = """
import sys, time
sys.path.insert(0, {here!r})
from lab import Lab
lab = Lab({build!r})
lab.add_bridge_container("c1")
lab.add_dind_container("d")
print(lab.prefix, lab.emulator_pid, flush=True)
time.sleep(120)
"""


class TeardownTest(unittest.TestCase):
    def start_child(self) -> tuple[subprocess.Popen[str], str, int]:
        """A separate process that builds a lab and sleeps."""
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(here=str(HERE), build=str(BUILD_DIR))],
            stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        line = child.stdout.readline().split()
        self.assertEqual(len(line), 2, "the child lab did not start")
        prefix, emulator_pid = line[0], int(line[1])
        self.assertTrue(leftovers(prefix))
        return child, prefix, emulator_pid

    def test_closing_a_lab_leaves_no_namespace_directory_or_emulator_behind(self):
        with Lab(BUILD_DIR) as lab:
            lab.add_bridge_container("c1")
            lab.add_dind_container("d")
            lab.add_firewalled_container("f")
            prefix = lab.prefix
            emulator = lab.emulator_pid
            self.assertIsNotNone(emulator)
            self.assertEqual(len(leftovers(prefix)), 7)  # imds host c1 d-outer d f + dir
        self.assertEqual(leftovers(prefix), [])
        self.assertFalse(running(emulator))

    def test_two_labs_side_by_side_get_different_names(self):
        with Lab(BUILD_DIR) as a, Lab(BUILD_DIR) as b:
            self.assertNotEqual(a.prefix, b.prefix)
            a.add_bridge_container("c1")
            b.add_bridge_container("c1")

    def test_sigterm_tears_the_lab_down(self):
        child, prefix, emulator = self.start_child()
        child.send_signal(signal.SIGTERM)
        self.assertEqual(child.wait(timeout=20), 128 + signal.SIGTERM)
        child.stdout.close()
        self.assertEqual(leftovers(prefix), [])
        self.assertFalse(running(emulator))

    def test_cleanup_removes_what_a_killed_lab_left_behind(self):
        child, prefix, emulator = self.start_child()
        child.kill()
        child.wait()
        child.stdout.close()
        self.assertTrue(leftovers(prefix), "a SIGKILLed lab cannot clean up after itself")
        r = subprocess.run([sys.executable, str(HERE / "lab.py"), "cleanup"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(prefix, r.stdout)
        self.assertEqual(leftovers(prefix), [])
        deadline = time.monotonic() + 5
        while running(emulator) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(running(emulator), "the emulator outlived its lab")

    def test_cleanup_leaves_live_labs_alone(self):
        with Lab(BUILD_DIR) as lab:
            r = subprocess.run([sys.executable, str(HERE / "lab.py"), "cleanup"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn(lab.prefix, r.stdout)
            self.assertEqual(len(leftovers(lab.prefix)), 3)


def main() -> None:
    global BUILD_DIR
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    args, rest = ap.parse_known_args()
    skip_unless_lab_possible(("curl",))
    BUILD_DIR = Path(args.build).resolve()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
