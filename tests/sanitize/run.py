#!/usr/bin/env python3
"""The sanitizer suite: the project under clang-16's sanitizers, in build dirs of its own
under the main build dir, and the libFuzzer targets for a bounded time.

  sanitize-asan  -Db_sanitize=address,undefined -fno-sanitize-recover=all -Dfuzz=enabled:
                 the unit suite, the lab suite (root only) and the fuzzers (tests/fuzz)
  sanitize-tsan  -Db_sanitize=thread: the agent's unit tests (suite `agent`)

Any sanitizer report fails the run: the options below make every sanitizer abort on its
first report, and each report is also written under <dir>/sanitizer-reports/, which is
checked after each phase (a report from a child process whose exit status a test ignores
still counts). Prints the figures of each phase at the end. Exit 77 (SKIP) without
clang-16 and its runtimes, or for `--phases lab` when not root.

  run.py --source SRC --build BUILD [--phases build,unit,tsan,fuzz,lab]
         [--fuzz-seconds 25] [--lab-tests NAME,...]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SKIP = 77
# The one case left out under ASan+UBSan: it exhausts the process's descriptors on purpose,
# and then UBSan's vptr check itself fails (it probes memory through a pipe it cannot open)
# and calls the std::thread the test starts "an object with an invalid vptr". Not a bug in
# the code; the case runs under TSan.
ASAN_GTEST_FILTER = "-ApiServerTest.RunningOutOfDescriptorsPausesAcceptingInsteadOfSpinning"
CLANG_RT = Path("/usr/lib/llvm-16/lib/clang/16/lib/linux")
PHASES = ("build", "unit", "tsan", "fuzz", "lab")
# The fuzz targets are those tests/fuzz/meson.build defines (names ending in _fuzzer), read
# from meson's introspection (fuzz_targets), never written here: a target added there is run.
FUZZ_SUFFIX = "_fuzzer"
FUZZ_RSS_MB = 2048

# -O1 and line tables only: about half the compile time of -O2 -g on two cores, fast enough
# to run, and still symbolised stacks in every report.
COMMON_SETUP = ["-Dwerror=true", "-Dtests=enabled", "-Dman=enabled", "-Db_lundef=false",
                "-Dbuildtype=plain", "-Doptimization=1", "-Ddebug=false", "-Db_ndebug=false"]
ASAN_SETUP = COMMON_SETUP + [
    "-Db_sanitize=address,undefined", "-Dfuzz=enabled",
    "-Dcpp_args=-fno-sanitize-recover=all -gline-tables-only",
    "-Dcpp_link_args=-fno-sanitize-recover=all"]
TSAN_SETUP = COMMON_SETUP + ["-Db_sanitize=thread", "-Dfuzz=disabled",
                             "-Dcpp_args=-gline-tables-only"]
# The TSan dir builds only what the suite `agent` runs: the list comes from meson's own
# introspection (tsan_targets), never written here, so a test added there is built here too.
TSAN_SUITE = "agent"


def log(msg: str) -> None:
    print(msg, flush=True)


def symbolizer() -> str | None:
    """An llvm-symbolizer for readable stacks (clang-16's own is in llvm-16, often absent)."""
    for name in ("llvm-symbolizer-16", "llvm-symbolizer"):
        found = shutil.which(name)
        if found:
            return found
    found_any = sorted(Path("/usr/lib").glob("llvm-*/bin/llvm-symbolizer"), reverse=True)
    return str(found_any[0]) if found_any else None


def with_symbolizer(env: dict[str, str]) -> dict[str, str]:
    if "ASAN_SYMBOLIZER_PATH" not in env and (path := symbolizer()):
        env["ASAN_SYMBOLIZER_PATH"] = path
    return env


def sanitizer_env(reports: Path) -> dict[str, str]:
    """Abort at the first report of any sanitizer, leaks included; keep a copy per process."""
    reports.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    common = "halt_on_error=1:abort_on_error=1:print_stacktrace=1"
    env["ASAN_OPTIONS"] = (f"{common}:detect_leaks=1:strict_string_checks=1:"
                           f"detect_stack_use_after_return=1:check_initialization_order=1:"
                           f"log_path={reports}/asan")
    env["UBSAN_OPTIONS"] = f"{common}:log_path={reports}/ubsan"
    env["LSAN_OPTIONS"] = f"log_path={reports}/lsan"
    env["TSAN_OPTIONS"] = f"{common}:second_deadlock_stack=1:log_path={reports}/tsan"
    return with_symbolizer(env)


def reports_in(reports: Path) -> list[Path]:
    return sorted(p for p in reports.glob("*") if p.is_file() and p.stat().st_size > 0)


class Run:
    def __init__(self, source: Path, build: Path, fuzz_seconds: int, lab_tests: list[str]):
        self.source = source
        self.build = build
        self.asan = build / "sanitize-asan"
        self.tsan = build / "sanitize-tsan"
        self.fuzz_seconds = fuzz_seconds
        self.lab_tests = lab_tests
        self.figures: list[tuple[str, float, str]] = []  # phase, seconds, what it did
        self.failures: list[str] = []
        self.built: set[str] = set()

    # ----- building ----------------------------------------------------------------------

    def setup(self, builddir: Path, options: list[str]) -> None:
        info = builddir / "meson-info" / "meson-info.json"
        if info.exists():
            # A build of another source tree (an earlier run with another --source) would
            # test that tree: start this one afresh.
            configured = json.loads(info.read_text())["directories"]["source"]
            if Path(configured).resolve() != self.source.resolve():
                log(f"{builddir} was configured for {configured}: set up again for "
                    f"{self.source}")
                shutil.rmtree(builddir)
        if (builddir / "build.ninja").exists():
            # Brought up to date before anything reads its introspection: the targets and
            # tests to build come from it, and a meson.build changed since (a new test) would
            # otherwise be seen only by the build, not by the list (a test left unbuilt).
            subprocess.run(["ninja", "-C", str(builddir), "build.ninja"], check=True,
                           stdout=subprocess.DEVNULL)
            return
        # meson wraps only compilers it finds itself in ccache, not CC/CXX given: say it.
        wrap = "ccache " if shutil.which("ccache") else ""
        env = dict(os.environ, CC=f"{wrap}clang-16", CXX=f"{wrap}clang++-16")
        subprocess.run(["meson", "setup", str(builddir), str(self.source), *options],
                       env=env, check=True, stdout=subprocess.DEVNULL)

    def compile(self, builddir: Path, targets: list[str] = ()) -> None:
        env = dict(os.environ)
        if shutil.which("ccache"):
            # Sanitizer dirs sit at another place than a developer's own; share the cache.
            env.setdefault("CCACHE_NOHASHDIR", "1")
        # -j2: the machine's two cores are shared with other builds.
        subprocess.run(["ninja", "-C", str(builddir), "-j2", *targets], env=env, check=True,
                       stdout=subprocess.DEVNULL if not os.environ.get("VERBOSE") else None)

    @staticmethod
    def suite_targets(builddir: Path, suite: str) -> list[str]:
        """What the tests of one suite need built, as ninja target names: each test's own
        program and the targets it depends on (check-config runs imds-agent), both from
        meson's introspection of the configured dir."""
        def introspect(what: str) -> Any:
            return json.loads(subprocess.run(["meson", "introspect", what, str(builddir)],
                                             check=True, capture_output=True, text=True).stdout)
        root = builddir.resolve()
        files = {t["id"]: t["filename"] for t in introspect("--targets")}
        targets: set[str] = set()
        for test in introspect("--tests"):
            if f"imds-agent:{suite}" not in test.get("suite", []):
                continue
            built = [f for dep in test.get("depends", []) for f in files.get(dep, [])]
            built += [word for word in test.get("cmd", [])[:1] if Path(word).is_absolute()]
            for path in map(Path, built):
                if path.resolve().is_relative_to(root):
                    targets.add(str(path.resolve().relative_to(root)))
        if not targets:
            raise SystemExit(f"no test of suite {suite!r} in {builddir}: nothing to build")
        return sorted(targets)

    def fuzz_targets(self) -> list[str]:
        """The fuzz targets of the configured asan dir, without the suffix; each must have
        its seeds in tests/fuzz/corpus/<name>/ (a target without seeds is an error)."""
        targets = json.loads(subprocess.run(
            ["meson", "introspect", "--targets", str(self.asan)],
            check=True, capture_output=True, text=True).stdout)
        names = sorted(t["name"][:-len(FUZZ_SUFFIX)] for t in targets
                       if t.get("type") == "executable" and t["name"].endswith(FUZZ_SUFFIX)
                       and Path(t.get("defined_in", "")).parent.name == "fuzz")
        if not names:
            raise SystemExit(f"no fuzz target in {self.asan} (-Dfuzz=enabled?)")
        corpus = self.source / "tests" / "fuzz" / "corpus"
        missing = [n for n in names if not any((corpus / n).glob("*"))]
        if missing:
            raise SystemExit(f"fuzz targets without seeds in {corpus}: {', '.join(missing)}")
        return names

    def ensure_built(self, which: str) -> None:
        """Configures and compiles one sanitizer dir, once per run ("asan" or "tsan")."""
        if which in self.built:
            return
        t = time.monotonic()
        if which == "asan":
            self.setup(self.asan, ASAN_SETUP)
            self.compile(self.asan)
            what = "everything, and the fuzzers"
        else:
            self.setup(self.tsan, TSAN_SETUP)
            targets = self.suite_targets(self.tsan, TSAN_SUITE)
            self.compile(self.tsan, targets)
            what = f"{len(targets)} targets (what suite {TSAN_SUITE} runs)"
        ccache = "ccache" if shutil.which("ccache") else "no ccache"
        self.figures.append((f"build {which}", time.monotonic() - t, f"{what}; {ccache}"))
        self.built.add(which)

    def phase_build(self) -> None:
        self.ensure_built("asan")
        self.ensure_built("tsan")

    # ----- meson test in a sanitizer dir ---------------------------------------------------

    def meson_test(self, name: str, builddir: Path, args: list[str],
                   extra_env: dict[str, str] | None = None, expected: int | None = None) -> None:
        """`meson test` in builddir; a failure unless it exits 0, leaves no sanitizer report
        and runs at least one test (exactly `expected` when given)."""
        reports = builddir / "sanitizer-reports"
        for old in reports_in(reports) if reports.exists() else []:
            old.unlink()
        # The counts come from this run's log only: a run that ran nothing must not pass on
        # the figures of the one before.
        (builddir / "meson-logs" / "testlog.json").unlink(missing_ok=True)
        t = time.monotonic()
        r = subprocess.run(["meson", "test", "-C", str(builddir), "--no-rebuild",
                            "--print-errorlogs", *args],
                           env={**sanitizer_env(reports), **(extra_env or {})})
        seconds = time.monotonic() - t
        counts, cases = self.test_counts(builddir)
        found = reports_in(reports)
        for report in found:
            log(f"==== sanitizer report {report}:\n{report.read_text(errors='replace')}")
        if r.returncode != 0:
            self.failures.append(f"{name}: meson test exited {r.returncode}")
        ran = sum(counts.values())
        if ran == 0 or (expected is not None and ran != expected):
            self.failures.append(f"{name}: {ran} test(s) ran, expected "
                                 f"{expected if expected is not None else 'at least 1'} (a name "
                                 f"unknown to the build in {builddir}?)")
        if found:
            self.failures.append(f"{name}: {len(found)} sanitizer report(s) in {reports}")
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        self.figures.append((name, seconds, f"{summary}; {cases} gtest cases"))

    @staticmethod
    def test_counts(builddir: Path) -> tuple[dict[str, int], int]:
        counts: dict[str, int] = {}
        cases = 0
        logfile = builddir / "meson-logs" / "testlog.json"
        for line in logfile.read_text().splitlines() if logfile.exists() else []:
            entry = json.loads(line)
            counts[entry["result"]] = counts.get(entry["result"], 0) + 1
            m = re.search(r"\[  PASSED  \] (\d+) tests?", entry.get("stdout") or "")
            cases += int(m.group(1)) if m else 0
        return counts, cases

    def phase_unit(self) -> None:
        self.ensure_built("asan")
        self.meson_test("unit under asan+ubsan", self.asan,
                        ["--suite", "unit", "--num-processes", "2"],
                        {"GTEST_FILTER": ASAN_GTEST_FILTER})

    def phase_tsan(self) -> None:
        self.ensure_built("tsan")
        self.meson_test("agent unit under tsan", self.tsan,
                        ["--suite", "agent", "--num-processes", "2"])

    def phase_lab(self) -> None:
        self.ensure_built("asan")
        args = ["--num-processes", "1"]
        args += self.lab_tests if self.lab_tests else ["--suite", "lab"]
        what = ", ".join(self.lab_tests) if self.lab_tests else "the whole lab suite"
        log(f"lab under asan+ubsan: {what}")
        # The lab tests assert that the agent's RSS stays flat under abuse and churn, so two
        # things of ASan's own that fill up as a process runs must not count as its memory:
        # - the quarantine (default 256 MiB of freed memory held back): 8 MiB here, so
        #   use-after-free is still caught for the last 8 MiB freed;
        # - the fake stacks of detect_stack_use_after_return: 11 MiB mapped per thread, made
        #   resident frame by frame, so a long-lived thread (the caller watch) adds up to
        #   11 MiB of RSS over a minute of running (measured with /proc/PID/smaps: the whole
        #   anonymous growth of the agent in 24 s, +8 MiB, goes away without them).
        #   Stack-use-after-return stays checked in the unit phase (sanitizer_env).
        asan = sanitizer_env(self.asan / "sanitizer-reports")["ASAN_OPTIONS"]
        self.meson_test("lab under asan+ubsan", self.asan, args,
                        {"GTEST_FILTER": ASAN_GTEST_FILTER,
                         "ASAN_OPTIONS": asan + ":quarantine_size_mb=8"
                                                ":detect_stack_use_after_return=0"},
                        expected=len(self.lab_tests) if self.lab_tests else None)

    # ----- fuzzing ---------------------------------------------------------------------------

    def fuzz_one(self, name: str) -> tuple[str, bool, dict[str, int], str]:
        exe = self.asan / "tests" / "fuzz" / f"{name}_fuzzer"
        seeds = self.source / "tests" / "fuzz" / "corpus" / name
        work = self.asan / "fuzz" / "corpus" / name  # new inputs stay out of the source tree
        artifacts = self.asan / "fuzz" / "artifacts" / name
        work.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
        logfile = self.asan / "fuzz" / f"{name}.log"
        env = dict(os.environ)
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            env.pop(k, None)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
        env["UBSAN_OPTIONS"] = "halt_on_error=1:abort_on_error=1:print_stacktrace=1"
        with_symbolizer(env)
        argv = [str(exe), f"-max_total_time={self.fuzz_seconds}", f"-rss_limit_mb={FUZZ_RSS_MB}",
                "-timeout=10", "-detect_leaks=1", "-print_final_stats=1",
                "-error_exitcode=1", "-timeout_exitcode=1",
                f"-artifact_prefix={artifacts}/", str(work), str(seeds)]
        with open(logfile, "w") as out:
            r = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                               timeout=self.fuzz_seconds * 3 + 120)
        text = logfile.read_text(errors="replace")
        stats = {k: int(v) for k, v in re.findall(r"^stat::(\w+):\s+(\d+)", text, re.M)}
        return name, r.returncode == 0, stats, text

    def phase_fuzz(self) -> None:
        self.ensure_built("asan")
        t = time.monotonic()
        # Two at a time: one per core.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(self.fuzz_one, self.fuzz_targets()))
        for name, ok, stats, text in results:
            execs = stats.get("number_of_executed_units", 0)
            rate = stats.get("average_exec_per_sec", 0)
            detail = (f"{execs} execs, {rate} exec/s, {stats.get('new_units_added', 0)} new "
                      f"units, peak RSS {stats.get('peak_rss_mb', 0)} MB")
            log(f"fuzz {name}: {'ok' if ok else 'FAILED'}: {detail}")
            if not ok:
                log(f"==== {name} fuzzer output (last 80 lines):")
                log("\n".join(text.splitlines()[-80:]))
                self.failures.append(f"fuzz {name}: crash, leak, timeout or OOM "
                                     f"(artifacts in {self.asan}/fuzz/artifacts/{name})")
            self.figures.append((f"fuzz {name}", float(self.fuzz_seconds), detail))
        self.figures.append(("fuzz (all, 2 at a time)", time.monotonic() - t,
                             f"{self.fuzz_seconds} s each"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--phases", default="build,unit,tsan,fuzz",
                    help=f"comma-separated, of {','.join(PHASES)}")
    ap.add_argument("--fuzz-seconds", type=int, default=25)
    ap.add_argument("--lab-tests", default="",
                    help="comma-separated meson test names instead of the whole lab suite")
    a = ap.parse_args()
    phases = [p for p in a.phases.split(",") if p]
    if unknown := set(phases) - set(PHASES):
        ap.error(f"unknown phases: {', '.join(sorted(unknown))}")

    missing = [tool for tool in ("clang-16", "clang++-16") if shutil.which(tool) is None]
    if not (CLANG_RT / "libclang_rt.asan-x86_64.a").exists():
        missing.append("libclang-rt-16-dev")
    if missing:
        log(f"SKIP: {', '.join(missing)} not installed (packaging/install-deps --release-tools)")
        return SKIP
    if phases == ["lab"] and os.geteuid() != 0:
        log("SKIP: the lab suite needs root (network namespaces)")
        return SKIP

    run = Run(a.source.resolve(), a.build.resolve(), a.fuzz_seconds,
              [t for t in a.lab_tests.split(",") if t])
    started = time.monotonic()
    try:
        # Each phase builds the dir it needs first, so a phase alone finds its binaries.
        for phase in phases:
            if phase == "lab" and os.geteuid() != 0:
                log("lab phase skipped: not root")
                continue
            getattr(run, f"phase_{phase}")()
    except subprocess.CalledProcessError as e:
        run.failures.append(f"{' '.join(map(str, e.cmd[:4]))} ...: exit {e.returncode}")

    log("\n==== sanitizer suite figures")
    for name, seconds, what in run.figures:
        log(f"  {name:<28} {seconds:7.1f} s  {what}")
    log(f"  {'total':<28} {time.monotonic() - started:7.1f} s")
    for f in run.failures:
        log(f"FAILED: {f}")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
