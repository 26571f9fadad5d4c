#!/usr/bin/python3
"""mirrorcap-settings: the instance's settings from its current user data, on every boot.

A deploy that changes a capture's settings (a VNI, the rotation...) changes the
instance's user data, which AWS applies by stopping and starting the instance;
cloud-init runs user data only on an instance's first boot. So on every boot,
before storage and decap start, this reads the user data from IMDSv2, takes the
env file it carries (never runs it: only its MIRRORCAP_ENV block, and only a user
data of this capture), and when that differs from the env file (/etc/mirrorcap),
writes it and runs mirrorcap-boot, which converges the host on it. When IMDS does
not answer within a minute the settings stay as they are (decap waits for IMDS
anyway). Python 3.9 stdlib only.
"""
import fcntl
import gzip
import os
import re
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/libexec/mirrorcap.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

WAIT_SECONDS = 60
BOOT = "/usr/local/sbin/mirrorcap-boot"
# The block user-data.sh.j2 writes the env file from (the renderer's own test reads it back).
BLOCK = re.compile(r"<<'MIRRORCAP_ENV'\n(.*?)MIRRORCAP_ENV\n", re.S)


def log(message):
    print("mirrorcap-settings: " + message, file=sys.stderr, flush=True)


def user_data():
    """The instance's user data (gzip unpacked), through IMDSv2."""
    data = host.imds("/latest/user-data", token_timeout=3)
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()


def env_block(text, capture):
    """The env file a user data of `capture` writes, or None for any other user data."""
    marker = '# mirrorcap first boot for capture "%s" ' % capture
    if not any(line.startswith(marker) for line in text.split("\n", 3)[1:3]):
        return None
    m = BLOCK.search(text)
    return m.group(1) if m else None


def main():
    try:
        with open(host.ENV_FILE) as f:
            current = f.read()
        capture = host.read_env()["MIRRORCAP_CAPTURE"]
    except (OSError, KeyError) as e:
        log("cannot read %s: %s (the user data writes it on the first boot)" % (host.ENV_FILE, e))
        return 0
    deadline, error = time.monotonic() + WAIT_SECONDS, None
    while True:
        try:
            text = user_data()
            break
        except (OSError, ValueError, EOFError) as e:
            error = e
        if time.monotonic() > deadline:
            log("the instance metadata service (IMDS) gave no user data (%s): keeping the settings in %s" % (error, host.ENV_FILE))
            return 0
        time.sleep(2)
    new = env_block(text, capture)
    if new is None:
        log("the instance's user data is not capture %s's: keeping the settings in %s" % (capture, host.ENV_FILE))
        return 0
    if new == current:
        log("settings unchanged")
        return 0
    before = dict(line.split("=", 1) for line in current.splitlines() if "=" in line and not line.startswith("#"))
    after = dict(line.split("=", 1) for line in new.splitlines() if "=" in line and not line.startswith("#"))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    with open(host.BOOTSTRAP_LOCK, "w") as lock:  # the user data's run, if any, first: then this one
        fcntl.flock(lock, fcntl.LOCK_EX)
        tmp = host.ENV_FILE + ".tmp"
        with open(tmp, "w") as f:
            f.write(new)
        os.chmod(tmp, 0o644)
        os.replace(tmp, host.ENV_FILE)
        log("the user data changed %s: converging" % ", ".join("%s (%s -> %s)" % (k, before.get(k), after.get(k)) for k in changed))
        return subprocess.run([BOOT]).returncode


if __name__ == "__main__":
    sys.exit(main())
