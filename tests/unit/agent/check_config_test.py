#!/usr/bin/python3
"""imds-agent --check-config: exit 0 for the shipped default config, exit 2 naming the file
and line of an unknown key or of an endpoint the collector would refuse, and exit 2 at once
(no blocking open) when the config is a FIFO or a directory."""
import os
import subprocess
import sys
import tempfile

agent, default_conf, bad_conf = sys.argv[1:4]


def check(conf, timeout=30):
    return subprocess.run([agent, "--check-config", "--config", conf, "--config-dir",
                           "/nonexistent"], capture_output=True, text=True, timeout=timeout)


def check_quickly(conf):
    """--check-config that must answer within seconds (a blocking open would hang)."""
    try:
        return check(conf, timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"--check-config --config {conf} did not finish: blocked?")


ok = check(default_conf)
assert ok.returncode == 0, f"default config rejected: {ok.returncode} {ok.stderr}"
assert default_conf in ok.stdout, ok.stdout
bad = check(bad_conf)
assert bad.returncode == 2, f"bad config exit {bad.returncode}: {bad.stderr}"
assert f"{bad_conf}:3: unknown key 'intervall'" in bad.stderr, bad.stderr
assert bad.stdout == "", bad.stdout

with tempfile.TemporaryDirectory(prefix="imds-check-config-") as tmp:
    user = os.path.join(tmp, "user-endpoint.conf")
    with open(user, "w", encoding="utf-8") as f:
        f.write("# an endpoint with a user name\nendpoint = http://user@169.254.169.254\n")
    r = check(user)
    assert r.returncode == 2, f"endpoint with a user: exit {r.returncode}: {r.stdout}{r.stderr}"
    assert f"{user}:2: endpoint: 'http://user@169.254.169.254'" in r.stderr, r.stderr
    assert "user name or password" in r.stderr, r.stderr

    fifo = os.path.join(tmp, "fifo.conf")
    os.mkfifo(fifo)
    r = check_quickly(fifo)
    assert r.returncode == 2, f"FIFO config: exit {r.returncode}: {r.stdout}{r.stderr}"
    assert f"{fifo}: is a FIFO, not a regular file" in r.stderr, r.stderr

    r = check_quickly(tmp)
    assert r.returncode == 2, f"directory as config: exit {r.returncode}: {r.stdout}{r.stderr}"
    assert f"{tmp}: is a directory, not a regular file" in r.stderr, r.stderr
print("ok")
