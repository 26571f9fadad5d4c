"""Session numbering: a pure function, tested by example and by property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mirrorcap import aws_limits as L
from mirrorcap.numbering.sessions import NumberingError, Request, assign


def test_first_number_is_one_per_source():
    got = assign([Request("a", "eni-1"), Request("a", "eni-2")], {})
    assert got == {("a", "eni-1"): 1, ("a", "eni-2"): 1}


def test_sessions_sharing_a_source_get_distinct_numbers_in_capture_order():
    got = assign([Request("b", "eni-1"), Request("a", "eni-1"), Request("c", "eni-1")], {})
    assert got == {("a", "eni-1"): 1, ("b", "eni-1"): 2, ("c", "eni-1"): 3}


def test_fixed_number_wins_and_others_avoid_it():
    got = assign([Request("a", "eni-1"), Request("b", "eni-1", fixed=1)], {})
    assert got == {("b", "eni-1"): 1, ("a", "eni-1"): 2}


def test_lock_keeps_numbers_when_an_earlier_capture_is_added():
    first = assign([Request("b", "eni-1")], {})
    assert first == {("b", "eni-1"): 1}
    # Without the lock, "a" sorts first and would take 1, renumbering "b".
    second = assign([Request("a", "eni-1"), Request("b", "eni-1")], first)
    assert second == {("a", "eni-1"): 2, ("b", "eni-1"): 1}


def test_new_fixed_number_displaces_only_the_locked_session_it_collides_with():
    locked = {("a", "eni-1"): 1, ("b", "eni-1"): 2}
    got = assign([Request("a", "eni-1"), Request("b", "eni-1"), Request("c", "eni-1", fixed=1)], locked)
    assert got == {("c", "eni-1"): 1, ("b", "eni-1"): 2, ("a", "eni-1"): 3}


def test_invalid_lock_entries_are_recomputed():
    got = assign([Request("a", "eni-1"), Request("b", "eni-1")], {("a", "eni-1"): 0, ("b", "eni-1"): 99999})
    assert sorted(got.values()) == [1, 2]


def test_more_than_three_sessions_per_source_is_refused():
    with pytest.raises(NumberingError) as exc:
        assign([Request(c, "eni-1") for c in "abcd"], {})
    assert "AWS allows 3 sessions per source ENI" in str(exc.value)


def test_duplicate_fixed_numbers_on_one_source_are_refused():
    with pytest.raises(NumberingError) as exc:
        assign([Request("a", "eni-1", fixed=5), Request("b", "eni-1", fixed=5)], {})
    assert 'also fixed by capture "a"' in str(exc.value)


def test_fixed_number_out_of_range_is_refused():
    with pytest.raises(NumberingError):
        assign([Request("a", "eni-1", fixed=L.SESSION_NUMBER_MAX + 1)], {})


# --- properties -------------------------------------------------------------

captures = st.sampled_from(["a", "b", "c", "prod", "stage"])
source_ids = st.sampled_from([f"eni-{i}" for i in range(6)] + ["i-1", "i-2"])


@st.composite
def inventories(draw):
    """Up to 3 captures per source (AWS), unique (capture, source), some fixed numbers unique per source."""
    pairs = draw(st.lists(st.tuples(captures, source_ids), unique=True, max_size=25))
    per_source: dict[str, list[str]] = {}
    for cap, src in pairs:
        if len(per_source.setdefault(src, [])) < 3:
            per_source[src].append(cap)
    requests = []
    for src, caps in per_source.items():
        used = set()
        for cap in caps:
            fixed = draw(st.one_of(st.none(), st.integers(L.SESSION_NUMBER_MIN, L.SESSION_NUMBER_MAX)))
            if fixed in used:
                fixed = None
            if fixed is not None:
                used.add(fixed)
            requests.append(Request(cap, src, fixed))
    return draw(st.permutations(requests))


def check_valid(requests, got):
    assert set(got) == {(r.capture, r.source) for r in requests}
    for r in requests:
        n = got[(r.capture, r.source)]
        assert L.SESSION_NUMBER_MIN <= n <= L.SESSION_NUMBER_MAX
        if r.fixed is not None:
            assert n == r.fixed
    by_source: dict[str, list[int]] = {}
    for (cap, src), n in got.items():
        by_source.setdefault(src, []).append(n)
    for numbers in by_source.values():
        assert len(numbers) == len(set(numbers)), "numbers must be unique per source"


@settings(max_examples=300)
@given(inventories())
def test_numbers_are_valid_unique_and_honour_fixed(requests):
    check_valid(requests, assign(requests, {}))


@settings(max_examples=300)
@given(inventories())
def test_input_order_does_not_matter_and_lock_is_a_fixed_point(requests):
    got = assign(requests, {})
    assert assign(list(reversed(requests)), {}) == got
    assert assign(requests, got) == got


@settings(max_examples=300)
@given(inventories(), captures, source_ids)
def test_adding_a_source_never_renumbers_the_others(requests, cap, src):
    before = assign(requests, {})
    if (cap, src) in before or sum(1 for r in requests if r.source == src) >= 3:
        return
    after = assign(list(requests) + [Request(cap, src)], before)
    check_valid(list(requests) + [Request(cap, src)], after)
    assert {k: after[k] for k in before} == before


@settings(max_examples=300)
@given(inventories(), st.data())
def test_removing_a_source_never_renumbers_the_others(requests, data):
    if not requests:
        return
    before = assign(requests, {})
    gone = data.draw(st.sampled_from(requests))
    rest = [r for r in requests if r != gone]
    after = assign(rest, before)
    assert after == {k: v for k, v in before.items() if k != (gone.capture, gone.source)}
