"""The re-mirroring planner (pure): ownership, numbering, limits, campaigns, races."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings as hsettings, strategies as st

from mirrorcap import aws_limits as L
from mirrorcap.contract import CREATED_KEY, RUNTIME_OWNER_KEY, SOURCE_KEY
from mirrorcap.remirror.model import Instance, Observed, Selector, Session, Settings
from mirrorcap.remirror.reconcile import Create, plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
WEB = {"Service": "web", "Environment": "prod"}
SETTINGS = Settings(capture="prod", target_id="tmt-1", filter_id="tmf-1", vni=12345, max_sources=10, vpc_id="vpc-1",
                    selectors=(Selector(tags=tuple(sorted(WEB.items()))),))


def inst(n: int, state="running", tags=WEB) -> Instance:
    return Instance(f"i-{n:08x}", state, f"eni-{n:08x}", dict(tags))


def owned(sid: str, n: int, number=1, created="2026-11-25T10:00:00+00:00", target="tmt-1", vni=12345) -> Session:
    return Session(sid, f"eni-{n:08x}", target, "tmf-1", number, vni,
                   {RUNTIME_OWNER_KEY: "prod", SOURCE_KEY: f"i-{n:08x}", CREATED_KEY: created})


def foreign(sid: str, n: int, number=1, target="tmt-1") -> Session:
    return Session(sid, f"eni-{n:08x}", target, "tmf-x", number, 1, {"mirrorcap:source": f"eni-{n:08x}"})


def observed(instances=(), sessions=(), gone=()) -> Observed:
    enis = {s.eni_id for s in sessions} - {f"eni-{n:08x}" for n in gone}
    return Observed(tuple(instances), tuple(sessions), frozenset(enis))


def test_new_matching_instance_gets_the_lowest_free_number_on_its_eni():
    # eni 1 already carries sessions 1 and 2 to other targets
    obs = observed([inst(1), inst(2)], [foreign("s-a", 1, 1, "tmt-other"), foreign("s-b", 1, 2, "tmt-other2")])
    changes = plan(SETTINGS, obs, NOW)
    assert changes.creates == (Create("i-00000001", "eni-00000001", 3, 12345, None),
                               Create("i-00000002", "eni-00000002", 1, 12345, None))
    assert changes.deletes == ()


def test_mirrored_stopped_nonmatching_instances_are_left_alone():
    obs = observed([inst(1), inst(2, state="stopped"), inst(3, tags={"Service": "api"})], [owned("s-1", 1)])
    assert not plan(SETTINGS, obs, NOW)


def test_three_sessions_on_an_eni_is_a_note_not_a_create():
    obs = observed([inst(1)], [foreign(f"s-{k}", 1, k, f"tmt-o{k}") for k in (1, 2, 3)])
    changes = plan(SETTINGS, obs, NOW)
    assert changes.creates == ()
    assert len(changes.notes) == 1 and "eni-00000001" in changes.notes[0] and "3 sessions" in changes.notes[0]


def test_full_target_stops_creation_with_a_note():
    s = Settings(**{**SETTINGS.__dict__, "max_sources": 2})
    obs = observed([inst(1), inst(2), inst(3)], [foreign("s-tf", 9)])  # a Terraform-managed session holds one slot
    changes = plan(s, obs, NOW)
    assert [c.instance_id for c in changes.creates] == ["i-00000001"]
    # one log line per instance left out, naming it and the limit
    assert [n.split("; ")[1].split()[0] for n in changes.notes] == ["i-00000002", "i-00000003"]
    assert all("max 2" in n for n in changes.notes)


def test_only_owned_sessions_are_deleted_when_their_source_is_gone():
    obs = observed([], [owned("s-own", 1), foreign("s-tf", 2)], gone=(1, 2))
    changes = plan(SETTINGS, obs, NOW)
    assert [(d.session_id, d.reason) for d in changes.deletes] == [("s-own", "source ENI no longer exists")]


def test_untagged_instance_loses_its_owned_session():
    obs = observed([inst(1, tags={"Service": "web"})], [owned("s-own", 1)])
    assert [d.session_id for d in plan(SETTINGS, obs, NOW).deletes] == ["s-own"]


def test_vni_change_replaces_the_owned_session():
    obs = observed([inst(1)], [owned("s-own", 1, vni=7)])
    changes = plan(SETTINGS, obs, NOW)
    assert [d.session_id for d in changes.deletes] == ["s-own"]
    assert changes.creates == (Create("i-00000001", "eni-00000001", 1, 12345, None),)  # number 1 is free again


def test_campaign_end_removes_owned_sessions_only_and_creates_nothing():
    s = Settings(**{**SETTINGS.__dict__, "ends_at": NOW - timedelta(seconds=1)})
    obs = observed([inst(1), inst(2), inst(3)], [owned("s-own", 1), foreign("s-tf", 2)])
    changes = plan(s, obs, NOW)
    assert changes.creates == ()
    assert [d.session_id for d in changes.deletes] == ["s-own"]
    assert "campaign ended" in changes.deletes[0].reason
    # before the end, business as usual
    assert [c.instance_id for c in plan(s, obs, NOW - timedelta(minutes=1)).creates] == ["i-00000003"]


def test_terraform_session_wins_over_an_owned_duplicate():
    obs = observed([inst(1)], [owned("s-own", 1, number=2), foreign("s-tf", 1, number=1)])
    assert [d.session_id for d in plan(SETTINGS, obs, NOW).deletes] == ["s-own"]


def test_race_two_writers_same_instance_converge_on_one_session():
    # Both writers listed the account before either created: both plan the same create.
    before = observed([inst(1)])
    a, b = plan(SETTINGS, before, NOW), plan(SETTINGS, before, NOW)
    assert a.creates == b.creates and len(a.creates) == 1
    # Both creations happened (AWS accepted two sessions on one ENI: numbers 1 and... also 1 is possible).
    after = observed([inst(1)], [owned("s-late", 1, created="2026-11-25T12:00:00.000002+00:00"),
                                 owned("s-early", 1, created="2026-11-25T12:00:00.000001+00:00")])
    # Each writer's second pass decides the same thing: the later one goes, nothing is created.
    for _ in range(2):
        again = plan(SETTINGS, after, NOW)
        assert [d.session_id for d in again.deletes] == ["s-late"] and again.creates == ()


def test_race_on_the_last_target_slot_sheds_the_newest_owned_session():
    s = Settings(**{**SETTINGS.__dict__, "max_sources": 2})
    # Writer A saw instance 1, writer B saw instance 2; one slot was free; both created.
    after = observed([inst(1), inst(2)], [foreign("s-tf", 9),
                                          owned("s-a", 1, created="2026-11-25T12:00:01+00:00"),
                                          owned("s-b", 2, created="2026-11-25T12:00:02+00:00")])
    changes = plan(s, after, NOW)
    assert [d.session_id for d in changes.deletes] == ["s-b"]
    assert changes.creates == ()  # and instance 2 is not immediately re-created into the full target
    assert any("i-00000002" in n for n in changes.notes)


# Any account state: the plan never touches foreign sessions and never breaks a limit.
eni_n = st.integers(min_value=1, max_value=6)


@st.composite
def accounts(draw):
    instances = [inst(n, state=draw(st.sampled_from(["running", "stopped", "pending"])),
                      tags=draw(st.sampled_from([WEB, {"Service": "api"}]))) for n in sorted(draw(st.sets(eni_n, max_size=6)))]
    sessions, used = [], set()
    for k in range(draw(st.integers(0, 10))):
        n = draw(eni_n)
        target = draw(st.sampled_from(["tmt-1", "tmt-other"]))
        number = draw(st.integers(1, 4))
        if (n, number) in used:
            continue
        used.add((n, number))
        maker = draw(st.sampled_from([owned, foreign]))
        sessions.append(maker(f"s-{k}", n, number=number, target=target) if maker is foreign else
                        maker(f"s-{k}", n, number=number, target=target, created=f"2026-11-25T10:00:{k:02d}+00:00"))
    gone = draw(st.sets(eni_n, max_size=2))
    max_sources = draw(st.integers(1, 4))
    return instances, sessions, gone, max_sources


@hsettings(max_examples=300, deadline=None)
@given(accounts())
def test_plan_respects_ownership_and_limits(account):
    instances, sessions, gone, max_sources = account
    s = Settings(**{**SETTINGS.__dict__, "max_sources": max_sources})
    obs = observed(instances, sessions, gone)
    changes = plan(s, obs, NOW)
    by_id = {x.id: x for x in sessions}
    assert all(by_id[d.session_id].owned_by("prod") for d in changes.deletes)
    remaining = [x for x in sessions if x.id not in {d.session_id for d in changes.deletes}]
    on_target_before = {x.eni_id for x in remaining if x.target_id == "tmt-1"}
    created_enis = [c.eni_id for c in changes.creates]
    assert len(set(created_enis)) == len(created_enis)
    assert not on_target_before & set(created_enis)
    # creating never pushes the target over its limit (foreign sessions may already have)
    if changes.creates:
        assert len(on_target_before) + len(created_enis) <= max_sources
    for c in changes.creates:
        numbers = [x.number for x in remaining if x.eni_id == c.eni_id]
        assert c.number not in numbers and len(numbers) < L.SESSIONS_PER_SOURCE_ENI
        assert L.SESSION_NUMBER_MIN <= c.number <= L.SESSION_NUMBER_MAX
