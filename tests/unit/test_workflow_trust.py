"""Which reviewed-plan record the apply trusts, chosen from GitHub's REST answers
(modules/mirrorcap/workflow/trust.py, `mirrorcap review trusted-record | pulls`), and how the
records of several merged pull requests combine (`reviewed.check`).

The API answers are GitHub's own example responses (tests/fixtures/github/README.md names the
reference page of each), edited per case in the one place the case is about."""

from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from helpers import FIXTURES
from mirrorcap.cli import app
from mirrorcap.errors import MirrorcapError
from mirrorcap.workflow import reviewed, trust

API = FIXTURES / "github"
RUN = json.loads((API / "workflow-runs.json").read_text())["workflow_runs"][0]
ARTIFACT = json.loads((API / "artifacts.json").read_text())["artifacts"][0]
PULL = json.loads((API / "commit-pulls.json").read_text())[0]
REPO = "octo-org/octo-repo"
HEAD = "6dcb09b5b57875f334f61aebed695e2e4193db5e"


def run(id_: int, *, when: str = "2026-12-01T10:00:00Z", **fields) -> dict:
    """The docs' run as the plan workflow's passed pull_request run of HEAD in REPO, then `fields`."""
    r = copy.deepcopy(RUN)
    r.update(id=id_, path=".github/workflows/mirrorcap-plan.yml", event="pull_request", head_sha=HEAD, status="completed",
             conclusion="success", created_at=when)
    r["repository"]["full_name"] = r["head_repository"]["full_name"] = REPO
    for k, v in fields.items():
        if k in ("repository", "head_repository"):
            r[k]["full_name"] = v
        else:
            r[k] = v
    return r


def artifact(id_: int, run_id: int, **fields) -> dict:
    a = copy.deepcopy(ARTIFACT)
    a.update(id=id_, name=f"mirrorcap-reviewed-{HEAD}")
    a["workflow_run"].update(id=run_id, head_sha=HEAD)
    a.update(fields)
    return a


def choose(runs: list[dict], artifacts: list[dict]) -> tuple[int | None, str]:
    art, why = trust.trusted_record({"total_count": len(runs), "workflow_runs": runs},
                                    {"total_count": len(artifacts), "artifacts": artifacts}, head_sha=HEAD, repository=REPO)
    return (art["id"] if art else None), why


def test_the_plan_workflows_passed_run_for_the_head_is_trusted():
    assert choose([run(7)], [artifact(70, 7)]) == (70, "artifact 70 of run 7 (attempt 1) of .github/workflows/mirrorcap-plan.yml")
    # the docs write a run's path with the ref it ran at
    assert choose([run(7, path=".github/workflows/mirrorcap-plan.yml@refs/pull/3/merge")], [artifact(70, 7)])[0] == 70


@pytest.mark.parametrize("other, why", [
    (dict(path=".github/workflows/release.yml"), "another workflow"),
    (dict(event="push"), "a push to some branch"),
    (dict(event="workflow_dispatch"), "a run by hand"),
    (dict(head_sha="f" * 40), "another commit"),
    (dict(head_repository="mallory/octo-repo"), "a fork's pull request (its own copy of the workflow file)"),
    (dict(repository="mallory/octo-repo"), "another repository"),
])
def test_a_record_uploaded_by_any_other_run_is_never_trusted(other, why):
    """The record anyone with write access (or a fork's workflow) can upload under the same name: alone, refused; next
    to ours, even newer, ignored."""
    forged = run(9, when="2026-12-01T11:00:00Z", **other)
    code, line = choose([forged], [artifact(90, 9)])
    assert code is None and line.startswith("no run of .github/workflows/mirrorcap-plan.yml planned 6dcb09b5b578"), why
    assert choose([run(7), forged], [artifact(70, 7), artifact(90, 9)])[0] == 70, why


def test_an_artifact_of_our_run_but_named_or_made_otherwise_is_not_the_record():
    assert choose([run(7)], [artifact(70, 7, name="mirrorcap-reviewed-" + "f" * 40)])[0] is None
    other = artifact(70, 7)
    other["workflow_run"]["head_sha"] = "f" * 40
    assert choose([run(7)], [other])[0] is None
    expired = choose([run(7)], [artifact(70, 7, expired=True)])
    assert expired[0] is None and "left an unexpired mirrorcap-reviewed-6dcb09b5b57875f334f61aebed695e2e4193db5e" in expired[1]


