#!/usr/bin/python3
"""The README's first command ends in demo.py: it must print the probe's diagnosis of the
emulated instance (required tokens, hop limit 1) and its bridge container, and leave no
namespace behind.

Usage: test_demo.py --build BUILD_DIR [unittest options]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lab import build_dir_from_argv, skip_unless_lab_possible  # noqa: E402

BUILD_DIR = build_dir_from_argv(HERE.parents[1] / "build")


def namespaces_named(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


class ReadmeDemo(unittest.TestCase):
    def test_the_demo_prints_the_diagnosis_of_the_broken_container_and_cleans_up(self) -> None:
        r = subprocess.run([sys.executable, str(HERE / "demo.py"), "--build", str(BUILD_DIR)],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("verdict: NOT HEALTHY", r.stdout)
        self.assertIn("HttpTokens=required, hop limit=1", r.stdout)
        self.assertIn("container-no-token: c1", r.stdout)
        self.assertIn("--http-put-response-hop-limit 2", r.stdout)
        # Other lab tests may run at the same time: look only at the demo's own lab.
        m = re.search(r"the instance \((il[0-9a-z]+)-host\)", r.stdout)
        self.assertIsNotNone(m, r.stdout)
        self.assertEqual(namespaces_named(m.group(1) + "-"), [], "the demo left namespaces")


if __name__ == "__main__":
    skip_unless_lab_possible(["curl"])
    unittest.main(verbosity=2)
