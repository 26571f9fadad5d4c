"""archive.index: which archived pcaps can hold a window, from their keys alone (pure)."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone

import pytest

from mirrorcap.archive import localfile
from mirrorcap.archive.index import covering, day_prefix, days, lacking_predecessor, local_parts, parse_key
from mirrorcap.contract import ARCHIVE_KEY

UTC = timezone.utc
UP = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
A, B = "i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2"  # instance IDs as IMDS gives them


def key(instance, name, day="2026-11-25", vni=7, capture="web"):
    return ARCHIVE_KEY.format(capture=capture, vni=vni, date=day, instance=instance, file=name)


def pcap(instance, hhmmss, day="2026-11-25", uploaded=UP):
    name = f"vni7_{day}T{hhmmss}Z.pcap"
    return parse_key("web", key(instance, name, day), 100, uploaded)


def test_keys_the_contract_does_not_name_are_never_guessed():
    assert pcap(A, "10-00-00").start == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert parse_key("web", key(A, "notes.txt"), 1, UP) is None
    assert parse_key("other", key(A, "vni7_2026-11-25T10-00-00Z.pcap"), 1, UP) is None  # another capture's
    assert parse_key("web", key(A, "vni8_2026-11-25T10-00-00Z.pcap"), 1, UP) is None  # VNI of the key and the name differ
    assert parse_key("web", key(A, "vni7_2026-11-24T10-00-00Z.pcap"), 1, UP) is None  # filed under the wrong day
    assert parse_key("web", "web/vni7/2026-11-25/vni7_2026-11-25T10-00-00Z.pcap", 1, UP) is None  # no instance
    assert day_prefix("web", 7, date(2026, 11, 25)) == "web/vni7/2026-11-25/"


def test_a_pcap_ends_where_the_same_hosts_next_one_starts():
    a = [pcap(A, t) for t in ("10-00-00", "10-10-00", "10-20-00")]
    b = [pcap(B, t) for t in ("10-05-00", "10-15-00")]
    begin = datetime(2026, 11, 25, 10, 11, tzinfo=UTC)
    got = covering(a + b, begin, begin + timedelta(minutes=2))
    # a 10:00 ended at 10:10 (its successor): out; b 10:05 runs to 10:15: in
    assert [(f["instance"], f["start"].strftime("%H:%M")) for f in got] == [(B, "10:05"), (A, "10:10")]
    # the newest of each host runs to its upload
    late = covering(a + b, datetime(2026, 11, 25, 11, 59, tzinfo=UTC), datetime(2026, 11, 25, 12, 30, tzinfo=UTC))
    assert [(f["instance"], f["end"]) for f in late] == [(B, UP), (A, UP)]
    assert covering(a + b, datetime(2026, 11, 25, 12, 1, tzinfo=UTC), datetime(2026, 11, 25, 12, 2, tzinfo=UTC)) == []
    # the host's slack: a pcap named 4 s after the window's end may hold its last packets
    edge = covering(a, datetime(2026, 11, 25, 10, 19, tzinfo=UTC), datetime(2026, 11, 25, 10, 19, 56, tzinfo=UTC))
    assert [f["start"].strftime("%H:%M") for f in edge] == ["10:10", "10:20"]


def test_days_and_lookback():
    at = datetime(2026, 11, 25, 0, 0, 30, tzinfo=UTC)
    assert days(at, at + timedelta(seconds=10)) == [date(2026, 11, 25)]
    assert days(at - timedelta(minutes=1), at) == [date(2026, 11, 24), date(2026, 11, 25)]
    assert days(datetime(2026, 11, 25, 23, 59, 58, tzinfo=UTC), datetime(2026, 11, 25, 23, 59, 58, tzinfo=UTC)) == [
        date(2026, 11, 25), date(2026, 11, 26)]  # a pcap named just after midnight may hold the window's packets
    seen = [pcap(A, "00-00-10"), pcap(B, "00-01-00"), pcap(B, "00-00-00")]
    assert lacking_predecessor(seen, at - timedelta(seconds=25)) == {(A, 7)}


def test_only_a_key_exactly_as_a_host_writes_it_is_a_pcap():
    name = "vni7_2026-11-25T10-00-00Z.pcap"
    good = parse_key("web", key(A, name), 1, UP)
    assert (good.instance, good.vni, good.name, local_parts(good)) == (A, 7, name, (A, "vni7", name))
    assert parse_key("web", key("i-0123abcd", name), 1, UP) is not None  # the older 8-digit IDs
    for bad in [key("..", name), key(".", name), key("i-1", name), key("i-0AAAAAAAAAAAAAAA1", name), key(A + "x", name),
                key("i-0aaaaaaaaaaaaaaa1/..", name), "web/vni7/2026-11-25/../" + name, "web/vni7/2026-11-25/" + A + "//" + name,
                "/web/vni7/2026-11-25/" + A + "/" + name, key(A, name) + "/", key(A, name, vni="07"), key(A, name, vni=0),
                key(A, "vni7_2026-11-25T10-0-0Z.pcap"), key(A, "vni7_2026-11-25T10-00-00Z.pcap.partial"),
                key(A, " vni7_2026-11-25T10-00-00Z.pcap"), key(A, "vni7_2026-11-25T10-00-00Z.pcap", day="2026-11-25 ")]:
        assert parse_key("web", bad, 1, UP) is None, bad


def test_a_local_file_is_created_new_inside_its_root_following_nothing(tmp_path):
    root = tmp_path / "private"
    root.mkdir(mode=0o700)
    outside = tmp_path / "outside"
    outside.mkdir()
    old = os.umask(0)
    try:
        fd = localfile.create(root, [A, "vni7", "f.pcap"])
        os.write(fd, b"x")
        os.close(fd)
        assert oct((root / A / "vni7" / "f.pcap").stat().st_mode & 0o777) == "0o640"
        assert oct((root / A).stat().st_mode & 0o777) == "0o700"
        with pytest.raises(FileExistsError):
            localfile.create(root, [A, "vni7", "f.pcap"])
        (root / B).symlink_to(outside)  # a link planted as a host's directory
        with pytest.raises(OSError):
            localfile.create(root, [B, "vni7", "f.pcap"])
        (root / A / "vni7" / "g.pcap").symlink_to(outside / "g.pcap")  # ... or as the file
        with pytest.raises(OSError):
            localfile.create(root, [A, "vni7", "g.pcap"])
        for parts in ([".."], ["..", "f.pcap"], [A, "../f.pcap"], []):
            with pytest.raises(OSError):
                localfile.create(root, parts)
        assert list(outside.iterdir()) == []
    finally:
        os.umask(old)
