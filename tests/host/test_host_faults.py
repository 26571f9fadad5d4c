"""The capture host through the faults of an incident, booted as production boots it
(tests/capturehost.py): a volume that fills in a burst, a pcap torn by it, a VNI changed
and the user data run again, a volume attached long after boot, a mirror ENI at MTU 1500,
a unit killed again and again, a metadata service down for minutes.

The rule each test holds the host to: there is no state in which the host is not
capturing, will not start capturing by itself, and mirrorcap-health says healthy. Every
loss is measured against the traffic the lab sent (tagged packets, tcpreplay's own
count) and what reached the pcaps: what health reports lost is never below what was
lost, and each recorded gap brackets the real one to within a second. Every remedy the
host prints is carried out here and must work. Run one fault alone with -k and its word:
disk_full, torn, vni_change, mtu, kill_storm, remedy (late_volume and imds_outage: test_host_waits.py).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import threading
import time

import pytest

from capturehost import (DIR, ENI, VNI, VOLUME, Traffic, assert_accounted, baked, bracket, captured, captured_times,
                         capture_state, check, failing, flushed, health, missing_runs, new_gaps, pcaps, sent, stop, tag,
                         tcpdump_pid, unit, wait_capturing, wait_for, writing)
from bootlab import needs_lab
from helpers import EXAMPLE
from mirrorcap.host import render
from mirrorcap.inventory import load
from bootlab.traffic import inner_ipv4, read_pcap

pytestmark = needs_lab

UNIT = unit()


class StateWatch:
    """(time, writing) of the loss record, every 0.1 s, from another thread."""

    def __init__(self, m):
        self.m, self.samples, self.running = m, [], True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while self.running:
            self.samples.append((time.time(), writing(self.m)))
            time.sleep(0.1)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.samples


# --- disk_full and torn: a burst fills the volume ------------------------------------------

PPS, COUNT, SIZE = 500, 12000, 1000  # 24 s of 1000-byte packets, 0.5 MB/s


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory):
    """The volume fills while the lab sends tagged traffic; nothing retention may delete frees it
    (the filler sits where only root writes) until, the gap seen, it is handed to retention as an
    old pcap of a VNI no longer configured. Everything the tests below assert is measured here."""
    with baked(tmp_path_factory.mktemp("diskfull"), "diskfull") as m:
        m.boot()
        wait_capturing(m)
        traffic, result = Traffic(m), {"m": m}
        health(m)
        before = capture_state(m)
        hold, filler = f"{DIR}/hold/filler", f"{DIR}/vni7_2026-11-30T00-00-00Z.pcap"
        avail = int(m.run("df", "-B1", "--output=avail", DIR).stdout.split()[1])
        fill = m.run("sh", "-c", f"mkdir -p {DIR}/hold && fallocate -l {avail - (3 << 20)} {hold}")
        assert fill.returncode == 0, fill.stderr
        watch = StateWatch(m)
        replay = traffic.background(traffic.frames(0, COUNT, size=SIZE), pps=PPS, loop=1)
        gap = wait_for(lambda: capture_state(m).get("gap"), 30, "the capture to find the volume full", step=0.1)
        result["while_full"] = health(m)
        result["window_while_torn"] = m.run("mirrorcap-window", "--at", dt.datetime.fromtimestamp(
            gap["start"], dt.timezone.utc).isoformat(), "--before", "30s", "--after", "5s", "--vni", str(VNI),
            "--out", "/tmp/while-torn.pcap")
        result["torn_whole_packets"] = len(read_pcap(m.path("/tmp/while-torn.pcap").read_bytes())) \
            if result["window_while_torn"].returncode == 0 else None
        time.sleep(3)
        handed = m.run("sh", "-c", f"mv {hold} {filler} && chown mirrorcap:pcap {filler} && touch -d 2026-11-30 {filler}")
        assert handed.returncode == 0, handed.stderr
        result["handed_at"] = time.time()
        result["sent"] = sent(replay)
        flushed(m)  # the last packets, sent after the gap, on disk
        result["samples"] = watch.stop()
        result["after"] = capture_state(m)
        result["gaps"] = new_gaps(before, result["after"])
        result["times"] = captured_times(m)
        result["evidence"] = "pcaps %s\n%s" % ({n: st.st_size for n, st in pcaps(m).items()}, m.journal()[-4000:])
        result["health_after"] = health(m)
        result["health_again"] = health(m)
        yield result


def test_disk_full_loss_is_an_upper_bound_and_the_gap_brackets_it(disk_full):
    r = disk_full
    assert r["sent"] == COUNT
    assert len(r["gaps"]) == 1, (r["gaps"], r["evidence"])
    (gap,) = r["gaps"]
    assert "volume full" in gap["reason"], gap
    assert missing_runs(r["times"], 0, COUNT)[0][0] > 0, (missing_runs(r["times"], 0, COUNT), r["evidence"])
    real, reported = assert_accounted(r["times"], 0, COUNT, r["sent"], r["gaps"])
    assert real > PPS, real  # seconds of traffic were lost: the fault happened
    assert reported <= real + 1.5 * PPS, (reported, real)  # the bound is honest: at most a second and a half more
    # The state said "not writing" from a second after the last packet written until capture resumed.
    before, after = bracket(r["times"], missing_runs(r["times"], 0, COUNT)[0])
    during = [w for t, w in r["samples"] if before + 1.5 <= t <= after - 0.5]
    flips = [(round(t - before, 2), w) for (t, w), (_, v) in zip(r["samples"][1:], r["samples"]) if w != v]
    assert during and not any(during), (flips, r["gaps"], before, after)
    # Retention freed the volume (the filler: the oldest pcap of a VNI no longer configured) and
    # capture resumed by itself, sooner than retention's timer (every minute) would have come: the
    # bound tells the capture's own call from the timer's, not how fast the machine is.
    assert after - r["handed_at"] < 30, after - r["handed_at"]
    journal = r["m"].journal()
    assert "deleted vni7_2026-11-30T00-00-00Z.pcap" in journal and "nothing deleted" in journal, journal[-3000:]
    # Health: NOT WRITING while full (with why), the loss once afterwards, then healthy.
    code, report = r["while_full"]
    assert code == 1 and "NOT WRITING" in check(report, "writing")["detail"] and "volume full" in check(report, "writing")["detail"]
    assert "mirrorcap did not write" in check(report, "disk")["detail"], check(report, "disk")
    code, report = r["health_after"]
    w = check(report, "writing")
    assert code == 1 and w["lost_since_last_check"] == reported and "at most %d packets lost" % reported in w["detail"], w
    assert r["health_again"][0] == 0, failing(r["health_again"][1])


def test_torn_pcap_is_cut_back_to_its_last_whole_record_and_windows_read_it(disk_full):
    r = disk_full
    m = r["m"]
    # While the volume was full, the pcap being written was torn: a window over it still
    # returned every whole packet in it (mergecap reads it up to its last whole record).
    torn = r["window_while_torn"]
    assert torn.returncode == 0, torn.stderr
    assert r["torn_whole_packets"] and r["torn_whole_packets"] > 0
    # Once capture resumed, the torn pcap was cut back to its last whole record: every pcap but
    # the one being written is whole, and the last packet before the gap ends its file.
    names = sorted(pcaps(m))
    for name in [n for n in names if n.startswith(f"vni{VNI}_")][:-1]:
        data = m.path(f"{DIR}/{name}").read_bytes()
        whole = read_pcap(data)
        assert 24 + sum(16 + c for c, _, _ in whole) == len(data), name
    assert "cut its torn last record" in m.journal(UNIT)
    # A window across the gap returns every captured packet of it, in time order.
    before, after = bracket(r["times"], missing_runs(r["times"], 0, COUNT)[0])
    at = dt.datetime.fromtimestamp((before + after) / 2, dt.timezone.utc).isoformat()
    out = m.run("mirrorcap-window", "--at", at, "--before", "20s", "--after", "20s", "--vni", str(VNI), "--out", "/tmp/across.pcap")
    assert out.returncode == 0, out.stderr
    got = [(ts, int(re.search(rb"MCT(\d{8})", d).group(1))) for _, _, d, ts in read_pcap(
        m.path("/tmp/across.pcap").read_bytes(), times=True) if re.search(rb"MCT(\d{8})", d)]
    mid = (before + after) / 2
    want = sorted((v[0][2], t) for t, v in r["times"].items() if mid - 20 <= v[0][2] <= mid + 20)
    assert [t for _, t in got] == [t for _, t in want] and got == sorted(got)


def test_torn_pcap_left_by_a_killed_capture_is_repaired_when_it_starts(tmp_path):
    with baked(tmp_path, "torn") as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        traffic.replay(traffic.frames(0, 50))
        wait_for(lambda: len(captured(m)) == 50, 10, "50 packets")
        m.run("systemctl", "stop", UNIT, check=True)
        newest = m.path(f"{DIR}/" + max(n for n in pcaps(m) if n.startswith(f"vni{VNI}_")))
        data = newest.read_bytes()
        # Half a record at its end, as a write cut by a kill or a full volume leaves it.
        with open(newest, "ab") as f:
            f.write(data[24:24 + 16] + data[40:140])
        m.run("systemctl", "start", UNIT, check=True)
        wait_capturing(m)
        assert newest.read_bytes()[:len(data)] == data and 24 + sum(16 + c for c, _, _ in read_pcap(newest.read_bytes())) \
            == newest.stat().st_size
        assert f"{newest.name}: cut its torn last record" in m.journal(UNIT)


# --- vni_change: the inventory changes, the user data runs again ---------------------------

def example_with(vni: int):
    """The example capture with its second source on VNI `vni` (two VNIs, two captures)."""
    text = EXAMPLE.read_text().replace('description = "web-2"', f'description = "web-2"\n    vni = {vni}')
    path = EXAMPLE.parent / f".vni-{vni}.hcl"
    path.write_text(text)
    try:
        (capture,) = load(path).captures
    finally:
        path.unlink()
    return capture


def test_vni_change_converges_the_running_host_and_keeps_unchanged_vnis_capturing(tmp_path):
    a, b = example_with(777), example_with(888)
    assert set(a.vnis) == {VNI, 777} and set(b.vnis) == {VNI, 888}
    with baked(tmp_path, "vnichange", bake=render.bake_script(a, render.host_files(a)),
               user_data=render.user_data(a, VOLUME, ENI)) as m:
        m.boot()
        for v in (VNI, 777):
            wait_capturing(m, vni=v)
        traffic = Traffic(m)
        steady = traffic.background(traffic.frames(0, 6000), pps=300, loop=1)  # 20 s on the VNI that stays
        old = traffic.background(traffic.frames(100000, 1), pps=20)  # the VNI that goes
        time.sleep(4)
        before, watch = capture_state(m), StateWatch(m)
        pid = tcpdump_pid(m)
        m.write_file("/root/user-data-b.sh", render.user_data(b, VOLUME, ENI), 0o700)
        changed = time.time()
        r = m.run("bash", "/root/user-data-b.sh", timeout=120)
        assert r.returncode == 0, r.stderr
        stop(old)
        # The new VNI is captured by the user data's own run, without a reboot (nothing else would start
        # it: the bound only ends a test that would otherwise wait for ever).
        wait_capturing(m, vni=888, timeout=90)
        traffic.replay(traffic.frames(200000, 50, vni=888))
        wait_for(lambda: set(range(200000, 200050)) <= set(captured(m, 888)), 60, "the new VNI's packets")
        assert time.time() - changed < 120, time.time() - changed
        # The VNI that stayed never stopped: same tcpdump, no gap, every packet sent is in its pcaps.
        assert sent(steady) == 6000
        wait_for(lambda: set(range(6000)) <= set(captured(m)), 60, "every packet of the VNI that stayed", step=0.2)
        samples = watch.stop()
        assert tcpdump_pid(m) == pid and capture_state(m)["gaps_total"] == before["gaps_total"]
        assert all(w for _, w in samples)
        assert set(range(6000)) <= set(captured(m))
        # The VNI removed: its capture stopped and disabled, its interface gone, its pcaps kept.
        assert m.unit_state("mirrorcap-capture@777.service") == "inactive"
        assert m.run("systemctl", "is-enabled", "mirrorcap-capture@777.service").stdout.strip() == "disabled"
        assert m.run("ip", "link", "show", "vxlan777").returncode != 0
        assert any(n.startswith("vni777_") for n in pcaps(m))
        assert "VNI 777 is no longer configured" in m.journal()
        code, report = health(m, sample=1)
        assert code == 0, failing(report)
        # Then the deploy of the same change lands: AWS stops the instance, sets its user data, starts
        # it. The instance's user data is what the host runs on (a change made by hand and never
        # deployed would be undone at the next boot): the same settings, nothing to converge.
        m.shutdown()
        m.set_imds_user_data(render.user_data(b, VOLUME, ENI))
        m.boot()
        for v in (VNI, 888):
            wait_capturing(m, vni=v)
        assert m.unit_state("mirrorcap-capture@777.service") == "inactive"
        assert "settings unchanged" in m.journal("mirrorcap-settings.service", boot="0")
        # A deploy alone changes it again: cloud-init does not run a changed user data (only an
        # instance's first), mirrorcap-settings applies it before storage, decap and capture start.
        c = example_with(999)
        m.shutdown()
        m.set_imds_user_data(render.user_data(c, VOLUME, ENI))
        m.boot()
        for v in (VNI, 999):
            wait_capturing(m, vni=v)
        assert m.unit_state("mirrorcap-capture@888.service") == "inactive"
        assert m.run("ip", "link", "show", "vxlan888").returncode != 0
        assert "MIRRORCAP_VNIS" in m.journal("mirrorcap-settings.service", boot="0")
        traffic.replay(traffic.frames(300000, 20, vni=999))
        wait_for(lambda: set(range(300000, 300020)) <= set(captured(m, 999)), 10, "the deployed VNI's packets")
        health(m)
        assert health(m)[0] == 0


# --- mtu: a mirror ENI under 9001 --------------------------------------------------------

JUMBO = 8947  # the largest inner IP packet of a 9001-MTU source that arrives whole


def test_mtu_of_the_mirror_eni_is_raised_checked_and_cut_packets_are_counted(tmp_path):
    # The ENI comes up at 1500; AWS's side sends up to 9001 whatever the host set.
    with baked(tmp_path, "mtu", mirror_mtu=1500, sender_mtu=9001) as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        assert m.read_file(f"/sys/class/net/{m.mirror_iface}/mtu").strip() == "9001"
        assert f"{m.mirror_iface} (eni-0123456789abcdef0): MTU 1500 raised to 9001" in m.journal("mirrorcap-decap.service")

        def jumbo(first, n=20):
            return [traffic.frame(VNI, inner_ipv4(tag(first + i), JUMBO)) for i in range(n)]
        traffic.replay(jumbo(0) + traffic.frames(100, 20), "--pps=2000")
        wait_for(lambda: set(range(20)) | set(range(100, 120)) <= set(captured(m)), 10, "jumbo packets, whole")
        assert all(captured(m)[i] == [(14 + JUMBO, 14 + JUMBO)] for i in range(20))
        health(m)
        # Something sets it back to 1500 (DHCP, a person): jumbo packets are dropped before they are
        # decapsulated, uncounted by anything but the NIC; health says so, with the fix.
        m.run("ip", "link", "set", m.mirror_iface, "mtu", "1500", check=True)
        traffic.send_once(jumbo(1000) + traffic.frames(1100, 20))
        wait_for(lambda: set(range(1100, 1120)) <= set(captured(m)), 10, "the small packets")
        assert not set(range(1000, 1020)) & set(captured(m))
        code, report = health(m)
        mtu = check(report, "mtu")
        assert code == 1 and mtu["status"] == "fail" and mtu["mtu"] == 1500 and "over 1500 bytes" in mtu["detail"], mtu
        assert mtu["nic_dropped_since_last_check"] == 20 and "20 frames dropped" in mtu["detail"], mtu
        remedy = re.search(r"fix: (systemctl reload mirrorcap-decap)", mtu["detail"]).group(1)
        assert m.run(*remedy.split()).returncode == 0
        wait_for(lambda: m.read_file(f"/sys/class/net/{m.mirror_iface}/mtu").strip() == "9001", 10, "MTU 9001 again")
        traffic.replay(jumbo(2000), "--pps=2000")
        wait_for(lambda: set(range(2000, 2020)) <= set(captured(m)), 10, "jumbo packets after the remedy")
        assert check(health(m)[1], "mtu")["status"] == "ok"
        # Packets cut short before they arrived (AWS truncates a mirrored packet larger than the
        # target's MTU; a session's packet_length does the same): counted, and health shows them.
        cut = [traffic.frame(VNI, inner_ipv4(tag(3000 + i), JUMBO)[:14 + 1000]) for i in range(30)]
        traffic.replay(cut + traffic.frames(3100, 30), "--pps=2000")
        wait_for(lambda: capture_state(m).get("truncated_total") == 30, 10, "30 truncated packets counted")
        code, report = health(m)
        truncated = check(report, "truncated")
        assert code == 1 and truncated["truncated_since_last_check"] == 30 and "30 packets arrived cut short" in truncated["detail"]
        assert health(m)[0] == 0


# --- kill_storm: the unit killed again and again ---------------------------------------

def test_kill_storm_capture_never_gives_up_counts_every_gap_and_says_flapping(tmp_path):
    pps, count = 500, 30000  # 60 s of traffic
    with baked(tmp_path, "killstorm") as m:
        m.boot()
        wait_capturing(m)
        traffic = Traffic(m)
        health(m)
        before = capture_state(m)
        replay = traffic.background(traffic.frames(0, count), pps=pps, loop=1)
        time.sleep(3)
        kills = 0
        for _ in range(8):  # more than the five in five minutes a start limit would allow
            pid = int(m.unit_show(UNIT, "MainPID")["MainPID"])
            m.run("systemctl", "kill", "--signal=SIGKILL", UNIT, check=True)
            kills += 1
            wait_for(lambda: int(m.unit_show(UNIT, "MainPID")["MainPID"]) not in (0, pid) and writing(m), 15,
                     "the unit back, writing", step=0.1)
            time.sleep(2)
        flapping = health(m)
        for _ in range(3):  # tcpdump alone, killed young: it starts again after a back-off
            pid = tcpdump_pid(m)
            m.run("kill", "-9", str(pid), check=True)
            wait_for(lambda: tcpdump_pid(m) not in (0, pid) and writing(m), 30, "a new tcpdump", step=0.1)
        sent_count = sent(replay)
        flushed(m)
        after = capture_state(m)
        assert m.unit_state(UNIT) == "active" and writing(m)
        assert int(m.unit_show(UNIT, "NRestarts")["NRestarts"]) >= kills
        gaps = new_gaps(before, after)
        assert len(gaps) == kills + 3, [g["reason"] for g in gaps]
        assert sum("watcher died" in g["reason"] for g in gaps) == kills
        real, reported = assert_accounted(captured_times(m), 0, count, sent_count, gaps)
        assert 0 < real <= reported <= real + (kills + 3) * 1.5 * pps, (real, reported)
        code, report = flapping
        restarts = check(report, "restarts")
        assert code == 1 and restarts["status"] == "fail" and re.search(r"flapping: \d+ restarts in 10 minutes", restarts["detail"])
        # The loss record survives the unit's stop (and failure): it lives in /var/lib, not /run.
        m.run("systemctl", "stop", UNIT, check=True)
        kept = json.loads(m.read_file("/var/lib/mirrorcap/capture-12345/state.json"))
        assert kept["gaps_total"] == after["gaps_total"] and kept["lost_packets_total"] == after["lost_packets_total"]
        m.run("systemctl", "start", "mirrorcap.target", check=True)
        wait_capturing(m)


# --- remedy: every fix the host prints, carried out ----------------------------------------

def run_remedy(m, detail: str, pattern: str) -> None:
    """Carry out the commands a message prints (each found by `pattern`'s groups), in order."""
    found = re.search(pattern, detail)
    assert found, (pattern, detail)
    for command in found.groups():
        r = m.run("sh", "-c", command)
        assert r.returncode == 0, (command, r.stderr)


@pytest.mark.parametrize("fault", ["files under the mount point", "another mount", "a foreign vxlan", "stopped units"])
def test_remedy_printed_by_the_host_works(tmp_path, fault):
    with baked(tmp_path, "remedy") as m:
        if fault == "files under the mount point":
            m.write_file(f"{DIR}/notes.txt", "an operator's file\n")
        if fault == "a foreign vxlan":
            subprocess.run(["ip", "-n", m.netns, "link", "add", f"vxlan{VNI}", "type", "vxlan", "id", "999", "dstport", "4789",
                            "dev", m.mirror_iface], check=True)
        m.boot()
        if fault == "another mount":
            wait_capturing(m)
            m.run("systemctl", "stop", UNIT, check=True)
            m.run("umount", DIR, check=True)
            m.run("mount", "-t", "tmpfs", "tmpfs", DIR, check=True)
            m.run("systemctl", "restart", "mirrorcap-storage.service")
        if fault == "stopped units":
            wait_capturing(m)
            m.run("systemctl", "stop", "mirrorcap-decap.service", "mirrorcap-retention.timer", check=True)
        code, report = health(m)
        assert code == 1
        fails = failing(report)
        if fault == "files under the mount point":
            # Where to move them is the operator's call: done here as they would, then the printed command.
            assert re.search(r"holds files and is not the volume: .*move them away", fails["storage"]), fails["storage"]
            m.run("mv", f"{DIR}/notes.txt", "/root/notes.txt", check=True)
            run_remedy(m, fails["storage"], r", then: (systemctl start mirrorcap\.target)")
        elif fault == "another mount":
            run_remedy(m, fails["storage"], r"unmount it \((umount \S+)\), then: (systemctl start mirrorcap\.target)")
        elif fault == "a foreign vxlan":
            assert "mirrorcap did not make it" in fails["decap"]
            run_remedy(m, fails["decap"], r"delete it \((ip link del \S+)\), then: (systemctl start mirrorcap\.target)")
        else:
            run_remedy(m, fails["services"], r"\((systemctl start mirrorcap\.target) starts what is not running\)")
        wait_capturing(m)
        traffic = Traffic(m)
        traffic.replay(traffic.frames(0, 20))
        wait_for(lambda: set(range(20)) <= set(captured(m)), 10, "capture after the remedy")
        health(m)
        code, report = health(m)
        assert code == 0, failing(report)
