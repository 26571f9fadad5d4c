"""What the host's Python scripts share: the env file and the pcap names.

Installed as /usr/local/lib/mirrorcap/mirrorcap_host.py; the host's Python
scripts import it from there. Python 3.9 stdlib only.
"""
import datetime as dt
import os
import re

ENV_FILE = "/etc/mirrorcap/mirrorcap.env"


def read_env(path=ENV_FILE):
    """The env file as a dict (KEY=value lines, quotes dropped; not run by a shell)."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key] = value.strip().strip('"')
    return values


# MIRRORCAP_PCAP_PATTERN is tcpdump -G's file name (strftime, UTC) with {vni}:
# everything else about pcap names is derived from it (retention does the same in shell).
def pcap_pattern(pattern, vni):
    """The -w pattern of one VNI's capture."""
    return pattern.replace("{vni}", str(vni))


def pcap_glob(pattern, vni="*"):
    """The names of one VNI's pcaps (of every VNI's by default) as a glob."""
    return re.sub("%.", "*", pcap_pattern(pattern, vni))


def pcap_start(pattern, name):
    """(VNI, start time in UTC) of a pcap named by `pattern`, None for any other name."""
    parts = [r"(\d+)" if p == "{vni}" else ".+" if p.startswith("%") else re.escape(p)
             for p in re.split(r"(\{vni\}|%.)", pattern)]
    m = re.fullmatch("".join(parts), name)
    if not m:
        return None
    try:
        start = dt.datetime.strptime(name, pcap_pattern(pattern, m.group(1)))
    except ValueError:
        return None
    return int(m.group(1)), start.replace(tzinfo=dt.timezone.utc)


def on_its_own_volume(directory):
    """True when `directory` is the root of a mounted file system.

    Compared by device number with its parent: in a unit ReadWritePaths=
    bind-mounts the directory, which makes mountpoint(1) and mountinfo say
    "mounted" even when the volume is not; a bind of a directory of the root
    volume still carries the root volume's device number.
    """
    try:
        return os.stat(directory).st_dev != os.stat(os.path.join(directory, "..")).st_dev
    except OSError:
        return False
