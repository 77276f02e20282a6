#!/usr/bin/python3
"""imds-agent --check-config: exit 0 for the shipped default config, exit 2 naming the file
and line of an unknown key."""
import subprocess
import sys

agent, default_conf, bad_conf = sys.argv[1:4]


def check(conf):
    return subprocess.run([agent, "--check-config", "--config", conf, "--config-dir",
                           "/nonexistent"], capture_output=True, text=True, timeout=30)


ok = check(default_conf)
assert ok.returncode == 0, f"default config rejected: {ok.returncode} {ok.stderr}"
assert default_conf in ok.stdout, ok.stdout
bad = check(bad_conf)
assert bad.returncode == 2, f"bad config exit {bad.returncode}: {bad.stderr}"
assert f"{bad_conf}:3: unknown key 'intervall'" in bad.stderr, bad.stderr
assert bad.stdout == "", bad.stdout
print("ok")
