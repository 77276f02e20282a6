#!/usr/bin/env python3
# Runs clang-tidy with the repository's .clang-tidy over every project translation unit
# of a build's compile_commands.json; any finding fails the test (suite `tidy`).
#
#   run_tidy.py SOURCE_ROOT BUILD_DIR [FILE...]   # FILE: only these TUs (paths or suffixes)
#
# Exit: 0 clean, 1 findings (or a TU clang-tidy could not check), 77 no clang-tidy-16.

import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

CLANG_TIDY = "clang-tidy-16"
JOBS = 2
TU_TIMEOUT_S = 900

# The build is g++'s; clang reads the same command (same -D, -I, -std) with these
# additions. Warnings are the compilers' business (the g++ build has -Werror), so a
# clang-only warning must not turn into a clang-tidy error; gcc-only -W options and
# flags clang does not know are ignored rather than failing the TU.
EXTRA_ARGS_BEFORE = []
EXTRA_ARGS = [
    "-Wno-unknown-warning-option",
    "-Wno-error",
    "-Qunused-arguments",
    "-fno-diagnostics-color",
]
# gcc-only flags clang rejects outright (an unknown -f is an error, not a warning).
GCC_ONLY_FLAG = re.compile(
    r"^-f(no-)?(semantic-interposition|var-tracking.*|ipa-.*|tree-.*|"
    r"gcse.*|lto-partition=.*|fat-lto-objects|diagnostics-show-caret|"
    r"analyzer.*|prefetch-loop-arrays|reorder-blocks-algorithm=.*|"
    r"sanitize=bounds-strict|stack-clash-protection|cf-protection.*)$"
    r"|^-flto=auto$|^-flto=jobserver$|^--param=.*$|^-fanalyzer$"
)

DIAG = re.compile(
    r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): "
    r"(?P<kind>warning|error): (?P<msg>.*?)(?: \[(?P<check>[^\]]+)\])?$"
)
NOTE = re.compile(r"^(?P<file>[^\s:][^:]*):\d+:\d+: note: ")


def load_units(source_root, build_dir, only):
    with open(os.path.join(build_dir, "compile_commands.json"), encoding="utf-8") as f:
        entries = json.load(f)
    units = []
    seen = set()
    root = os.path.realpath(source_root) + os.sep
    build = os.path.realpath(build_dir) + os.sep
    for entry in entries:
        path = os.path.realpath(os.path.join(entry["directory"], entry["file"]))
        if not path.startswith(root) or path.startswith(build):
            continue  # generated, or not ours
        rel = path[len(root):]
        if rel.startswith("subprojects" + os.sep):
            continue
        if only and not any(rel == o or rel.endswith(os.sep + o) or path == o for o in only):
            continue
        if path in seen:
            continue
        seen.add(path)
        units.append((rel, path, entry))
    return units


def needs_filtered_db(entries):
    for _, _, entry in entries:
        args = entry.get("arguments") or shlex.split(entry["command"])
        if any(GCC_ONLY_FLAG.match(a) for a in args):
            return True
    return False


def write_filtered_db(build_dir, out_dir):
    """A copy of compile_commands.json without the flags clang cannot parse."""
    with open(os.path.join(build_dir, "compile_commands.json"), encoding="utf-8") as f:
        entries = json.load(f)
    for entry in entries:
        args = entry.pop("arguments", None) or shlex.split(entry.pop("command"))
        entry["arguments"] = [a for a in args if not GCC_ONLY_FLAG.match(a)]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compile_commands.json"), "w", encoding="utf-8") as f:
        json.dump(entries, f)
    return out_dir


def run_one(db_dir, source_root, path, directory):
    cmd = [CLANG_TIDY, "--quiet", "--use-color=false", "-p", db_dir,
           "--config-file", os.path.join(source_root, ".clang-tidy")]
    cmd += [f"--extra-arg-before={a}" for a in EXTRA_ARGS_BEFORE]
    cmd += [f"--extra-arg={a}" for a in EXTRA_ARGS]
    cmd.append(path)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TU_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return path, None, f"timed out after {TU_TIMEOUT_S} s", time.monotonic() - start, []
    return (path, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start,
            parse_findings(proc.stdout, directory))


def parse_findings(output, directory):
    """[(key, text)]: each diagnostic with its notes and source excerpt. clang-tidy names
    files as the compile command does, relative to its directory."""
    findings = []
    current = None
    for line in output.splitlines():
        m = DIAG.match(line)
        if m:
            if current:
                findings.append(current)
            file = os.path.realpath(os.path.join(directory, m["file"]))
            line = line.replace(m["file"], file, 1)
            key = (file, int(m["line"]), int(m["col"]), m["check"] or m["kind"], m["msg"])
            current = [key, [line]]
        elif current and (n := NOTE.match(line)):
            file = os.path.realpath(os.path.join(directory, n["file"]))
            current[1].append(line.replace(n["file"], file, 1))
        elif current:  # its source excerpt, fix-it hints
            current[1].append(line)
    if current:
        findings.append(current)
    return [(k, "\n".join(t).rstrip()) for k, t in findings]


def main(argv):
    if len(argv) < 3:
        print(f"usage: {argv[0]} SOURCE_ROOT BUILD_DIR [FILE...]", file=sys.stderr)
        return 2
    source_root, build_dir, only = argv[1], argv[2], argv[3:]
    if shutil.which(CLANG_TIDY) is None:
        print(f"SKIP: {CLANG_TIDY} not found (packaging/install-deps --release-tools)")
        return 77
    units = load_units(source_root, build_dir, only)
    if not units:
        print("no translation units to check", file=sys.stderr)
        return 1
    db_dir = build_dir
    if needs_filtered_db(units):
        db_dir = write_filtered_db(build_dir, os.path.join(build_dir, "meson-private",
                                                           "tidy-db"))

    root = os.path.realpath(source_root) + os.sep
    start = time.monotonic()
    findings = {}  # key -> text, first seen
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
        futures = [pool.submit(run_one, db_dir, source_root, path, entry["directory"])
                   for _, path, entry in units]
        for fut in concurrent.futures.as_completed(futures):
            path, rc, output, took, parsed = fut.result()
            rel = os.path.relpath(path, source_root)
            new = {key: text for key, text in parsed if key not in findings}
            findings.update(new)
            print(f"{rel}: {len(parsed)} finding(s), {len(new)} new ({took:.1f} s)", flush=True)
            for text in new.values():  # each once, as soon as it is seen
                print(text.replace(root, ""), flush=True)
            if rc is None or (rc != 0 and not parsed):
                print(f"{rel}: clang-tidy failed:\n{output}", flush=True)
                failed.append(rel)
    wall = time.monotonic() - start

    by_check = {}
    for key in findings:
        by_check[key[3]] = by_check.get(key[3], 0) + 1
    if by_check:
        print("by check: " + ", ".join(f"{c} {n}" for c, n in sorted(by_check.items())))
    print(f"clang-tidy: {len(units)} translation units checked, {len(findings)} finding(s), "
          f"{len(failed)} failed, wall time {wall:.0f} s")
    return 1 if findings or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