@pytest.mark.parametrize("status, conclusion, said", [
    ("completed", "failure", "concluded failure"),
    ("completed", "cancelled", "concluded cancelled"),
    ("completed", "timed_out", "concluded timed_out"),
    ("in_progress", None, "has not finished (in_progress)"),
])
def test_a_run_that_did_not_pass_is_not_a_review(status, conclusion, said):
    code, line = choose([run(7, status=status, conclusion=conclusion)], [artifact(70, 7)])
    assert code is None and said in line


def test_several_runs_of_the_commit():
    older, newer = "2026-12-01T10:00:00Z", "2026-12-01T12:00:00Z"
    # a label event's run plans nothing and repeats the verdict: the record is the planning run's
    assert choose([run(7, when=older), run(8, when=newer)], [artifact(70, 7)])[0] == 70
    # a plan again (the destroy label): its record, not the older one
    assert choose([run(7, when=older), run(8, when=newer)], [artifact(70, 7), artifact(80, 8)])[0] == 80
    # the newest run failed (the last verdict on the commit was red): nothing, even with an older passed record
    code, line = choose([run(7, when=older), run(8, when=newer, conclusion="failure")], [artifact(70, 7)])
    assert code is None and "run 8 (attempt 1)" in line and "concluded failure" in line
    # the newest planning run failed, a later label run repeated that: nothing
    code, line = choose([run(7, when=older), run(8, when="2026-12-01T11:00:00Z", conclusion="failure"), run(9, when=newer,
                         conclusion="failure")], [artifact(70, 7), artifact(80, 8)])
    assert code is None and "run 9" in line
    # a re-run is the same run, its newest attempt: attempt 2 passed after attempt 1 failed
    assert choose([run(7, run_attempt=2)], [artifact(71, 7)]) == (71, "artifact 71 of run 7 (attempt 2) of "
                                                                  ".github/workflows/mirrorcap-plan.yml")
    # ... and a re-run that failed after a passed attempt: the run now concludes failure
    assert choose([run(7, run_attempt=2, conclusion="failure")], [artifact(70, 7)])[0] is None
    # a merge group's run of its head is one of ours too
    assert choose([run(7, event="merge_group")], [artifact(70, 7)])[0] == 70


def test_answers_the_api_never_gives_are_problems_naming_the_field():
    with pytest.raises(MirrorcapError) as e:
        trust.trusted_record({"workflow_runs": "x"}, {"artifacts": []}, head_sha=HEAD, repository=REPO)
    assert e.value.problems[0].field == "workflow_runs"
    bad = run(7)
    bad["id"] = "7"
    with pytest.raises(MirrorcapError) as e:
        trust.trusted_record({"workflow_runs": [bad]}, {"artifacts": []}, head_sha=HEAD, repository=REPO)
    assert e.value.problems[0].field == "workflow_runs[0].id"


def write(tmp_path, name: str, data) -> str:
    (tmp_path / name).write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(tmp_path / name)


def test_the_command_prints_the_artifact_or_why_not(tmp_path):
    runs = write(tmp_path, "runs.json", {"workflow_runs": [run(7)]})
    arts = write(tmp_path, "arts.json", {"artifacts": [artifact(70, 7)]})
    cli = CliRunner()
    r = cli.invoke(app, ["review", "trusted-record", "--runs", runs, "--artifacts", arts, "--head", HEAD, "--repository", REPO])
    assert r.exit_code == 0 and r.stdout.startswith("70\tartifact 70 of run 7")
    r = cli.invoke(app, ["review", "trusted-record", "--runs", runs, "--artifacts", arts, "--head", HEAD, "--repository", "o/other"])
    assert r.exit_code == 1 and r.stdout.startswith("no run of .github/workflows/mirrorcap-plan.yml planned")
    r = cli.invoke(app, ["review", "trusted-record", "--runs", write(tmp_path, "bad.json", "{"), "--artifacts", arts,
                         "--head", HEAD, "--repository", REPO])
    assert r.exit_code == 2 and "not JSON" in r.stderr
    r = cli.invoke(app, ["review", "trusted-record", "--runs", runs, "--artifacts", arts, "--head", "main", "--repository", REPO])
    assert r.exit_code == 2 and "not a full commit SHA" in r.stderr


# ---------------------------------------------------------------------------
# The pull requests a push merged


def pull(number: int, merge_commit: str, *, head: str = HEAD, merged_at: str | None = "2026-12-01T10:00:00Z",
         base: str = "main", labels: tuple[str, ...] = ()) -> dict:
    p = copy.deepcopy(PULL)
    p.update(number=number, merge_commit_sha=merge_commit, merged_at=merged_at, state="closed" if merged_at else "open")
    p["head"]["sha"] = head
    p["base"]["ref"] = base
    p["labels"] = [{**PULL["labels"][0], "name": n} for n in labels]
    return p


