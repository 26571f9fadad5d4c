"""The capture host when the pcap volume itself fails, booted as production boots it
(tests/capturehost.py): its file system shuts down under capture, a pcap's middle turns to
garbage, files mirrorcap did not write fill it, tcpdump is held stopped.

The same rule as tests/host/test_host_faults.py: no state in which the host is not capturing,
will not start capturing by itself, and mirrorcap-health says healthy; what health reports lost
is never below what was lost (counted from the interface against the tagged traffic sent); the
cause is named in the first line health prints; the fix is done by the host or printed as a
command that works. Run one with -k and its word: fs_shutdown, partial_index, foreign_files,
held_stop.
"""

from __future__ import annotations

import base64
import gzip
import re
import struct
import time

from bootlab import needs_lab
from bootlab.traffic import read_pcap
from capturehost import (DIR, TAG, VNI, Traffic, assert_accounted, baked, captured, captured_times, capture_state, check, flushed,
                         failing, health, new_gaps, sent, stop, tcpdump_pid, unit, wait_capturing, wait_for, writing)

from mirrorcap import contract
from mirrorcap.find import ssm
from mirrorcap.find.query import parse, tree

pytestmark = needs_lab

UNIT = unit()


def first_line(m) -> str:
    """The first line mirrorcap-health prints: what a person or an alarm reads of it."""
    r = m.run("mirrorcap-health", "--sample-seconds", "0")
    assert r.returncode in (0, 1), r.stderr
    return r.stdout.splitlines()[0]


def as_the_agent(m, line: str) -> dict:
    """What the SSM agent does with AWS-RunShellScript's commands: a script run by a root shell."""
    assert ssm.SAFE_LINE.fullmatch(line), line
    r = m.run("bash", "-c", line, timeout=120)
    assert r.returncode == 0, r.stderr
    return {"Status": "Success", "ResponseCode": 0, "StandardOutputContent": r.stdout, "StandardErrorContent": r.stderr}


def restarts(m) -> int:
    return int(m.unit_show(UNIT, "NRestarts")["NRestarts"])


def tries(m) -> int:
    """Starts of the capture unit after it failed: systemd's restarts and mirrorcap-capture-backoff's."""
    later = m.run("cat", "/run/mirrorcap/capture-backoff.%s" % VNI).stdout.split()
    return restarts(m) + len(later)


# --- fs_shutdown: the file system of the pcap volume shuts down under capture ---------------

def test_fs_shutdown_is_remounted_by_the_host_and_the_vanished_packets_counted(tmp_path):
    pps, count = 500, 20000  # 40 s of traffic
    with baked(tmp_path, "fsshutdown") as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        health(m)
        before, restarts_before = capture_state(m), restarts(m)
        replay = traffic.background(traffic.frames(0, count), pps=pps, loop=1)
        # Part of the pcap reaches the disk (sync), more stays in the page cache: the shutdown drops that.
        wait_for(lambda: len(captured(m)) >= 2000, 60, "2000 packets captured", step=0.2)
        assert m.run("sync").returncode == 0
        wait_for(lambda: len(captured(m)) >= 5000, 60, "5000 packets captured", step=0.2)
        shut = m.run("xfs_io", "-x", "-c", "shutdown", DIR)
        assert shut.returncode == 0, shut.stderr
        shut_at = time.time()
        during = first_line(m)  # while it is down, or already remounted: the I/O error named either way
        # The host remounts it by itself (mirrorcap-recover): capture resumes, nobody runs anything.
        wait_for(lambda: writing(m) and capture_state(m).get("gaps_total", 0) > before.get("gaps_total", 0), 120,
                 "capture writing again after the remount", step=0.2)
        resumed_at = time.time()
        sent_count = sent(replay)
        flushed(m)
        after = capture_state(m)
        gaps = new_gaps(before, after)
        evidence = "%s\n%s\n%s" % (gaps, m.journal("mirrorcap-recover.service")[-3000:], m.journal(UNIT)[-3000:])
        assert len(gaps) == 1, evidence
        (gap,) = gaps
        assert "file system failed" in gap["reason"] and "Input/output error" in gap["reason"], gap
        # Every loss counted: what the interface received from the last packet the volume kept on.
        real, reported = assert_accounted(captured_times(m), 0, count, sent_count, gaps)
        assert real > 0 and reported >= real, (real, reported, evidence)
        # The packets after the sync that the shutdown dropped are in the loss (the gap starts where the
        # volume's data ends, before the shutdown), not only those sent while it was down.
        assert gap["start"] < shut_at - 1, (gap["start"], shut_at, evidence)
        # No hot loop: the watcher waited for the remount instead of dying into restarts.
        assert restarts(m) - restarts_before <= 2, (restarts(m), restarts_before, evidence)
        assert resumed_at - shut_at < 60, evidence
        assert "unmounting it, mounting it again" in m.journal("mirrorcap-recover.service"), evidence
        assert "Input/output error" in during, during
        code, report = health(m)
        w = check(report, "writing")
        assert code == 1 and w["lost_since_last_check"] >= real, (w, real)
        assert check(report, "storage")["status"] == "ok" and check(report, "restarts")["status"] == "ok", report
        assert health(m)[0] == 0


