"""A rendered capture host in the boot lab, as production makes one, and what tests do to it.

Production bakes rendered/<capture>/bake.sh into an Amazon Linux 2023 AMI (Packer's
shell provisioner) and boots it with the small user data. `baked()` does the same
to a lab machine: bake.sh chrooted in its disk (an image build step, before any
boot), then the user data with the IDs Terraform fills in, run once by the lab's
cloud-init stand-in. Nothing is switched off: the units as rendered, Debian's
tcpdump, the real systemd.

Traffic is AWS-shaped VXLAN (tests/bootlab/traffic.py) replayed with tcpreplay from the
sender's namespace; each inner packet carries a tag, so a test counts exactly
which packets reached a pcap, whole or not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from bootlab import Machine, rootfs
from helpers import ROOT
from mirrorcap.host import render
from bootlab import traffic
from bootlab.traffic import read_pcap

VOLUME, ENI = "vol-0123456789abcdef0", "eni-0123456789abcdef0"
VNI = 12345
DIR = "/var/log/tcpdump"
TAG = re.compile(rb"MCT(\d{8})")


def unit(vni: int = VNI) -> str:
    return f"mirrorcap-capture@{vni}.service"


def run_dir(vni: int = VNI) -> str:
    return f"/run/mirrorcap/capture-{vni}"


def state_file(vni: int = VNI) -> str:
    return f"/var/lib/mirrorcap/capture-{vni}/state.json"


def rendered_user_data(name: str = "prod", volume: str = VOLUME, eni: str = ENI) -> str:
    text = (ROOT / "rendered" / name / "user-data.sh").read_text()
    return text.replace(render.VOLUME_PLACEHOLDER, volume).replace(render.ENI_PLACEHOLDER, eni)


def baked(tmp: Path, name: str, *, bake: str | None = None, user_data: str | None = None, **machine) -> Machine:
    """A machine whose disk holds the baked image and the user data, not yet booted (open it: `with`).
    bake/user_data: the rendered example's unless given (a capture's render.bake_script/user_data)."""
    machine.setdefault("eni_id", ENI)
    machine.setdefault("volume_id", VOLUME)
    m = Machine(rootfs(), tmp, name, **machine)
    m.open()
    try:
        bake_image(m, bake if bake is not None else (ROOT / "rendered/prod/bake.sh").read_text())
        m.install_user_data(user_data if user_data is not None else rendered_user_data())
    except BaseException:
        m.close()
        raise
    return m


def bake_image(m: Machine, script: str) -> None:
    """An image build step, before any boot: bake.sh chrooted in the machine's disk (Packer's shell provisioner)."""
    m.write_file("/root/bake.sh", script, 0o755)
    r = m.chroot_run("bash", "/root/bake.sh")
    assert r.returncode == 0, r.stderr


tag = traffic.tag


class Traffic(traffic.Traffic):
    """AWS-shaped VXLAN to one machine's mirror ENI; frames of the example's VNI unless told."""

    def __init__(self, m: Machine, vni: int = VNI):
        super().__init__(m, vni)


def sent(replay: subprocess.Popen, timeout: float = 600) -> int:
    """Packets a finished background replay put on the wire (tcpreplay's own count)."""
    out, err = replay.communicate(timeout=timeout)
    assert replay.returncode == 0, err
    return int(re.search(r"Actual: (\d+) packets", out).group(1))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


@contextmanager
def tagged_traffic(m: Machine, vni: int = VNI, count: int = 40, pps: int = 40):
    """Inner IPv4 packets tagged 0..count-1, replayed in the background while the block runs."""
    t = Traffic(m, vni)
    proc = t.background([t.frame(vni, traffic.inner_ipv4(tag(i))) for i in range(count)], pps=pps)
    try:
        yield proc
    finally:
        stop(proc)


@contextmanager
def rotating_host(tmp_path_factory, machine: str, capture_name: str):
    """A capture of one source rotating every 30 s, baked and booted as production does, capturing
    tagged traffic: (the machine, its VNI)."""
    from helpers import eni, minimal, sources, write
    from mirrorcap.inventory import load
    d = tmp_path_factory.mktemp(machine)
    body = sources(eni(1)) + "\n  host {\n    rotate_seconds = 30\n  }\n"
    capture = load(write(d, minimal(body, name=capture_name))).captures[0]
    vni = capture.vnis[0]
    with Machine(rootfs(), d, machine, eni_id=ENI, volume_id=VOLUME) as m:
        bake_image(m, render.bake_script(capture, render.host_files(capture)))
        m.install_user_data(render.user_data(capture, VOLUME, ENI))
        m.boot()
        wait_for(lambda: m.unit_state(unit(vni)) == "active" and list(m.path(DIR).glob("vni*_*.pcap")), 120, "capture")
        with tagged_traffic(m, vni):
            yield m, vni


def pcaps(m: Machine) -> dict[str, os.stat_result]:
    d = m.path(DIR)
    return {p.name: p.stat() for p in d.iterdir() if p.name.endswith(".pcap")}


def captured(m: Machine, vni: int = VNI) -> dict[int, list[tuple[int, int]]]:
    """Tag -> [(caplen, len), ...] over every pcap of a VNI."""
    return {t: [(c, n) for c, n, _ in v] for t, v in captured_times(m, vni).items()}


def captured_times(m: Machine, vni: int = VNI) -> dict[int, list[tuple[int, int, float]]]:
    """Tag -> [(caplen, len, packet time), ...] over every pcap of a VNI (whole records only)."""
    seen: dict[int, list[tuple[int, int, float]]] = {}
    for p in sorted(m.path(DIR).glob(f"vni{vni}_*.pcap")):
        for caplen, length, data, ts in read_pcap(p.read_bytes(), times=True):
            found = TAG.search(data)
            if found:
                seen.setdefault(int(found.group(1)), []).append((caplen, length, ts))
    return seen


# A wait's bound only ends a test whose condition never comes; it is never how fast the host must
# be. On a busy machine (CI beside other jobs, a CPU hog) what takes a second when quiet can take
# many: no wait gives up before this.
MIN_WAIT = 60


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    timeout = max(timeout, MIN_WAIT)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


FLUSH_MARK = 99990000  # tags from here on are the flush markers below, never a test's traffic


def flushed(m: Machine, vni: int = VNI, timeout: float = 120) -> None:
    """Everything captured so far is in the pcaps: one more tagged packet is sent and waited for
    (the capture writes in order), however long a busy machine takes to flush."""
    flushed.count = getattr(flushed, "count", 0) + 1
    mark = FLUSH_MARK + flushed.count
    t = Traffic(m, vni)
    t.replay([t.frame(vni, traffic.inner_ipv4(tag(mark)))])
    wait_for(lambda: mark in captured(m, vni), timeout, f"the flush marker {mark} in its pcap", step=0.2)


def capture_state(m: Machine, vni: int = VNI) -> dict:
    """The capture's loss record (its StateDirectory)."""
    try:
        return json.loads(m.path(state_file(vni)).read_text())
    except (OSError, ValueError):
        return {}


def writing(m: Machine, vni: int = VNI) -> bool:
    state = capture_state(m, vni)
    return bool(state.get("writing")) and state.get("gap") is None


def wait_capturing(m: Machine, timeout: float = 120, vni: int = VNI) -> dict:
    def ready():
        return capture_state(m, vni) if m.unit_state(unit(vni)) == "active" and writing(m, vni) else None
    try:
        return wait_for(ready, timeout, f"{unit(vni)} writing")
    except AssertionError:
        raise AssertionError(f"{unit(vni)} not capturing: {m.unit_state(unit(vni))}\n{m.journal('mirrorcap-storage.service')}"
                             f"\n{m.journal('mirrorcap-decap.service')}\n{m.journal(unit(vni))}\n{m.console_tail()}")


def health(m: Machine, sample: float = 0) -> tuple[int, dict]:
    r = m.run("mirrorcap-health", "--json", "--sample-seconds", str(sample))
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def check(report: dict, name: str, vni: int | None = None) -> dict:
    (found,) = [c for c in report["checks"] if c["name"] == name and (vni is None or c.get("vni") == str(vni))]
    return found


def failing(report: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}


def tcpdump_pid(m: Machine, vni: int = VNI) -> int:
    main = int(m.unit_show(unit(vni), "MainPID")["MainPID"])
    out = m.run("pgrep", "-P", str(main), "-x", "tcpdump").stdout.split() if main else []
    return int(out[0]) if out else 0


# --- what was lost, against what the capture reports -----------------------------------

def new_gaps(before: dict, after: dict) -> list[dict]:
    return after.get("gaps", [])[-(after.get("gaps_total", 0) - before.get("gaps_total", 0)):] \
        if after.get("gaps_total", 0) > before.get("gaps_total", 0) else []


def missing_runs(times: dict[int, list], first: int, count: int) -> list[tuple[int, int]]:
    """Runs of consecutive tags [a, b] in first..first+count-1 that reached no pcap."""
    runs, start = [], None
    for t in range(first, first + count):
        if t not in times:
            start = t if start is None else start
        elif start is not None:
            runs.append((start, t - 1))
            start = None
    if start is not None:
        runs.append((start, first + count - 1))
    return runs


def bracket(times: dict[int, list], run: tuple[int, int]) -> tuple[float, float]:
    """(time of the last packet captured before a lost run, of the first captured after it)."""
    return times[run[0] - 1][0][2], times[run[1] + 1][0][2]


def assert_accounted(times, first, count, sent_count, gaps, kernel_drops=0):
    """What was lost (sent - captured) is at most what health counts; each recorded gap brackets a
    lost run to within a second; and the count is an honest bound, not a wild one."""
    captured_count = sum(1 for t in range(first, first + count) if t in times)
    real = sent_count - captured_count
    reported = sum(g["lost_packets_max"] for g in gaps) + kernel_drops
    assert reported >= real, (reported, real, gaps)
    runs = missing_runs(times, first, count)
    assert runs, "nothing was lost: the fault did not happen"
    for run in runs:
        before, after = bracket(times, run)
        found = [g for g in gaps if g["start"] <= before + 1 and g["end"] >= after - 1]
        assert len(found) == 1, (run, before, after, [(g["start"], g["end"], g["reason"][:40]) for g in gaps])
        (gap,) = found
        assert before - 1 <= gap["start"] <= before + 0.5, (run, before, gap)
        assert after - 1 <= gap["end"] <= after + 1, (run, after, gap)
    return real, reported