def test_every_pull_request_the_push_merged_and_nothing_else(tmp_path):
    a, b, c, old = ("a" * 40, "b" * 40, "c" * 40, "0" * 40)
    answers = {
        a: [pull(1, a, head="1" * 40, merged_at="2026-12-01T10:00:00Z", labels=("mirrorcap:destroy-pcaps",))],
        b: [pull(2, b, head="2" * 40, merged_at="2026-12-01T09:00:00Z"),
            pull(3, old, head="3" * 40)],  # merged by an earlier push: its commit is shared, not its merge
        c: [pull(4, c, merged_at=None), pull(5, c, base="release")],  # open; merged into another branch
    }
    got = trust.merged_pulls([a, b, c], answers, "main")
    assert [(p["number"], p["head_sha"], p["labels"]) for p in got] == [(2, "2" * 40, []), (1, "1" * 40, ["mirrorcap:destroy-pcaps"])]
    # the command: the same, and the commits no merged pull request brought
    (tmp_path / "pulls").mkdir()
    for sha, ans in answers.items():
        write(tmp_path / "pulls", f"{sha}.json", ans)
    commits = write(tmp_path, "commits.txt", "\n".join([a, b, c]) + "\n")
    r = CliRunner().invoke(app, ["review", "pulls", "--commits", commits, "--pulls", str(tmp_path / "pulls"), "--branch", "main"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [p["number"] for p in out["pulls"]] == [2, 1] and out["unreviewed"] == [c]


# ---------------------------------------------------------------------------
# Several records, one review

PLAN = json.loads((FIXTURES / "review" / "plan.json").read_text())  # real: one session created
SESSION = next(rc for rc in PLAN["resource_changes"] if rc["change"]["actions"] == ["create"])


def plan_of(*enis: str) -> dict:
    p = copy.deepcopy(PLAN)
    p["resource_changes"] = [rc for rc in p["resource_changes"] if rc is not None and rc["change"]["actions"] != ["create"]]
    for eni in enis:
        rc = copy.deepcopy(SESSION)
        rc["address"] = f'aws_ec2_traffic_mirror_session.source["{eni}"]'
        rc["index"] = eni
        rc["change"]["after"]["network_interface_id"] = eni
        p["resource_changes"].append(rc)
    p["output_changes"] = {}
    return p


def rec(plan: dict, pr: int) -> dict:
    return reviewed.record(plan, stack="prod", digest="sha256:" + "0" * 64, pr=pr, commit=str(pr) * 40)


def test_the_records_of_several_merged_pull_requests_combine_as_one_review():
    x, y = "eni-0aaaaaaaaaaaaaaaa", "eni-0bbbbbbbbbbbbbbbb"
    first, second = rec(plan_of(x), 1), rec(plan_of(y), 2)
    both = plan_of(x, y)
    v = reviewed.check(both, [first, second])
    assert v.apply and v.reason == "matches the 2 reviewed plans"
    v = reviewed.check(both, [first])  # the second pull request's change, reviewed by nobody here
    assert not v.apply and [d.text() for d in v.differences] == [
        f'aws_ec2_traffic_mirror_session.source["{y}"]: create is not in the reviewed plan']
    v = reviewed.check(plan_of(x, y, "eni-0cccccccccccccccc"), [first, second])  # in neither: refused
    assert not v.apply and "(1 change(s))" in v.reason
    # the same address in both records: the fresh change must be one of them exactly
    changed = rec(plan_of(x), 2)
    changed["changes"][0]["after"]["description"] = "another"
    changed["fingerprint"] = reviewed.fingerprint(changed["changes"])
    assert reviewed.check(plan_of(x), [changed, first]).apply
    assert not reviewed.check(plan_of(x), [changed]).apply


# ---------------------------------------------------------------------------
# A summary under GitHub's cap (the sections case, on a real plan: tests/synth/test_review_real_plans.py)


def test_a_verdict_alone_over_the_cap_is_cut_at_a_line_and_says_so():
    from mirrorcap.workflow import summary
    lines = "".join(f"- `stack-{n}`: in step with its state\n" for n in range(60_000))
    assert len(lines.encode()) > summary.CAP
    out = summary.fit(lines, [("late", "### late\n")])
    assert len(out.encode()) < summary.CAP and out.startswith(lines[:1000])
    assert "*(the verdict is cut here: the run's log has it whole)*" in out and "1 section(s) left out (`late`)" in out
    assert all(line.endswith("in step with its state") for line in out.splitlines() if line.startswith("- `stack-"))  # no line cut