def test_fs_shutdown_without_its_recovery_is_named_first_flapping_noticed_and_the_printed_fix_works(tmp_path):
    """The same fault with mirrorcap-recover's path and timer stopped (a person stopped them, or they failed):
    nothing remounts the volume. Health names the I/O error first and prints the commands; a watcher
    killed meanwhile brings the unit's restart loop (its mount namespace cannot be set up on the dead
    file system), which health's restarts check counts from systemd's own count."""
    with baked(tmp_path, "fsbyhand") as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        m.run("systemctl", "stop", "mirrorcap-recover.path", "mirrorcap-recover.timer", check=True)
        with_traffic = traffic.background(traffic.frames(0, 6000), pps=300, loop=1)
        wait_for(lambda: len(captured(m)) >= 300, 60, "300 packets captured", step=0.2)
        assert m.run("xfs_io", "-x", "-c", "shutdown", DIR).returncode == 0
        wait_for(lambda: capture_state(m).get("gap"), 60, "the gap opened", step=0.2)
        line = first_line(m)
        assert line.startswith("mirrorcap-health: UNHEALTHY: storage:") and "Input/output error" in line, line
        # The watcher waits: no restart while nothing changes.
        n = tries(m)
        health(m)  # systemd's count, sampled
        m.run("systemctl", "kill", "--signal=SIGKILL", UNIT, check=True)
        wait_for(lambda: tries(m) >= n + 3, 90, "the unit failing to start again and again", step=0.5)
        # It keeps trying, but not in a hot loop: each start whose sandbox cannot be set up (226/NAMESPACE)
        # waits longer than the last (mirrorcap-capture-backoff: 2, 4, 8, 16... s). Restarted by systemd every
        # 2 s instead, two more tries take about 5 s.
        tried, since = tries(m), time.monotonic()
        wait_for(lambda: tries(m) >= tried + 2, 120, "two more tries", step=0.5)
        slow = time.monotonic() - since
        backoff = m.journal("mirrorcap-capture-backoff@%s.service" % VNI)
        assert slow > 12, (slow, backoff[-3000:], m.journal(UNIT)[-3000:])
        assert "could not set up its sandbox" in backoff and "does not read" in backoff, backoff[-3000:]
        code, report = health(m)
        r = check(report, "restarts")
        assert code == 1 and r["status"] == "fail" and "systemd restarted" in r["detail"], r
        # The printed fix, run as printed.
        fix = re.search(r"by hand: (systemctl start mirrorcap-recover\.service) ", check(report, "storage")["detail"]).group(1)
        done = m.run("sh", "-c", fix)
        assert done.returncode == 0, (fix, done.stderr)
        wait_capturing(m)
        stop(with_traffic)
        flushed(m)
        m.run("systemctl", "start", "mirrorcap-recover.path", "mirrorcap-recover.timer", check=True)
        health(m)
        # Healthy but for the restarts of the last 10 minutes, which the check goes on counting.
        assert set(failing(health(m)[1])) <= {"restarts"}, failing(health(m)[1])


