"""`mirrorcap window`'s filters and bucket, checked before anything is asked of AWS.

tcpdump once met --port 70000, --host not-an-ip or --bpf 'tcp and and' only after the
download (tshark a --filter it cannot read, too), and botocore met --bucket ../../x in its
own parameter check: each then read as "could not reach AWS" (3). Here each is the
command line's problem (2), first.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import struct
import subprocess
from types import SimpleNamespace

from ..errors import Problem
from . import hostcode

# An empty pcap (the global header only, Ethernet as the hosts write): enough for tcpdump to compile a filter.
_EMPTY_PCAP = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
FILTER_FIX = "write a capture filter in tcpdump's syntax (man pcap-filter), e.g. --bpf 'tcp port 443 and net 10.0.0.0/16'"
DISPLAY_FIX = "write a display filter in Wireshark's syntax (man wireshark-filter), e.g. --filter 'http.response.code >= 500'"


def problems(q, bucket: str | None, which=shutil.which) -> list[Problem]:
    from ..inventory.load import S3_BUCKET
    found = []
    if q.port is not None and not 0 <= q.port <= 65535:
        found.append(Problem("command line", "--port", f"{q.port} is not a port", "pass a TCP or UDP port from 0 to 65535"))
    if q.host is not None and not _is_address(q.host):
        found.append(Problem("command line", "--host", f"{q.host!r} is not an IP address",
                             "pass one IPv4 or IPv6 address, e.g. --host 10.0.1.5 (a network: --bpf 'net 10.0.1.0/24')"))
    if bucket is not None and not re.fullmatch(S3_BUCKET, bucket):
        found.append(Problem("command line", "--bucket", f"{bucket!r} is not an S3 bucket name",
                             "pass the archive bucket's name (3-63 lowercase letters, digits, dots, dashes), or leave --bucket out "
                             "(the capture's archive is found by its tags)"))
    if q.bpf and not found and which("tcpdump"):  # no tcpdump: missing_tools says so
        w = hostcode.window()
        expression = w.bpf_for(SimpleNamespace(host=q.host, port=q.port, bpf=q.bpf))  # what the extract will run
        said = _compile(expression)
        if said is not None:
            found.append(Problem("command line", "--bpf", f"tcpdump cannot use the filter: {said}", FILTER_FIX))
    if q.display and which("tshark"):  # no tshark: missing_tools says so
        said = _compile_display(q.display)
        if said is not None:
            found.append(Problem("command line", "--filter", f"tshark cannot use the display filter: {said}", DISPLAY_FIX))
    return found


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _compile(expression: str) -> str | None:
    """What tcpdump says of `expression` (compiled against an empty pcap on its input), or None when it reads it."""
    r = subprocess.run(["tcpdump", "-d", "-r", "-", expression], input=_EMPTY_PCAP, capture_output=True, timeout=30)
    if r.returncode == 0:
        return None
    lines = [line for line in r.stderr.decode(errors="replace").splitlines() if not line.startswith("reading from file")]
    return (lines[-1].removeprefix("tcpdump: ") if lines else f"exit {r.returncode}")[:300]


def _compile_display(expression: str) -> str | None:
    """What tshark says of the display filter `expression` (compiled before it reads an empty pcap), or None
    when it reads it. Alone, not inside the window's own `(...) && (...)`: a filter is one expression."""
    r = subprocess.run(["tshark", "-n", "-r", "-", "-Y", expression], input=_EMPTY_PCAP, capture_output=True, timeout=60)
    if r.returncode == 0:
        return None
    # Its own line starts "tshark: " (a note on running as root may come before it; the filter and a caret after).
    lines = [line for line in r.stderr.decode(errors="replace").splitlines() if line.startswith("tshark: ")]
    return (lines[0].removeprefix("tshark: ") if lines else f"exit {r.returncode}")[:300]
