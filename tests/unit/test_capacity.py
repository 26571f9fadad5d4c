"""Capacity and cost maths (pure), the `capacity` command and the `validate` warning."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from helpers import eni, minimal, mirrorcap, sources, write
from mirrorcap.capacity import Prices, estimate, volume_throughput


def test_volume_throughput_per_type():
    assert volume_throughput("st1", 300) == pytest.approx((40 * 300 / 1024, 250 * 300 / 1024))
    assert volume_throughput("st1", 16384) == (500, 500)  # both capped
    assert volume_throughput("sc1", 16384) == (192, 250)
    assert volume_throughput("gp3", 100) == (125, 125) and volume_throughput("gp3", 100, 400) == (400, 400)


def test_one_megabit_for_a_day_by_hand():
    e = estimate(1, 1, volume_gib=125, min_free_percent=10, avg_packet_bytes=500)
    # 125,000 B/s of packets + 250 packets/s x 16-byte pcap headers = 129,000 B/s;
    # x 86,400 s / 0.9 usable (10 % floor) / 2^30 = 11.53 -> 12 GiB
    assert e.disk_mib_s == round(129_000 / 2**20, 2)
    assert e.needed_gib == 12 and e.ok
    assert e.wire_mbps == 1.1  # +50 bytes of VXLAN per 500-byte packet


def test_each_limit_is_reported_with_its_fix():
    e = estimate(200, 3, volume_type="st1", volume_gib=300, instance_type="t3.small")
    kinds = [p.split(":")[0] for p in e.problems]
    assert kinds == ["volume", "throughput", "network"] and not e.ok
    assert "size_gib" in e.problems[0] and "grow the volume" in e.problems[1] and "larger instance_type" in e.problems[2]
    assert estimate(200, 3, volume_type="gp3", volume_gib=16384, gp3_mibps=125, instance_type="m5.2xlarge").ok


def test_monthly_cost_shows_and_honours_prices():
    e = estimate(1, 1, volume_gib=300, instance_type="t3.small", sources=3)
    assert e.monthly_usd == {"instance": 15.18, "volume": 13.5, "mirror_sessions": 32.85, "total": 61.53}
    assert e.prices_used["mirror_session_hour"] == 0.015 and e.prices_used["region"] == "us-east-1"
    cheap = estimate(1, 1, volume_gib=300, instance_type="t3.small", sources=3,
                     prices=Prices().with_overrides({"mirror_session_hour": 0.01, "instance_hour": 0.01}))
    assert cheap.monthly_usd["mirror_sessions"] == 21.9 and cheap.monthly_usd["instance"] == 7.3
    unknown = estimate(1, 1, instance_type="x9.huge")
    assert unknown.monthly_usd["instance"] is None and len(unknown.notes) == 2 and unknown.ok


@given(st.floats(0.1, 5000), st.floats(0.1, 5000), st.floats(0.5, 400), st.floats(0.5, 400))
def test_needed_size_grows_with_rate_and_retention(r1, r2, d1, d2):
    a = estimate(min(r1, r2), min(d1, d2)).needed_gib
    b = estimate(max(r1, r2), max(d1, d2)).needed_gib
    assert a <= b


def test_capacity_command_json_and_exit_code(workdir):
    write(workdir, minimal(sources(eni(1))))
    ok = mirrorcap("capacity", "--rate", "0.5", "--retention", "7", "--json", cwd=workdir)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and report["volume_gib"] == 300 and report["sources"] == 1
    bad = mirrorcap("capacity", "--rate", "500", cwd=workdir)
    assert bad.returncode == 1 and "PROBLEM   volume" in bad.stdout and "prices    us-east-1" in bad.stdout


def test_validate_warns_when_the_volume_cannot_hold_the_retention(workdir):
    write(workdir, minimal(sources(eni(1)) + "\n  storage {\n    expected_mbps = 20\n  }"))
    result = mirrorcap("validate", cwd=workdir)
    assert result.returncode == 0  # a warning: the inventory is valid, the sizing is a judgement
    assert 'capture "test" > storage > expected_mbps: volume: 300 GiB holds 1.3 of 15 days' in result.stderr
    write(workdir, minimal(sources(eni(1)) + "\n  storage {\n    expected_mbps = 1\n  }"))
    assert "warning" not in mirrorcap("validate", cwd=workdir).stderr


def test_more_than_one_volume_holds_is_said_so():
    e = estimate(100, 15, volume_type="st1", volume_gib=300)
    assert e.needed_gib == 17301 and "more than one st1 volume holds (16384 GiB)" in e.problems[0]
    assert "keep at most 14.2 days" in e.problems[0] and "size_gib" not in e.problems[0]


@pytest.mark.parametrize("args, words", [
    (["--rate", "inf"], "--rate: inf is out of range"), (["--rate", "nan"], "--rate: nan is out of range"),
    (["--rate", "0"], "--rate: 0.0 is out of range"), (["--rate", "5", "--price", "instance_hour=abc"], "'abc' is not a price in USD"),
    (["--rate", "5", "--price", "instance_hour=-1"], "'-1' is not a price in USD"), (["--rate", "5", "--price", "foo=1"], "'foo' is not a price name"),
    (["--rate", "5", "--capture", "nope"], "no capture named nope"),
])
def test_capacity_usage_errors_exit_2_not_1(workdir, args, words):
    """1 means "does not fit": a script must not mistake a typo for a sizing answer."""
    write(workdir, minimal(sources(eni(1))))
    result = mirrorcap("capacity", *args, cwd=workdir)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_tag_selectors_are_not_costed_as_one_source(workdir):
    write(workdir, minimal(sources(eni(1)) + '\n  source {\n    tags = { Service = "web" }\n  }\n  auto_mirror {}'))
    unknown = json.loads(mirrorcap("capacity", "--rate", "0.5", "--json", cwd=workdir).stdout)
    assert unknown["sources"] == 1 and any("1 tag selector(s)" in n and "--tag-instances" in n for n in unknown["notes"])
    counted = json.loads(mirrorcap("capacity", "--rate", "0.5", "--json", "--tag-instances", "8", cwd=workdir).stdout)
    assert counted["sources"] == 9 and not any("tag selector" in n for n in counted["notes"])


def test_a_fleet_is_sized_per_az_and_costed_with_its_archive_and_nlb():
    from mirrorcap.capacity import fleet_estimate, host_max_mbps, hosts_needed
    one = estimate(200, 3, volume_type="st1", volume_gib=300, instance_type="t3.small")
    # t3.small: 128 Mbit/s baseline / 1.1 (VXLAN on 500-byte packets) = 116.4 Mbit/s; st1 300 GiB: 11.72 MiB/s -> 95.3 Mbit/s
    assert host_max_mbps(one) == pytest.approx(11.72 * 2**20 * 8 / 1e6 / 1.032) and hosts_needed(one) == 3
    assert hosts_needed(estimate(1, 1)) == 1
    f = fleet_estimate(200, 0.5, azs=2, max_per_az=4, archive_days=30, rotate_seconds=600, sources=4,
                       volume_type="st1", volume_gib=300, instance_type="t3.small")
    assert (f.hosts_per_az, f.hosts) == (2, 4) and f.per_host.rate_mbps == 50 and f.ok
    # 200 Mbit/s x 1.1 = 27.5 MB/s = 99 GB/hour through the NLB: 99 NLCU-hours an hour
    assert f.nlb_gb_hour == 99.0 and f.monthly_usd["nlb"] == round((0.0225 + 99 * 0.006) * 730, 2)
    assert f.s3_puts_month == 4 * 730 * 6 and f.monthly_usd["s3_requests"] == round(4 * 730 * 6 / 1000 * 0.005, 2)
    assert f.monthly_usd["mirror_sessions"] == round(4 * 0.015 * 730, 2) and f.monthly_usd["instances"] == round(4 * 0.0208 * 730, 2)
    too_big = fleet_estimate(2000, 3, azs=2, max_per_az=4, archive_days=30, volume_type="st1", volume_gib=300, instance_type="t3.small")
    assert not too_big.ok and any(p.startswith("fleet:") and "max_per_az is 4" in p for p in too_big.problems)


def test_capacity_of_a_fleet_capture_and_a_single_host_that_no_longer_fits(workdir):
    from test_fleet_inventory import ARCHIVE_BLOCK, FLEET, FLEET_BLOCK
    write(workdir, FLEET % (FLEET_BLOCK + "\n" + ARCHIVE_BLOCK))
    ok = mirrorcap("capacity", "--rate", "100", "--retention", "0.5", "--json", cwd=workdir)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["azs"] == 2 and report["hosts"] == 2 * report["hosts_per_az"] and report["per_host"]["rate_mbps"] == 100 / report["hosts"]
    assert set(report["monthly_usd"]) >= {"nlb", "s3_storage", "s3_requests", "instances", "volumes"}
    text = mirrorcap("capacity", "--rate", "100", "--retention", "0.5", cwd=workdir).stdout
    assert "(fleet)" in text and "per AZ" in text and "NLB" in text
    write(workdir, minimal(sources(eni(1))))
    single = mirrorcap("capacity", "--rate", "200", "--retention", "1", cwd=workdir)
    assert single.returncode == 1 and "a single host no longer fits" in single.stdout and "fleet {}" in single.stdout