def test_fs_shutdown_that_no_watcher_reports_is_remounted_by_the_timer(tmp_path):
    """The watcher that saw the I/O error is killed before anything answered it (the path unit
    stopped): the capture unit cannot start on the dead file system, so no watcher asks again.
    mirrorcap-recover.timer finds the volume dead by itself and remounts it; the gap the first
    watcher opened is closed, its loss counted."""
    pps, count = 300, 30000
    with baked(tmp_path, "fstimer") as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        health(m)
        before = capture_state(m)
        m.run("systemctl", "stop", "mirrorcap-recover.path", check=True)
        replay = traffic.background(traffic.frames(0, count), pps=pps, loop=1)
        wait_for(lambda: len(captured(m)) >= 300, 60, "300 packets captured", step=0.2)
        assert m.run("xfs_io", "-x", "-c", "shutdown", DIR).returncode == 0
        wait_for(lambda: capture_state(m).get("gap"), 60, "the gap opened", step=0.2)
        m.run("systemctl", "kill", "--signal=SIGKILL", UNIT, check=True)
        killed = time.time()
        wait_for(lambda: writing(m) and capture_state(m).get("gaps_total", 0) > before.get("gaps_total", 0), 150,
                 "capture writing again, remounted by the timer", step=0.5)
        assert time.time() - killed < 150
        assert "unmounting it, mounting it again" in m.journal("mirrorcap-recover.service")
        resumed = len(captured(m))
        wait_for(lambda: len(captured(m)) >= resumed + pps, 60, "a second of traffic after the remount", step=0.2)
        stop(replay)
        flushed(m)
        gaps = new_gaps(before, capture_state(m))
        assert len(gaps) == 1 and "file system failed" in gaps[0]["reason"], gaps
        # Little or nothing had been written out before the shutdown (the kernel writes dirty pages back
        # after 30 s): the pcap vanished at the remount, whole or from its start on, and every packet
        # sent before the remount with it. Counted all the same, from the last packet kept (or the start).
        times = captured_times(m)
        last = max(t for t in times if t < count)
        lost = [t for t in range(last + 1) if t not in times]
        assert lost, "nothing was lost: the fault did not happen"
        assert gaps[0]["lost_packets_max"] >= len(lost), (gaps, len(lost))
        resumed_at = min(times[t][0][2] for t in range(lost[-1] + 1, last + 1))
        assert resumed_at - 1 <= gaps[0]["end"] <= resumed_at + 1, (gaps, resumed_at)


# --- foreign_files: files mirrorcap did not write fill the volume ---------------------------

def test_foreign_files_filling_the_volume_are_named_first_and_deleting_them_resumes_capture(tmp_path):
    pps, count = 500, 12000  # 24 s of 1000-byte packets
    with baked(tmp_path, "foreign") as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        health(m)
        before = capture_state(m)
        # Someone's copy left on the volume (root's, in a directory of its own): retention may not touch it.
        foreign = f"{DIR}/scratch/core.dump"
        avail = int(m.run("df", "-B1", "--output=avail", DIR).stdout.split()[1])
        fill = m.run("sh", "-c", f"mkdir -p {DIR}/scratch && fallocate -l {avail - (3 << 20)} {foreign}")
        assert fill.returncode == 0, fill.stderr
        replay = traffic.background(traffic.frames(0, count, size=1000), pps=pps, loop=1)
        wait_for(lambda: capture_state(m).get("gap"), 60, "the capture to find the volume full", step=0.2)
        line = first_line(m)
        # The first line names the files and says to delete them; mirrorcap deletes none of them itself.
        assert "UNHEALTHY: disk:" in line and re.search(re.escape(foreign) + r" \(\d+\.\d [MG]iB\)", line) and "delete them" in line, line
        code, report = health(m)
        assert check(report, "disk")["foreign_files"][0]["path"] == foreign, check(report, "disk")
        assert m.path(foreign).exists()
        command = re.search(r"\(rm -- ([^)]+)\)", line).group(1)
        assert m.run("sh", "-c", "rm -- " + command).returncode == 0
        freed = time.time()
        wait_for(lambda: writing(m), 60, "capture resumed by itself", step=0.2)
        assert time.time() - freed < 30  # the capture's own retention calls (every 5 s), not a timer's minute
        sent_count = sent(replay)
        flushed(m)
        after = capture_state(m)
        gaps = new_gaps(before, after)
        assert len(gaps) == 1 and "volume full" in gaps[0]["reason"], gaps
        real, reported = assert_accounted(captured_times(m), 0, count, sent_count, gaps)
        assert reported >= real > 0
        # The pcap closed while the volume was full (its index could not be written then) is indexed
        # once there is room: retried, not left without an index or a marker.
        closed = sorted(p for p in m.path(DIR).glob("vni*_*.pcap"))[:-1]
        assert closed
        wait_for(lambda: all(m.path(f"{DIR}/{p.name}.idx.json.gz").exists() for p in closed), 120,
                 "every closed pcap indexed after the room came back", step=1)
        assert not list(m.path(DIR).glob("*.idx-failed"))
        code, report = health(m)
        assert code == 1 and check(report, "writing")["lost_since_last_check"] >= real
        assert check(report, "index")["status"] == "ok", check(report, "index")
        assert health(m)[0] == 0


# --- held_stop: tcpdump held stopped ------------------------------------------------------

