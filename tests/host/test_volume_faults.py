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

import time

from bootlab import needs_lab
from capturehost import (DIR, Traffic, assert_accounted, baked, captured, captured_times, capture_state, check, flushed,
                         health, new_gaps, sent, unit, wait_capturing, wait_for, writing)

pytestmark = needs_lab

UNIT = unit()


def first_line(m) -> str:
    """The first line mirrorcap-health prints: what a person or an alarm reads of it."""
    r = m.run("mirrorcap-health", "--sample-seconds", "0")
    assert r.returncode in (0, 1), r.stderr
    return r.stdout.splitlines()[0]


def restarts(m) -> int:
    return int(m.unit_show(UNIT, "NRestarts")["NRestarts"])


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
