"""`mirrorcap review`: stack selection, session sentences, plan summary, the
pull-request comment and the drift summary; pure functions, then the commands
through a Typer app mounting the sub-app as the CLI does.

The plan is real: tests/fixtures/review/ was recorded by
tests/synth/test_review_plan.py (terraform + hashicorp/aws against moto: the
example applied, one source added, planned again).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import FIXTURES
from mirrorcap.errors import MirrorcapError
from mirrorcap.workflow.applied import StackResult, apply_report
from mirrorcap.workflow.comment import BUDGET, COMMENT_LIMIT, comment, removed_comment, unaffected_comment
from mirrorcap.workflow.drift import drift_summary
from mirrorcap.workflow.plan import PlanSummary, parse_plan, summarize_plan
from mirrorcap.workflow.sessions import SESSION_TYPE, SessionChange, lock_path, parse_lock, session_changes, session_sentences
from mirrorcap.workflow.stacks import select_stacks
from mirrorcap.workflow import reviewed
from mirrorcap.cli import app

RECORDED = FIXTURES / "review"
NEW = (RECORDED / "new-source.txt").read_text().strip()


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["review", *args], input=input)


def recorded_plan() -> dict:
    return parse_plan((RECORDED / "plan.json").read_text(), "plan.json")


def recorded_lock(name: str) -> dict:
    return parse_lock((RECORDED / name).read_text(), name)


# ---------------------------------------------------------------------------
# (c) the plan, and (b) the sessions, on the recorded real plan


def test_recorded_plan_is_summarized_as_terraform_summarizes_it():
    summary = summarize_plan(recorded_plan())
    terraforms_line = re.search(r"^Plan: .*$", (RECORDED / "plan.txt").read_text(), re.M).group(0)
    assert summary.line() == terraforms_line == "Plan: 1 to add, 0 to change, 0 to destroy."
    assert [(c.action, c.address) for c in summary.changes] == \
        [("create", f'aws_ec2_traffic_mirror_session.source["{NEW}"]')]  # no-ops are not changes


def test_the_lock_diff_says_exactly_one_new_session_with_its_number():
    before, after = recorded_lock("lock-before.json")["prod"], recorded_lock("lock-after.json")["prod"]
    changes = session_changes(before, after)
    assert changes == [SessionChange(NEW, "new", None, after[NEW])]
    assert session_sentences("prod", changes, summarize_plan(recorded_plan())) == [f"`{NEW}` web-3: new session {after[NEW]}"]


def test_a_lock_change_the_plan_does_not_make_is_called_out():
    plan = summarize_plan(recorded_plan())
    other = "eni-0000000000000000a"
    lines = session_sentences("prod", [SessionChange(other, "new", None, 2), SessionChange(NEW, "removed", 1, None)], plan)
    assert lines == [f"`{other}`: new session 2 **but the plan leaves it unchanged**: the lock and the stack disagree",
                     f"`{NEW}` web-3: session 1 removed **but the plan does `create` it**: the lock and the stack disagree"]


def test_a_session_the_plan_changes_without_a_lock_change_is_named():
    plan = summarize_plan(recorded_plan())
    assert session_sentences("prod", [], plan) == \
        [f"`{NEW}` web-3: session 1 created with no lock change (missing from the account or the state)"]


def test_counts_follow_terraform_replace_update_delete_import_and_data_reads():
    def rc(address, actions, mode="managed", importing=None, before=None, after=None, type_="aws_x", index=None):
        change = {"actions": actions, "before": before, "after": after}
        if importing:
            change["importing"] = {"id": "x"}
        return {"address": address, "mode": mode, "type": type_, "index": index, "change": change}
    plan = {"format_version": "1.2", "planned_values": {}, "resource_changes": [
        rc("aws_x.replaced", ["delete", "create"]), rc("aws_x.updated", ["update"]), rc("aws_x.gone", ["delete"]),
        rc("aws_x.new", ["create"]), rc("aws_x.kept", ["no-op"]), rc("data.aws_x.read", ["read"], mode="data"),
        rc("aws_x.imported", ["no-op"], importing=True),
        rc('aws_ec2_traffic_mirror_session.source["eni-1"]', ["update"], type_=SESSION_TYPE, index="eni-1",
           before={"session_number": 1, "virtual_network_id": 1, "description": "mirrorcap prod: db"},
           after={"session_number": 1, "virtual_network_id": 7, "description": "mirrorcap prod: db"}),
    ]}
    s = summarize_plan(plan)
    assert (s.add, s.change, s.destroy, s.imports) == (2, 2, 2, 1)
    assert s.line() == "Plan: 1 to import, 2 to add, 2 to change, 2 to destroy."
    assert [c.action for c in s.changes] == ["replace", "update", "delete", "create", "import", "update"]
    assert session_sentences("prod", [], s) == ["`eni-1` db: session 1 updated: virtual\\_network\\_id 1 → 7"]
    assert summarize_plan({"format_version": "1.2", "planned_values": {}}).line() == "No changes."


def test_state_json_and_garbage_are_refused_naming_the_file_and_the_fix():
    with pytest.raises(MirrorcapError) as e:
        parse_plan(json.dumps({"format_version": "1.0", "values": {}}), "state.json")
    assert "state.json: resource_changes" in str(e.value) and "fix: pass `terraform show -json" in str(e.value)
    with pytest.raises(MirrorcapError, match="plan.json: not JSON"):
        parse_plan("Error: no plan", "plan.json")
    with pytest.raises(MirrorcapError, match=r"old.lock.json: version: expected a version 1"):
        parse_lock('{"version": 2, "captures": {}}', "old.lock.json")
    with pytest.raises(MirrorcapError, match=r"x.json: captures.prod.eni-1: True is not a session number"):
        parse_lock('{"version": 1, "captures": {"prod": {"eni-1": true}}}', "x.json")
    assert parse_lock("", "absent") == {}  # no lock at the base: every session is new


# ---------------------------------------------------------------------------
# (d) the comment


def test_comment_on_the_recorded_plan_through_the_command():
    r = run("comment", "--stack", "prod", "--plan-json", str(RECORDED / "plan.json"), "--plan-text", str(RECORDED / "plan.txt"),
            "--lock-before", str(RECORDED / "lock-before.json"), "--lock-after", str(RECORDED / "lock-after.json"),
            "--commit", "0123456789abcdef0123456789abcdef01234567")
    assert r.exit_code == 0, r.output
    body = r.output
    number = recorded_lock("lock-after.json")["prod"][NEW]
    assert body.startswith("<!-- mirrorcap-review:prod -->\n\n### mirrorcap plan: `prod` at 0123456789ab\n")
    # the session in words, then its cost: one mirrored source, 0.015 USD an hour for 730 hours (capacity.Prices)
    assert [line for line in body.splitlines() if line.startswith("- ")] == [
        f'- `aws_ec2_traffic_mirror_session.source["{NEW}"]` (1 mirrored source): +$10.95', f"- `{NEW}` web-3: new session {number}"]
    assert "**Plan: 1 to add, 0 to change, 0 to destroy.**" in body
    assert "**Monthly cost: +$10.95** (mirrorcap's cost model, us-east-1 list prices" in body
    assert "[!CAUTION]" not in body  # nothing is destroyed or replaced
    fp = reviewed.fingerprint(reviewed.normalize(json.loads((RECORDED / "plan.json").read_text())))
    assert f"Plan fingerprint `{fp}`: a merge applies this plan" in body
    assert "<details><summary>Full plan</summary>\n\n```\nTerraform used the selected providers" in body
    assert body.rstrip().endswith("```\n\n</details>")


def test_a_huge_plan_is_cut_below_githubs_limit_keeping_head_tail_and_a_closed_fence():
    lines = [f'  # aws_ec2_traffic_mirror_session.source["eni-{n:017x}"] will be created ``` not a fence' for n in range(6000)]
    text = "\n".join(["Terraform will perform the following actions:", *lines, "Plan: 6000 to add, 0 to change, 0 to destroy."])
    sessions = [f"`eni-{n:017x}`: new session 1" for n in range(1500)]
    body = comment("big", plan=PlanSummary((), add=6000), plan_text=text, sessions=sessions, lock_name="capture.lock.json")
    assert len(text) > COMMENT_LIMIT and len(body) <= BUDGET < COMMENT_LIMIT
    assert "Terraform will perform the following actions:" in body and "Plan: 6000 to add, 0 to change, 0 to destroy." in body
    assert re.search(r"… \d+ line\(s\) not shown \([\d,]+ characters in all\)", body)
    assert "- … and 1400 more sessions (see the full plan)" in body
    fence = re.search(r"\n(`{4,})\n", body).group(1)  # longer than the ``` inside the plan
    assert body.rstrip().endswith(f"{fence}\n\n</details>") and body.count(fence) == 2


def test_the_longest_descriptions_on_a_thousand_sessions_still_fit():
    worst = "mirrorcap big: " + "&<>@`" * 51  # 255 characters, each escaped to several
    changes = [{"address": f'aws_ec2_traffic_mirror_session.source["eni-{n:017x}"]', "mode": "managed", "type": SESSION_TYPE,
                "index": f"eni-{n:017x}", "change": {"actions": ["create"], "before": None,
                                                     "after": {"description": worst, "session_number": 1}}} for n in range(1000)]
    plan = summarize_plan({"format_version": "1.2", "planned_values": {}, "resource_changes": changes})
    lock = [SessionChange(f"eni-{n:017x}", "new", None, 1) for n in range(1000)]
    sentences = session_sentences("big", lock, plan)
    assert all(len(s) < 600 for s in sentences) and sentences[0].endswith("…: new session 1")
    body = comment("big", plan=plan, plan_text="x" * 200_000, sessions=sentences, lock_name="capture.lock.json")
    assert len(body) <= BUDGET
    assert re.search(r"- … and \d+ more sessions \(see the full plan\)", body)
    assert re.search(r"\| \| \| … and \d+ more \(see the full plan\) \|", body)


def test_a_failed_plan_posts_terraforms_output():
    body = comment("prod", plan=None, plan_text="Error: No valid credential sources found", sessions=[], lock_name="capture.lock.json")
    assert "**The plan failed**" in body and "<summary>Terraform output</summary>" in body and "No valid credential" in body
    assert "Mirror sessions: no session number changes in `capture.lock.json`." in body


def test_inventory_text_reaches_the_comment_inert():
    plan = summarize_plan({"format_version": "1.2", "planned_values": {}, "resource_changes": [
        {"address": 'aws_ec2_traffic_mirror_session.source["eni-1"]', "mode": "managed", "type": SESSION_TYPE,
         "index": "eni-1", "change": {"actions": ["create"], "before": None,
                                      "after": {"description": "mirrorcap prod: <img src=x> @ops-team `x` [l](u) | *b*"}}}]})
    (line,) = session_sentences("prod", [SessionChange("eni-1", "new", None, 1)], plan)
    assert "<img" not in line and "&lt;img src=x&gt;" in line and "@\u200bops-team" in line
    assert "\\`x\\`" in line and "\\[l\\](u)" in line and "\\|" in line and "\\*b\\*" in line


def test_the_marker_is_the_first_line_of_every_kind_of_comment():
    for body in (comment("a-1", plan=None, plan_text="", sessions=[], lock_name="l"),
                 unaffected_comment("a-1", "abc"), removed_comment("a-1", "capture.hcl")):
        assert body.splitlines()[0] == "<!-- mirrorcap-review:a-1 -->"
    assert "no longer changes stack `a-1` as of abc" in run("comment", "--stack", "a-1", "--unaffected", "--commit", "abc").output
    assert "`make destroy STACK=a-1`" in run("comment", "--stack", "a-1", "--removed").output


def test_comment_command_names_what_is_missing_or_wrong():
    r = run("comment", "--stack", "prod", "--plan-text", str(RECORDED / "plan.txt"))
    assert r.exit_code == 2 and "--lock-before: missing" in r.stderr and "fix: pass --lock-after FILE" in r.stderr
    r = run("comment", "--stack", "prod", "--plan-json", str(RECORDED / "lock-after.json"), "--plan-text", str(RECORDED / "plan.txt"),
            "--lock-before", str(RECORDED / "lock-before.json"), "--lock-after", str(RECORDED / "lock-after.json"))
    assert r.exit_code == 2 and "lock-after.json: format_version: not Terraform's JSON output" in r.stderr


# ---------------------------------------------------------------------------
# (a) stack selection

TWO = '''
# two captures
capture "prod" {
  region = "eu-west-1"
  source {
    eni_id = "eni-0123456789abcdef0"
  }
}
capture "stage" {
  region = "eu-west-1"
}
'''


def select(changed, **kw):
    kw.setdefault("inventory_before", TWO)
    return select_stacks(changed, ["prod", "stage"], **kw)


def test_an_inventory_change_plans_only_the_captures_whose_block_changed():
    after = TWO.replace('eni_id = "eni-0123456789abcdef0"', 'eni_id = "eni-0123456789abcdef1"')
    assert select(["capture.hcl"], inventory_after=after).stacks == {"prod": ['capture.hcl: capture "prod" changed']}
    reformatted = TWO.replace("# two captures", "# comments and layout\n\n").replace('region = "eu-west-1"', 'region    =    "eu-west-1"')
    assert select(["capture.hcl"], inventory_after=reformatted).stacks == {}
    added = TWO + 'capture "qa" {\n  region = "us-east-1"\n}\n'
    assert select_stacks(["capture.hcl"], ["prod", "stage", "qa"], inventory_before=TWO, inventory_after=added).stacks == \
        {"qa": ['capture.hcl: capture "qa" added']}


def test_a_change_outside_the_capture_blocks_or_without_a_base_plans_every_stack():
    assert set(select(["capture.hcl"], inventory_after=TWO + 'other = "x"\n').stacks) == {"prod", "stage"}
    assert select(["capture.hcl"], inventory_before=None, inventory_after=TWO).stacks == \
        {"prod": ["capture.hcl: no earlier version to compare"], "stage": ["capture.hcl: no earlier version to compare"]}
    assert set(select(["capture.hcl"], inventory_before="capture {{{", inventory_after=TWO).stacks) == {"prod", "stage"}


def test_a_removed_capture_is_not_planned_but_reported_with_what_to_do():
    after = TWO[:TWO.index('capture "stage"')]
    s = select_stacks(["capture.hcl"], ["prod"], inventory_before=TWO, inventory_after=after)
    assert s.stacks == {} and list(s.removed) == ["stage"] and "`make destroy STACK=stage`" in s.removed["stage"]


def test_a_lock_change_plans_only_the_captures_whose_numbers_changed():
    before = {"prod": {"eni-1": 1}, "stage": {"eni-2": 1}}
    after = {"prod": {"eni-1": 1}, "stage": {"eni-2": 1, "eni-3": 1}}
    s = select(["capture.lock.json"], lock_before=before, lock_after=after)
    assert s.stacks == {"stage": ['capture.lock.json: session numbers of "stage" changed']}
    assert set(select(["capture.lock.json"], lock_after=after).stacks) == {"prod", "stage"}  # nothing to compare with


@pytest.mark.parametrize("path, expected", [
    ("rendered/stage/user-data.sh", {"stage"}),
    ("rendered/gone/user-data.sh", set()),
    ("modules/mirrorcap/stack/host.py", {"prod", "stage"}),
    ("scripts/host/bake.sh.j2", {"prod", "stage"}),
    ("main.py", {"prod", "stage"}), ("cdktf.json", {"prod", "stage"}), ("pyproject.toml", {"prod", "stage"}),
    ("tools/package-lock.json", {"prod", "stage"}), (".github/workflows/mirrorcap-plan.yml", {"prod", "stage"}),
    ("README.md", set()), ("tests/unit/test_sessions.py", set()), ("tools/hclfmt.js", set()), ("packer/mirrorcap.pkr.hcl", set()),
    ("main.py.orig", set()), ("other/capture.hcl", set()),
])
def test_which_paths_plan_which_stacks(path, expected):
    assert set(select([path]).stacks) == expected


def test_inventory_elsewhere_and_its_lock_are_followed():
    s = select_stacks(["infra/mirror.lock.json"], ["prod"], inventory="infra/mirror.hcl",
                        lock_before={"prod": {"eni-1": 1}}, lock_after={"prod": {"eni-1": 2}})
    assert s.stacks == {"prod": ['infra/mirror.lock.json: session numbers of "prod" changed']}
    assert lock_path("./infra/mirror.hcl") == "infra/mirror.lock.json"


def synthesized_tree(root: Path, backends: dict[str, dict | None]) -> None:
    out = root / "cdktf.out"
    stacks = {}
    for name, backend in backends.items():
        d = out / "stacks" / name
        d.mkdir(parents=True)
        doc = {"provider": {"aws": [{"region": "eu-west-1"}]}, "terraform": {"backend": backend} if backend else {}}
        (d / "cdk.tf.json").write_text(json.dumps(doc))
        stacks[name] = {"workingDirectory": f"stacks/{name}"}
    (out / "manifest.json").write_text(json.dumps({"stacks": stacks}))


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd, check=True, capture_output=True)


def test_stacks_command_compares_with_the_base_revision(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    git(tmp_path, "init", "-q")
    (tmp_path / "capture.hcl").write_text(TWO)
    (tmp_path / "capture.lock.json").write_text(json.dumps({"version": 1, "captures": {"prod": {"eni-0123456789abcdef0": 1}}}))
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "base")
    (tmp_path / "capture.hcl").write_text(TWO.replace('capture "stage" {\n  region = "eu-west-1"', 'capture "stage" {\n  region = "us-east-1"'))
    synthesized_tree(tmp_path, {"prod": {"s3": {"bucket": "b"}}, "stage": None})
    r = run("stacks", "--changed", "-", "--base", "HEAD", input="capture.hcl\nREADME.md\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"stacks": [{"name": "stage", "dir": "cdktf.out/stacks/stage", "region": "eu-west-1",
                                                "remote_state": False, "reasons": ['capture.hcl: capture "stage" changed']}],
                                    "removed": []}
    r = run("stacks", "--changed", "-", "--base", "HEAD", "--require-remote-state", input="capture.hcl\n")
    assert r.exit_code == 1 and 'capture.hcl: capture "stage" > backend: keeps its Terraform state on the runner' in r.stderr
    r = run("stacks", "--changed", "-", "--base", "no-such-rev", input="capture.hcl\n")
    assert r.exit_code == 2 and "--base: 'no-such-rev' is not a commit" in r.stderr and "fetch-depth: 0" in r.stderr


def test_stacks_command_without_a_synth_says_to_run_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "capture.hcl").write_text(TWO)
    r = run("stacks", "--changed", "-", input="capture.hcl\n")
    assert r.exit_code == 2 and "cdktf.out/manifest.json: stacks: no synthesized stacks" in r.stderr and "make synth" in r.stderr


# ---------------------------------------------------------------------------
# (e) the drift summary


def test_drift_summary_for_drift_no_drift_and_could_not_check(tmp_path):
    drift = {"drift": True, "fixed": {}, "findings": [
        {"capture": "prod", "kind": "missing-session", "subject": "eni-1", "detail": "no session | gone", "fix": "make deploy STACK=prod",
         "fixable": False}]}
    md = drift_summary(drift)
    assert md.startswith("## mirrorcap check: drift in 1 capture(s)")
    assert "| prod | missing-session | eni-1 | no session &#124; gone | make deploy STACK=prod |" in md
    assert drift_summary({"drift": False, "findings": [], "fixed": {}}).startswith("## mirrorcap check: no drift")
    failed = {"drift": None, "findings": [], "fixed": {}, "error": [
        {"file": "AWS", "field": "credentials", "message": "Unable to locate credentials", "fix": "configure AWS credentials"}]}
    assert "could not check" in drift_summary(failed) and "AWS: credentials: Unable to locate credentials" in drift_summary(failed)
    # the command's exit code is the job's: 1 drift, 0 none, 3 could not reach AWS, 2 no report at all
    for report, code in ((drift, 1), ({"drift": False, "findings": [], "fixed": {}}, 0), (failed, 3)):
        (tmp_path / "check.json").write_text(json.dumps(report))
        r = run("drift", "--check-json", str(tmp_path / "check.json"))
        assert r.exit_code == code and r.output == drift_summary(report)
    (tmp_path / "empty.json").write_text("")
    r = run("drift", "--check-json", str(tmp_path / "empty.json"))
    assert r.exit_code == 2 and "empty.json: not JSON" in r.stderr and "did `mirrorcap check` run at all?" in r.stderr


# ---------------------------------------------------------------------------
# (g) reviewed plans, destroys and cost (workflow/reviewed.py, workflow/cost.py)

from mirrorcap.workflow import cost as C  # noqa: E402


def _rc(address: str, rtype: str, actions: list[str], before=None, after=None, unknown=None, sensitive=None, **extra) -> dict:
    return {"address": address, "mode": "managed", "type": rtype, **extra,
            "change": {"actions": actions, "before": before, "after": after, "after_unknown": unknown or {},
                       "after_sensitive": sensitive or {}, **({"replace_paths": extra.pop("replace_paths")} if "replace_paths" in extra else {})}}


def _plan(*rcs: dict, state: tuple[dict, ...] = ()) -> dict:
    return {"format_version": "1.2", "resource_changes": list(rcs),
            "prior_state": {"values": {"root_module": {"resources": list(state)}}}}


def test_check_applies_the_reviewed_plan_or_what_is_left_of_it_and_nothing_else():
    sg = _rc("aws_security_group.mirror_sg", "aws_security_group", ["create"], after={"name": "x"}, unknown={"id": True})
    inst = _rc("aws_instance.capture_instance", "aws_instance", ["create"], after={"instance_type": "t3.small"},
               unknown={"vpc_security_group_ids": True})
    record = reviewed.record(_plan(sg, inst), stack="prod", digest="sha256:x", pr=7, commit="a" * 40)
    assert reviewed.check(_plan(sg, inst), record).apply
    # after a half-done apply: the group exists, the instance's unknown now known: still what was reviewed
    inst_now = _rc("aws_instance.capture_instance", "aws_instance", ["create"],
                   after={"instance_type": "t3.small", "vpc_security_group_ids": ["sg-1"]})
    v = reviewed.check(_plan(inst_now), record)  # the group is not in the prior state: not applied, whatever is missing
    assert not v.apply and v.differences[0].text() == ("aws_security_group.mirror_sg: reviewed create, not in the fresh plan "
                                                       "and not in the state either (the merged configuration dropped it?)")
    made = {"address": "aws_security_group.mirror_sg", "mode": "managed", "values": {"name": "x", "id": "sg-1"}}
    v = reviewed.check(_plan(inst_now, state=(made,)), record)
    assert v.apply and v.done == ("aws_security_group.mirror_sg",)
    # a value the review saw differently, an action it did not show, a resource it did not list: refused
    bigger = _rc("aws_instance.capture_instance", "aws_instance", ["create"], after={"instance_type": "t3.large"},
                 unknown={"vpc_security_group_ids": True})
    v = reviewed.check(_plan(sg, bigger), record)
    assert not v.apply and [d.markdown() for d in v.differences] == [
        '`aws_instance.capture_instance`: planned values differ `instance_type`: reviewed `"t3.small"`, now `"t3.large"`']
    v = reviewed.check(_plan(_rc("aws_security_group.mirror_sg", "aws_security_group", ["delete", "create"], after={"name": "x"},
                                 unknown={"id": True})), record)
    assert [d.text() for d in v.differences][0] == "aws_security_group.mirror_sg: reviewed create, now delete+create"
    known_now = _rc("aws_security_group.mirror_sg", "aws_security_group", ["create"], after={"name": "x", "id": "sg-9"})
    # unknown then, known now, with nothing of the reviewed plan applied since: the record hid a known value
    v = reviewed.check(_plan(known_now, inst), record)
    assert not v.apply and [d.text() for d in v.differences] == [
        "aws_security_group.mirror_sg: known at review, as nothing of the reviewed plan has been applied since, but the "
        'record says (known after apply) id: reviewed (known after apply), now "sg-9"']
    was_known = reviewed.record(_plan(known_now), stack="prod", digest="d", pr=7, commit="c" * 40)
    assert not reviewed.check(_plan(sg), was_known).apply  # known then, unknown now: not what was reviewed
    assert reviewed.check(_plan(), record).nothing
    assert "no reviewed plan" in reviewed.check(_plan(sg), None).reason
    fp = reviewed.fingerprint(reviewed.normalize(_plan(bigger)))
    assert reviewed.check(_plan(bigger), None, approved=[fp]).apply  # a person approved exactly this plan


def test_records_keep_no_trace_of_sensitive_values_and_refuse_an_edited_record():
    secret = _rc("aws_ssm_parameter.p", "aws_ssm_parameter", ["create"], after={"value": "hunter2"}, sensitive={"value": True})
    record = reviewed.record(_plan(secret), stack="prod", digest="sha256:" + "0" * 64, pr=1, commit="c" * 40)
    text = json.dumps(record)
    assert "hunter2" not in text and '"(sensitive)": "changed"' in text
    assert hashlib.sha256(json.dumps("hunter2").encode()).hexdigest() not in text
    assert reviewed.check(_plan(secret), record).apply
    edited = json.loads(text)
    edited["changes"][0]["actions"] = ["delete"]
    with pytest.raises(MirrorcapError, match="fingerprint: does not match its changes"):
        reviewed.parse_record(json.dumps(edited), "reviewed.json", "prod")
    with pytest.raises(MirrorcapError, match="is the record of stack 'prod', not 'dr'"):
        reviewed.parse_record(text, "reviewed.json", "dr")


def test_destroys_are_named_with_their_reason_and_pcap_data_is_gated():
    plan = _plan(
        _rc("aws_instance.capture_instance", "aws_instance", ["delete", "create"], before={"ami": "ami-1"}, after={"ami": "ami-2"},
            action_reason="replace_because_cannot_update", replace_paths=[["ami"]]),
        _rc("aws_ebs_volume.pcap_volume", "aws_ebs_volume", ["delete"], before={"size": 300, "type": "st1"},
            action_reason="delete_because_no_resource_config"))
    changes = reviewed.normalize(plan)
    d = reviewed.destroys(changes)
    assert [(x.address, x.action, x.markdown(), bool(x.data)) for x in d] == [
        ("aws_ebs_volume.pcap_volume", "delete", "it left the configuration", True),
        ("aws_instance.capture_instance", "replace", "an argument that cannot change in place changed: `ami`", False)]
    body = comment("prod", plan=summarize_plan(plan), plan_text="", sessions=[], lock_name="capture.lock.json",
                     destroys=d, destroy_label=reviewed.DESTROY_LABEL)
    assert "> [!CAUTION]\n> **This plan destroys 2 resource(s)**: 1 replaced, 1 deleted." in body
    assert "**Loses the pcap volume: every pcap on it.**" in body
    assert "**A merge does not apply this plan** until the `mirrorcap:destroy-pcaps` label" in body
    allowed = comment("prod", plan=summarize_plan(plan), plan_text="", sessions=[], lock_name="x", destroys=d,
                        destroy_label=reviewed.DESTROY_LABEL, destroy_allowed=True)
    assert "label is on this pull request: a merge applies this plan" in allowed
    v = reviewed.check(plan, reviewed.record(plan, stack="prod", digest="d", pr=1, commit="c"))
    assert not v.apply and "destroys pcap data (aws_ebs_volume.pcap_volume)" in v.reason
    assert reviewed.check(plan, reviewed.record(plan, stack="prod", digest="d", pr=1, commit="c"), allow_destroy=True).apply


def test_cost_of_a_change_comes_from_the_capacity_model():
    from mirrorcap.capacity import HOURS_PER_MONTH, Prices
    p = Prices()
    plan = _plan(
        _rc("aws_instance.capture_instance", "aws_instance", ["update"],
            before={"instance_type": "t3.small", "root_block_device": [{"volume_size": 16, "volume_type": "gp3"}]},
            after={"instance_type": "t3.large", "root_block_device": [{"volume_size": 16, "volume_type": "gp3"}]}),
        _rc("aws_ebs_volume.pcap_volume", "aws_ebs_volume", ["update"], before={"size": 300, "type": "st1"},
            after={"size": 500, "type": "st1"}),
        _rc("aws_ec2_traffic_mirror_session.source[\"eni-1\"]", "aws_ec2_traffic_mirror_session", ["delete"], before={"session_number": 1}),
        _rc("aws_s3_bucket.archive", "aws_s3_bucket", ["create"], after={"bucket_prefix": "x"}),
        _rc("aws_security_group.mirror_sg", "aws_security_group", ["update"], before={"tags": {}}, after={"tags": {"a": "b"}}))
    c = C.plan_cost(plan, p)
    instance = round(round(p.instance_hour["t3.large"] * HOURS_PER_MONTH, 2) - round(p.instance_hour["t3.small"] * HOURS_PER_MONTH, 2), 2)
    volume = round(200 * p.volume_gib_month["st1"], 2)
    session = -round(p.mirror_session_hour * HOURS_PER_MONTH, 2)
    assert [(i.address, i.delta) for i in c.items] == [("aws_instance.capture_instance", instance),
                                                       ("aws_ebs_volume.pcap_volume", volume),
                                                       ('aws_ec2_traffic_mirror_session.source["eni-1"]', session)]
    assert c.delta == round(instance + volume + session, 2)
    lines = C.cost_lines(c)
    assert lines[0].startswith(f"**Monthly cost: +${c.delta:,.2f}**")
    assert "- `aws_ebs_volume.pcap_volume` (300 GiB st1 → 500 GiB st1): +$9.00" in lines
    assert any(line.startswith("- not priced: `aws_s3_bucket.archive`") for line in lines)


def test_the_apply_report_names_every_stack_and_the_ones_never_reached():
    rows = [StackResult("prod", "applied", "matches the reviewed plan"),
            StackResult("dr", "refused", "refused: the plan differs", "Not in the reviewed plan:\n- `x`: create")]
    body = apply_report(rows, ["prod", "dr", "lab"], commit="c" * 40, run_url="https://run")
    assert body.startswith(f"<!-- mirrorcap-apply:{'c' * 40} -->") and "**2 of 3 stack(s) not applied**" in body
    assert "| `lab` | ⏸ not started: the run stopped before this stack: see the run |" in body
    assert "<details><summary>dr: why</summary>" in body and "[The workflow run](https://run)" in body
    assert "**nothing applied**" in apply_report([], None, commit="c" * 40, run_url="https://run")
