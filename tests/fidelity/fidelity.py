"""Shared pieces of the fidelity suite: real clients run inside lab namespaces against the
emulator, asserting what IMDS.md marks [doc] or [seen].

Each test module is run by meson as `python3 test_x.py --build BUILDDIR`; it exits 77
(skip) when the lab cannot be built here (not root, no ip/nft, or a client is missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))

from lab import IMDS_V4, IMDS_V6, Lab, Netns, skip_unless_lab_possible  # noqa: E402

BUILD_DIR: Path | None = None

TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
INSTANCE_ID = "i-0123456789abcdef0"  # the emulator's default

# Below this a response counts as "at once": far from every timeout the tests provoke,
# generous for a loaded machine (curl's own timer, process start-up excluded).
FAST_SECONDS = 0.75

# The keys of the emulator's GET /options that POST /options takes back.
OPTION_KEYS = ("http_tokens", "hop_limit", "http_endpoint", "ipv6", "tags", "unauthorized_body",
               "instance_id", "ami_id", "region", "availability_zone", "tags_map")

ENDPOINTS = {"ipv4": IMDS_V4, "ipv6": f"[{IMDS_V6}]"}


def endpoint_url(family: str, path: str) -> str:
    return f"http://{ENDPOINTS[family]}{path}"


@dataclasses.dataclass
class CurlResult:
    """What curl saw: exit code, last status line, headers and body, curl's own timer."""

    exit_code: int
    status: int  # 0: no HTTP response
    headers: list[tuple[str, str]]  # of the last response, names as sent
    all_statuses: list[int]  # every status line received (interim 417 included)
    body: str
    seconds: float
    stderr: str
    secret: bool  # the body is a token: never shown

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self) -> str:
        body = f"<{len(self.body)} chars, withheld>" if self.secret else repr(self.body[:200])
        return (f"CurlResult(exit={self.exit_code}, status={self.status}, "
                f"statuses={self.all_statuses}, seconds={self.seconds:.3f}, "
                f"headers={self.headers}, body={body}, stderr={self.stderr.strip()!r})")

    __str__ = __repr__


def _parse_header_dump(text: str) -> tuple[list[int], list[tuple[str, str]]]:
    statuses: list[int] = []
    headers: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith("HTTP/"):
            parts = line.split()
            statuses.append(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0)
            headers = []
        elif ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return statuses, headers


def curl(lab: Lab, ns: Netns, method: str, url: str, headers: Sequence[str] = (),
         max_time: float = 2, connect_timeout: float | None = None,
         data: str | None = None, extra: Sequence[str] = ()) -> CurlResult:
    """Run curl in `ns`. Request headers travel in a file, so a token never shows up in
    a command line, a process listing or an exception message."""
    work = Path(tempfile.mkdtemp(prefix="curl-", dir=lab.dir))
    try:
        hdr_in, hdr_out, body_out = work / "req", work / "hdr", work / "body"
        hdr_in.write_text("".join(h + "\n" for h in headers))
        argv = ["curl", "-sS", "-g", "-X", method, "-H", f"@{hdr_in}", "-D", str(hdr_out),
                "-o", str(body_out), "-m", f"{max_time:g}", "-w", "%{time_total}"]
        if connect_timeout is not None:
            argv += ["--connect-timeout", f"{connect_timeout:g}"]
        if data is not None:
            argv += ["--data-binary", data]
        if method == "HEAD":
            argv[argv.index("-X"):argv.index("-X") + 2] = ["-I"]
        argv += [*extra, url]
        r = lab.exec(ns, argv, timeout=max_time + 10)
        statuses, resp_headers = _parse_header_dump(
            hdr_out.read_text(errors="replace") if hdr_out.exists() else "")
        body = body_out.read_text(errors="replace") if body_out.exists() else ""
        try:
            seconds = float(r.stdout.strip() or "nan")
        except ValueError:
            seconds = float("nan")
        return CurlResult(r.returncode, statuses[-1] if statuses else 0, resp_headers,
                          statuses, body, seconds, r.stderr,
                          secret=method == "PUT" and TOKEN_PATH in url)
    finally:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


def put_token(lab: Lab, ns: Netns, family: str = "ipv4", ttl: str | None = "21600",
              **kw: Any) -> CurlResult:
    headers = [f"{TTL_HEADER}: {ttl}"] if ttl is not None else []
    return curl(lab, ns, "PUT", endpoint_url(family, TOKEN_PATH), headers, **kw)


def get(lab: Lab, ns: Netns, path: str, family: str = "ipv4", token: str | None = None,
        headers: Sequence[str] = (), **kw: Any) -> CurlResult:
    h = list(headers) + ([f"{TOKEN_HEADER}: {token}"] if token is not None else [])
    return curl(lab, ns, "GET", endpoint_url(family, path), h, **kw)


class LabTestCase(unittest.TestCase):
    """One lab per test class; options and faults are reset before every test.

    Subclasses set `emulator_args`, `ipv6` and build containers in `build_topology`.
    tearDownClass asserts from the emulator's log that nothing asked for secrets.
    """

    emulator_args: Sequence[str] = ()
    ipv6 = True
    base_options: dict[str, Any] = {}
    lab: Lab

    @classmethod
    def build_topology(cls) -> None:
        pass

    @classmethod
    def setUpClass(cls) -> None:
        assert BUILD_DIR is not None, "run through main(): --build is required"
        cls.lab = Lab(BUILD_DIR, emulator_args=cls.emulator_args, ipv6=cls.ipv6)
        try:
            cls.build_topology()
            cls.initial_options = cls.lab.options()
        except BaseException:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            forbidden = cls.lab.forbidden_requests()
        finally:
            cls.lab.close()
        if forbidden:
            raise AssertionError(f"requests for secrets reached the emulator: {forbidden}")

    def setUp(self) -> None:
        if not self.lab.emulator_running():
            self.lab.start_emulator()
        restore = {k: v for k, v in self.initial_options.items() if k in OPTION_KEYS}
        restore.update(self.base_options)
        self.lab.set_options(**restore, pending_ms=0)
        self.lab.set_faults()
        self.lab.clear_requests()

    def assertFast(self, r: CurlResult, what: str = "") -> None:
        self.assertLess(r.seconds, FAST_SECONDS, f"{what} should answer at once: {r}")


def main(tools: Sequence[str] = ("curl",)) -> None:
    """Entry point of every test module: parse --build, skip (77) when impossible."""
    global BUILD_DIR
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="the meson build directory")
    args, rest = ap.parse_known_args()
    skip_unless_lab_possible(tools)
    BUILD_DIR = Path(args.build).resolve()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)

