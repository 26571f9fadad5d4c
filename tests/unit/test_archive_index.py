"""archive.index: which archived pcaps can hold a window, from their keys alone (pure)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from mirrorcap.archive.index import covering, day_prefix, days, lacking_predecessor, parse_key
from mirrorcap.contract import ARCHIVE_KEY

UTC = timezone.utc
UP = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def key(instance, name, day="2026-11-25", vni=7, capture="web"):
    return ARCHIVE_KEY.format(capture=capture, vni=vni, date=day, instance=instance, file=name)


def pcap(instance, hhmmss, day="2026-11-25", uploaded=UP):
    name = f"vni7_{day}T{hhmmss}Z.pcap"
    return parse_key("web", key(instance, name, day), 100, uploaded)


def test_keys_the_contract_does_not_name_are_never_guessed():
    assert pcap("i-1", "10-00-00").start == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert parse_key("web", key("i-1", "notes.txt"), 1, UP) is None
    assert parse_key("other", key("i-1", "vni7_2026-11-25T10-00-00Z.pcap"), 1, UP) is None  # another capture's
    assert parse_key("web", key("i-1", "vni8_2026-11-25T10-00-00Z.pcap"), 1, UP) is None  # VNI of the key and the name differ
    assert parse_key("web", key("i-1", "vni7_2026-11-24T10-00-00Z.pcap"), 1, UP) is None  # filed under the wrong day
    assert parse_key("web", "web/vni7/2026-11-25/vni7_2026-11-25T10-00-00Z.pcap", 1, UP) is None  # no instance
    assert day_prefix("web", 7, date(2026, 11, 25)) == "web/vni7/2026-11-25/"


def test_a_pcap_ends_where_the_same_hosts_next_one_starts():
    a = [pcap("i-a", t) for t in ("10-00-00", "10-10-00", "10-20-00")]
    b = [pcap("i-b", t) for t in ("10-05-00", "10-15-00")]
    begin = datetime(2026, 11, 25, 10, 11, tzinfo=UTC)
    got = covering(a + b, begin, begin + timedelta(minutes=2))
    # a 10:00 ended at 10:10 (its successor): out; b 10:05 runs to 10:15: in
    assert [(f["instance"], f["start"].strftime("%H:%M")) for f in got] == [("i-b", "10:05"), ("i-a", "10:10")]
    # the newest of each host runs to its upload
    late = covering(a + b, datetime(2026, 11, 25, 11, 59, tzinfo=UTC), datetime(2026, 11, 25, 12, 30, tzinfo=UTC))
    assert [(f["instance"], f["end"]) for f in late] == [("i-b", UP), ("i-a", UP)]
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
    seen = [pcap("i-a", "00-00-10"), pcap("i-b", "00-01-00"), pcap("i-b", "00-00-00")]
    assert lacking_predecessor(seen, at - timedelta(seconds=25)) == {("i-a", 7)}
