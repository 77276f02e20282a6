#!/usr/bin/python3
"""The README's first command ends in demo.py: it must print the probe's diagnosis of the
emulated instance (required tokens, hop limit 1) and its bridge container, and leave no
namespace behind.

Usage: test_demo.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lab import build_dir_from_argv, skip_unless_lab_possible  # noqa: E402

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")


def lab_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("il")}


class ReadmeDemo(unittest.TestCase):
    def test_the_demo_prints_the_diagnosis_of_the_broken_container_and_cleans_up(self) -> None:
        before = lab_namespaces()
        r = subprocess.run([sys.executable, str(HERE / "demo.py"), "--build", str(BUILD_DIR)],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("verdict: NOT HEALTHY", r.stdout)
        self.assertIn("HttpTokens=required, hop limit=1", r.stdout)
        self.assertIn("container-no-token: c1", r.stdout)
        self.assertIn("--http-put-response-hop-limit 2", r.stdout)
        self.assertEqual(lab_namespaces() - before, set(), "the demo left namespaces behind")


if __name__ == "__main__":
    skip_unless_lab_possible(["curl"])
    unittest.main(verbosity=2)