def test_held_stop_of_tcpdump_is_named_as_such_replaced_and_counted(tmp_path):
    pps, count = 500, 10000  # 20 s
    with baked(tmp_path, "heldstop") as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        health(m)
        before = capture_state(m)
        replay = traffic.background(traffic.frames(0, count), pps=pps, loop=1)
        wait_for(lambda: len(captured(m)) >= 1000, 60, "1000 packets captured", step=0.2)
        pid = tcpdump_pid(m)
        assert m.run("kill", "-STOP", str(pid)).returncode == 0
        wait_for(lambda: tcpdump_pid(m) not in (0, pid) and writing(m), 60, "a new tcpdump writing", step=0.2)
        sent_count = sent(replay)
        flushed(m)
        after = capture_state(m)
        gaps = new_gaps(before, after)
        assert len(gaps) == 1, gaps
        reason = gaps[0]["reason"]
        # There was room: the reason names the stopped writer, not a full volume.
        assert "held stopped" in reason and "volume full" not in reason and f"pid {pid}" in reason, reason
        real, reported = assert_accounted(captured_times(m), 0, count, sent_count, gaps)
        assert reported >= real > 0
        line = first_line(m)
        assert "UNHEALTHY: writing:" in line and "held stopped" in line, line
        assert health(m)[0] == 0


# --- partial_index: 4 KiB of garbage in the middle of an open pcap ----------------------------

def test_partial_index_of_a_damaged_pcap_says_so_and_find_reads_past_the_damage(tmp_path):
    with baked(tmp_path, "partialidx") as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        traffic.replay(traffic.frames(0, 1500, size=1000), "--pps=2000")
        flushed(m)
        (name,) = [n for n in sorted(p.name for p in m.path(DIR).glob(f"vni{VNI}_*.pcap"))][-1:]
        pcap = f"{DIR}/{name}"
        original = m.path(pcap).read_bytes()
        # 4 KiB of random bytes over the middle of the pcap tcpdump is writing (a bad block, a stray write).
        at = len(original) // 2
        dd = m.run("dd", "if=/dev/urandom", f"of={pcap}", "bs=4096", "count=1", f"seek={at}", "oflag=seek_bytes",
                   "conv=notrunc")
        assert dd.returncode == 0, dd.stderr
        frames = traffic.frames(1500, 1500, size=1000)
        traffic.replay(frames, "--pps=2000")  # 1.5 MB after the damage (inner frames: VXLAN's 50 bytes gone)
        # (captured() reads records up to the damage only: the pcap's growth says they are in)
        try:
            wait_for(lambda: m.path(pcap).stat().st_size >= len(original) + sum(16 + len(f) - 50 for f in frames), 60,
                     "the packets after the damage in the pcap", step=0.2)
        except AssertionError as e:
            raise AssertionError("%s\n%s\n%s" % (e, {p.name: p.stat().st_size for p in m.path(DIR).iterdir()},
                                                  m.journal(UNIT)[-3000:])) from None
        # Whole records of the pcap as it was, before the damage: the tags the damage did not touch.
        o, kept = 24, set()
        while o + 16 <= len(original):
            caplen = struct.unpack_from("<I", original, o + 8)[0]
            found = TAG.search(original[o + 16:o + 16 + caplen])
            if found and (o + 16 + caplen <= at or o >= at + 4096):
                kept.add(int(found.group(1)))
            o += 16 + caplen
        assert len(kept) > 1000
        # The pcap closes (its capture restarts): the watcher indexes it.
        m.run("systemctl", "restart", UNIT, check=True)
        wait_capturing(m)
        marker = m.path(pcap + ".idx-failed")
        wait_for(lambda: marker.exists() and m.path(pcap + ".idx.json.gz").exists(), 60, "the damaged pcap's index and marker")
        why = marker.read_text()
        assert why.startswith("partial index: ") and "damaged" in why, why
        unread = int(re.search(r"(\d+) of its \d+ bytes hold no readable record", why).group(1))
        assert 4096 - (16 + 1014) <= unread <= 4096 + 16 + 1014, why  # from a record's end to the next header
        # Health says so (a warning: the pcap is kept and read around the damage), first.
        health(m)
        line = first_line(m)
        assert line.startswith("mirrorcap-health: healthy: index:") and "damaged" in line and name in line, line
        # mirrorcap-find reads past the damage, and says the file is damaged.
        summary = ssm.answer_of(as_the_agent(m, ssm.request_line(tree(parse(f"vni {VNI} and udp")), False, 64 << 20)), "lab")
        assert summary["status"] == "found" and [d[0] for d in summary["damaged"]] == [name], summary
        packed = b""
        for off in range(0, summary["gz_bytes"], summary["chunk"]):
            packed += base64.b64decode(as_the_agent(m, f"{contract.FIND_COMMAND} --chunk {summary['id']} {off}")
                                       ["StandardOutputContent"].strip(), validate=True)
        got = {int(t.group(1)) for _, _, d in read_pcap(gzip.decompress(packed)) for t in [TAG.search(d)] if t}
        assert set(range(1500, 3000)) <= got  # every packet after the damage
        assert kept <= got, sorted(kept - got)[:10]  # and every one the damage did not touch
