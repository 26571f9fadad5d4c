"""`mirrorcap review` on real plans: `terraform show -json` of plans Terraform made of
built-in `terraform_data` resources (no provider, no account, seconds each), in the
situations issue 28 names:

- text from a plan (for_each keys, values, Terraform's log) reaches every comment and
  summary inert (comment, verify --report/--summary, applied, drift);
- a plan Terraform could not have written, or an input the command cannot use: exit 2
  and one problem naming it, never a traceback;
- a reviewed change missing from the fresh plan counts as applied only where the fresh
  plan's prior state shows it done;
- a reviewed create whose apply failed (tainted, replaced on the retry) is what is left of it;
- a record keeps nothing a reader can turn back into a sensitive value;
- a plan that changes only outputs is recorded, verified and applied like any other.

Where a case needs a shape Terraform never writes, the real plan is edited in that one place.
Skips where terraform is absent.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tf_emulator as T
from helpers import FIXTURES
from mirrorcap.cli import app

TERRAFORM, TERRAFORM_VERSION = T.find_terraform()
pytestmark = pytest.mark.skipif(TERRAFORM is None, reason=f"needs terraform: {TERRAFORM_VERSION}")

RECORDED = FIXTURES / "review"
HOSTILE = ["<img src=x onerror=alert(1)>", "@everyone", "https://evil.example/x", "a\u202eb", "e\u001b[31mred", "`x` ```"]


class Work:
    """One Terraform working directory of terraform_data resources (built in: nothing to install)."""

    def __init__(self, root: Path):
        self.dir = root / "tf"
        self.dir.mkdir()
        self.n = 0

    def tf(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        env = {**T.clean_env(), "TF_CLI_CONFIG_FILE": "/dev/null"}
        r = subprocess.run([TERRAFORM, *args], cwd=self.dir, env=env, capture_output=True, text=True, timeout=120)
        if ok and r.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)}: {r.stderr}{r.stdout[-2000:]}")
        return r

    def config(self, text: str) -> "Work":
        (self.dir / "main.tf").write_text(text)
        if not (self.dir / ".terraform.lock.hcl").exists() and not (self.dir / ".terraform").exists():
            self.tf("init", "-input=false", "-no-color")
        return self

    def plan(self, *args: str) -> Path:
        """A saved plan's JSON and text, written beside it: (plan-N.json, plan-N.txt)."""
        self.n += 1
        self.tf("plan", "-input=false", "-no-color", *args, "-out=tfplan")
        out = self.dir.parent / f"plan-{self.n}.json"
        out.write_text(self.tf("show", "-json", "tfplan").stdout)
        out.with_suffix(".txt").write_text(self.tf("show", "-no-color", "tfplan").stdout)
        return out

    def apply(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        return self.tf("apply", "-input=false", "-no-color", "-auto-approve", *args, ok=ok)


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["review", *map(str, args)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception  # never a traceback
    return r.exit_code, r.stdout, r.stderr


def record(plan: Path, tmp: Path, name: str = "reviewed.json") -> Path:
    (tmp / "stack").mkdir(exist_ok=True)
    (tmp / "stack" / "cdk.tf.json").write_text("{}")
    code, out, err = run("record", "--stack", "prod", "--plan-json", plan, "--dir", tmp / "stack", "--pr", "7", "--commit", "a" * 40)
    assert code == 0, err
    (tmp / name).write_text(out)
    return tmp / name


def verify(plan: Path, reviewed: Path, tmp: Path, *extra) -> tuple[int, str, str]:
    code, out, _ = run("verify", "--stack", "prod", "--plan-json", plan, "--reviewed", reviewed, "--report", tmp / "report.md", *extra)
    return code, out.strip(), (tmp / "report.md").read_text() if (tmp / "report.md").exists() else ""


# ---------------------------------------------------------------------------
# Inert


def _outside_code(md: str) -> str:
    """The Markdown GitHub renders as such: fenced blocks and code spans taken out."""
    md = re.sub(r"(?ms)^(`{3,})\n.*?\n\1$", "", md)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", md)


def assert_inert(md: str) -> None:
    assert "\x1b" not in md and "\u202e" not in md, "an unseen character reached the Markdown"
    prose = _outside_code(md)
    tags = set(re.findall(r"</?([a-zA-Z!][\w-]*)", prose))
    assert tags <= {"details", "summary", "!--"}, f"HTML from a plan: {tags}"
    assert not re.search(r"@\w", prose), "a mention"
    assert "://" not in prose.replace("https://github.com", ""), "a link"


def hostile_config(keys: list[str]) -> str:
    listed = ", ".join(json.dumps(k) for k in keys)
    return f'''resource "terraform_data" "x" {{
  for_each = toset([{listed}])
  input    = each.key
}}
'''


def test_plan_text_reaches_every_comment_and_summary_inert(tmp_path):
    w = Work(tmp_path).config(hostile_config(HOSTILE[:3]))
    w.apply()
    w.config(hostile_config(HOSTILE[2:]))  # two deleted, three created: every key in a CAUTION row or a table
    pr = w.plan()
    assert {rc["action_reason"] for rc in json.loads(pr.read_text())["resource_changes"] if "action_reason" in rc} == \
        {"delete_because_each_key"}
    lock = RECORDED / "lock-before.json"
    code, body, err = run("comment", "--stack", "prod", "--plan-json", pr, "--plan-text", pr.with_suffix(".txt"),
                          "--lock-before", lock, "--lock-after", lock)
    assert code == 0, err
    assert "This plan destroys 2 resource(s)" in body and "Resource changes (5)" in body
    assert_inert(body)
    values = [rc["change"]["after"]["input"] for rc in json.loads(pr.read_text())["resource_changes"] if rc["change"]["after"]]
    assert "a\u202eb" in values and "e\u001b[31mred" in values  # the plan holds them raw; none reached the comment

    # The merge's plan differs (a crafted key the review never saw): verify's report and the run's summary
    reviewed = record(pr, tmp_path)
    w.config(hostile_config(HOSTILE[2:] + ["<script>@here https://x.example</script>"]))
    fresh = w.plan()
    code, line, report = verify(fresh, reviewed, tmp_path, "--plan-text", fresh.with_suffix(".txt"), "--summary", tmp_path / "summary.md")
    assert code == 1 and line.startswith("refused: the plan differs") and "\n" not in line
    assert "is not in the reviewed plan" in report
    summary = (tmp_path / "summary.md").read_text()
    assert "<details><summary>plan</summary>" in summary
    for md in (report, summary):
        assert_inert(md)

    # The merged pull request's comment: the verdict, the report, a failed apply's log tail
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "results.tsv").write_text(f"prod\trefused\t{line}\nprod-2\tfailed\tterraform apply failed\n")
    (tmp_path / "results" / "prod").mkdir()
    (tmp_path / "results" / "prod" / "report.md").write_text(report)
    (tmp_path / "results" / "prod-2").mkdir()
    (tmp_path / "results" / "prod-2" / "failure.log").write_text(fresh.with_suffix(".txt").read_text() + "\n```\n<img src=x>\n")
    (tmp_path / "stacks.json").write_text(json.dumps({"stacks": [{"name": "prod"}, {"name": "prod-2"}]}))
    code, applied, err = run("applied", "--results", tmp_path / "results" / "results.tsv", "--stacks", tmp_path / "stacks.json",
                             "--commit", "b" * 40, "--run-url", "https://github.com/o/r/actions/runs/1")
    assert code == 0, err
    assert "**2 of 2 stack(s) not applied**" in applied and "Terraform's output, its end" in applied
    assert_inert(applied)

    # The drift job: a stack that differs (its plan) and one that could not plan (its log)
    for name, exit_code, log in (("prod", 2, ""), ("prod-2", 1, "Error: " + " ".join(HOSTILE) + "\n```\n@everyone <img src=x>")):
        d = tmp_path / "drift" / name
        d.mkdir(parents=True)
        (d / "exitcode").write_text(f"{exit_code}\n")
        (d / "plan.log").write_text(log)
        if exit_code == 2:
            (d / "plan.json").write_text(fresh.read_text())
    (tmp_path / "check.json").write_text(json.dumps({"drift": False, "findings": []}))
    code, drift, err = run("drift", "--check-json", tmp_path / "check.json", "--terraform", tmp_path / "drift")
    assert code == 3 and "could not plan" in drift and "differs from the configuration" in drift, err
    assert_inert(drift)


def test_session_sentences_and_cost_lines_show_plan_values_inert(tmp_path):
    """The recorded real plan of the example (one session created), its session's key and number
    and its values crafted: what the sentences and the cost line print from them."""
    plan = json.loads((RECORDED / "plan.json").read_text())
    (rc,) = [rc for rc in plan["resource_changes"] if rc["change"]["actions"] == ["create"]]
    new = (RECORDED / "new-source.txt").read_text().strip()
    rc["action_reason"] = "replace_because_cannot_update"
    rc["change"]["actions"] = ["delete", "create"]
    rc["change"]["before"] = {**rc["change"]["after"], "session_number": 1}
    rc["change"]["after"]["session_number"] = "<img src=x onerror=alert(1)> @everyone"
    rc["change"]["replace_paths"] = [["description"], ["tags", "@everyone <b>x</b> \u202e"]]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    lock = json.loads((RECORDED / "lock-after.json").read_text())
    lock["captures"]["prod"].pop(new)
    (tmp_path / "lock.json").write_text(json.dumps(lock))
    code, body, err = run("comment", "--stack", "prod", "--plan-json", tmp_path / "plan.json", "--plan-text", RECORDED / "plan.txt",
                          "--lock-before", tmp_path / "lock.json", "--lock-after", tmp_path / "lock.json")
    assert code == 0, err
    assert "**replaced** (destroyed, then created)" in body and f"`{new}` web-3: session &lt;img" in body
    assert_inert(body)


# ---------------------------------------------------------------------------
# Exit 2, one problem naming the input

BASE = '''resource "terraform_data" "b" {
  input = "b"
}
'''


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    """A real plan replacing one terraform_data (replace_paths, action_reason) and creating another."""
    tmp = tmp_path_factory.mktemp("real")
    w = Work(tmp).config(BASE + 'resource "terraform_data" "r" {\n  triggers_replace = ["one"]\n}\n')
    w.apply()
    w.config(BASE.replace('"b"\n', '"b2"\n') + 'resource "terraform_data" "r" {\n  triggers_replace = ["two"]\n}\n'
             'resource "terraform_data" "c" {\n  input = 1\n}\n')
    plan = w.plan()
    return {"tmp": tmp, "plan": json.loads(plan.read_text()), "text": plan.with_suffix(".txt"), "path": plan}


def _edit(real: dict, address: str, fn) -> dict:
    plan = json.loads(json.dumps(real["plan"]))
    fn(next(rc for rc in plan["resource_changes"] if rc["address"] == address))
    return plan


def _set(path: list, value):
    def fn(rc):
        d = rc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return fn


SHAPES = {
    # Terraform never writes these
    "a data source deleted": ("terraform_data.c", _set(["mode"], "data"), "change.actions: not an action list Terraform writes for a data source"),
    "read on a managed resource": ("terraform_data.c", _set(["change", "actions"], ["read"]), "not an action list Terraform writes for a managed"),
    "duplicate actions": ("terraform_data.c", _set(["change", "actions"], ["create", "create"]), "change.actions"),
    "replace_paths not paths": ("terraform_data.r", _set(["change", "replace_paths"], "triggers_replace"), "change.replace_paths"),
    "replace_paths on a create": ("terraform_data.c", _set(["change", "replace_paths"], [["input"]]), "not a replacement"),
    "replace_paths with an object": ("terraform_data.r", _set(["change", "replace_paths"], [[{"a": 1}]]), "change.replace_paths"),
    # ... and these would have ended in a traceback
    "action_reason a list": ("terraform_data.r", _set(["action_reason"], ["replace_by_triggers"]), "action_reason"),
}


def test_the_real_plan_passes_and_its_replace_is_what_terraform_writes(real):
    (r,) = [rc for rc in real["plan"]["resource_changes"] if rc["address"] == "terraform_data.r"]
    assert r["change"]["actions"] == ["delete", "create"] and r["change"]["replace_paths"] == [["triggers_replace"]]
    code, _, err = run("comment", "--stack", "prod", "--plan-json", real["path"], "--plan-text", real["text"],
                       "--lock-before", RECORDED / "lock-before.json", "--lock-after", RECORDED / "lock-after.json")
    assert code == 0, err


def _one_problem(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("mirrorcap: ") and lines[1].startswith("  fix: "), err
    for w in words:
        assert w in lines[0], (w, err)


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_a_shape_terraform_never_writes_is_refused(real, tmp_path, case):
    address, fn, words = SHAPES[case]
    (tmp_path / "plan.json").write_text(json.dumps(_edit(real, address, fn)))
    for args in (["comment", "--stack", "prod", "--plan-json", tmp_path / "plan.json", "--plan-text", real["text"],
                  "--lock-before", RECORDED / "lock-before.json", "--lock-after", RECORDED / "lock-after.json"],
                 ["verify", "--stack", "prod", "--plan-json", tmp_path / "plan.json"]):
        code, _, err = run(*args)
        assert code == 2, err
        _one_problem(err, str(tmp_path / "plan.json"), words)


def test_values_the_review_cannot_read_are_exit_2_naming_them(real, tmp_path):
    text = json.dumps(real["plan"])
    lock = RECORDED / "lock-before.json"

    def comment(plan_text: str) -> str:
        (tmp_path / "plan.json").write_text(plan_text)
        code, _, err = run("comment", "--stack", "prod", "--plan-json", tmp_path / "plan.json", "--plan-text", real["text"],
                           "--lock-before", lock, "--lock-after", lock)
        assert code == 2, err
        return err

    # an infinite or NaN size (written as Python's json writes them: not JSON), a number beyond a float
    for bad, words in (("NaN", "NaN is not a JSON number"), ("Infinity", "Infinity is not a JSON number"), ("1e400", "1e400 is too large")):
        _one_problem(comment(text.replace('"input": 1,', f'"input": {bad},', 1)), words)
    # a volume whose block list is a string, whose size no volume has (the cost model reads them)
    as_volume = _edit(real, "terraform_data.c", lambda rc: (rc.update(type="aws_ebs_volume"),
                                                             rc["change"]["after"].update(size=10**30, type="gp3")))
    _one_problem(comment(json.dumps(as_volume)), "terraform_data.c.size", "is not a number")
    as_instance = _edit(real, "terraform_data.c", lambda rc: (rc.update(type="aws_instance"),
                                                               rc["change"]["after"].update(instance_type="t3.small", root_block_device="gp3")))
    _one_problem(comment(json.dumps(as_instance)), "root_block_device: expected a list of blocks")
    # nesting deeper than any plan
    deep = json.loads(text)
    deep["resource_changes"][0]["change"]["after"]["input"] = json.loads("[" * 80 + "]" * 80)
    _one_problem(comment(json.dumps(deep)), "nested too deeply to read (more than 64 levels)")
    # larger than the bound
    (tmp_path / "huge.json").write_text(text[:-1] + ', "pad": "' + "x" * (64 * 2**20) + '"}')
    code, _, err = run("verify", "--stack", "prod", "--plan-json", tmp_path / "huge.json")
    assert code == 2
    _one_problem(err, "huge.json", "larger than 64 MiB")


def test_records_checks_and_paths_the_review_cannot_use_are_exit_2_naming_them(real, tmp_path):
    reviewed = record(real["path"], tmp_path)
    good = json.loads(reviewed.read_text())
    for name, change, words in (
            ("deep", lambda r: r["changes"][0].update(after=json.loads("[" * 100 + "]" * 100)), "nested too deeply to read (more than 64 levels)"),
            ("reason a list", lambda r: r["changes"][0].update(reason=["x"]), "changes[0].reason"),
            ("pr a string", lambda r: r.update(pr="<img src=x>"), "pr: expected a number or null"),
            ("all unknown", lambda r: r["changes"][0].update(after={"(known after apply)": True}), "wholly unknown")):
        bad = json.loads(json.dumps(good))
        change(bad)
        (tmp_path / f"{name}.json").write_text(json.dumps(bad))
        code, _, err = run("verify", "--stack", "prod", "--plan-json", real["path"], "--reviewed", tmp_path / f"{name}.json")
        assert code == 2, (name, err)
        _one_problem(err, f"{name}.json", words)
    # --report a directory: refused before any verdict is printed
    code, out, err = run("verify", "--stack", "prod", "--plan-json", real["path"], "--reviewed", reviewed, "--report", tmp_path)
    assert code == 2 and out == ""
    _one_problem(err, str(tmp_path), "is a directory")
    # the drift job's --terraform missing; its check output nested too deeply
    (tmp_path / "check.json").write_text(json.dumps({"drift": False, "findings": []}))
    code, _, err = run("drift", "--check-json", tmp_path / "check.json", "--terraform", tmp_path / "nowhere")
    assert code == 2
    _one_problem(err, "nowhere", "not a directory")
    (tmp_path / "deep-check.json").write_text('{"drift": false, "findings": ' + "[" * 5000 + "]" * 5000 + "}")
    code, _, err = run("drift", "--check-json", tmp_path / "deep-check.json")
    assert code == 2
    _one_problem(err, "deep-check.json", "nested too deeply to read (more than 64 levels)")
    # record --dir of a path that is not there: no digest of nothing
    code, out, err = run("record", "--stack", "prod", "--plan-json", real["path"], "--dir", tmp_path / "missing", "--commit", "a" * 40)
    assert code == 2 and out == ""
    _one_problem(err, "missing", "not a synthesized stack directory")
    # a lock nested too deeply
    (tmp_path / "lock.json").write_text('{"version": 1, "captures": ' + "[" * 5000 + "]" * 5000 + "}")
    code, _, err = run("comment", "--stack", "prod", "--plan-json", real["path"], "--plan-text", real["text"],
                       "--lock-before", tmp_path / "lock.json", "--lock-after", tmp_path / "lock.json")
    assert code == 2
    _one_problem(err, "lock.json", "nested too deeply to read (more than 64 levels)")


# ---------------------------------------------------------------------------
# Applied already, half-applied, secrets, outputs

C = 'resource "terraform_data" "c" {\n  input = "c"\n}\n'


def test_a_reviewed_change_missing_from_the_fresh_plan_counts_as_applied_only_if_the_state_shows_it(tmp_path):
    w = Work(tmp_path).config(BASE)
    w.apply()
    # The pull request: create c, delete b
    w.config(C)
    reviewed = record(w.plan(), tmp_path)
    assert [c["address"] for c in json.loads(reviewed.read_text())["changes"]] == ["terraform_data.b", "terraform_data.c"]
    # main then drops c: the fresh plan only deletes b, and c was never created
    w.config("")
    fresh = w.plan()
    code, line, report = verify(fresh, reviewed, tmp_path)
    assert code == 1 and line == "refused: the plan differs from the one reviewed in the pull request (1 change(s))"
    assert "`terraform_data.c`: reviewed create, not in the fresh plan and not in the state either" in report
    # c really created by an apply that stopped there: the rest (delete b) is what was reviewed
    w.config(C + BASE)
    w.apply("-target=terraform_data.c")
    w.config(C)
    code, line, report = verify(w.plan(), reviewed, tmp_path)
    assert (code, line) == (0, "matches the rest of the reviewed plan (1 change(s) applied already)")
    assert "prior state shows them done" in report
    # c created with another value than the one reviewed: not the reviewed create
    w.config('resource "terraform_data" "c" {\n  input = "other"\n}\n' + BASE)
    w.apply("-target=terraform_data.c")
    w.config('resource "terraform_data" "c" {\n  input = "other"\n}\n')
    code, line, report = verify(w.plan(), reviewed, tmp_path)
    assert code == 1 and '`terraform_data.c`: reviewed create, not in the fresh plan and the state differs from the reviewed ' \
                          'values `input`: reviewed `"c"`, now `"other"`' in report


def test_a_failed_create_left_tainted_is_what_is_left_of_the_reviewed_create(tmp_path):
    failing = 'resource "terraform_data" "f" {\n  input = "f"\n  provisioner "local-exec" {\n    command = "exit 1"\n  }\n}\n'
    w = Work(tmp_path).config(BASE)
    w.apply()
    w.config(BASE + failing)
    reviewed = record(w.plan(), tmp_path)
    assert w.apply("tfplan", ok=False).returncode == 1  # the create fails: Terraform keeps the object, tainted
    retry = w.plan()
    (rc,) = [rc for rc in json.loads(retry.read_text())["resource_changes"] if rc["change"]["actions"] != ["no-op"]]
    assert rc["change"]["actions"] == ["delete", "create"] and rc["action_reason"] == "replace_because_tainted"
    code, line, report = verify(retry, reviewed, tmp_path)
    assert (code, line) == (0, "matches the reviewed plan, 1 of them what a failed apply left (tainted: replaced)")
    assert "What a failed apply left (tainted, now replaced): `terraform_data.f`." in report
    # tainted by hand, not by a failed reviewed create: a replacement the review never showed
    w.config(BASE)
    w.tf("taint", "terraform_data.b")
    code, line, report = verify(w.plan(), reviewed, tmp_path)
    assert code == 1 and "`terraform_data.b`: delete+create is not in the reviewed plan" in report


def test_a_record_keeps_nothing_of_a_sensitive_value(tmp_path):
    secret = "hunter2"
    cfg = 'variable "s" {\n  sensitive = true\n}\nresource "terraform_data" "s" {\n  input = var.s\n}\n'
    w = Work(tmp_path).config(cfg)
    plan = w.plan(f"-var=s={secret}")
    assert secret in plan.read_text()  # Terraform's own plan JSON holds it; the record must not
    text = record(plan, tmp_path).read_text()
    assert secret not in text and '"(sensitive)": "changed"' in text
    for digest in (hashlib.sha256(json.dumps(secret).encode()).hexdigest(), hashlib.sha256(secret.encode()).hexdigest()):
        assert digest not in text
    assert verify(w.plan(f"-var=s={secret}"), tmp_path / "reviewed.json", tmp_path)[0] == 0
    # the same secret kept: "unchanged" (a plan that changes it is another plan)
    w.apply("tfplan")
    w.config(cfg + 'resource "terraform_data" "t" {\n  input = "t"\n}\n')
    again = json.loads(record(w.plan(f"-var=s={secret}"), tmp_path, "again.json").read_text())
    assert [c["address"] for c in again["changes"]] == ["terraform_data.t"]


def test_a_plan_changing_only_outputs_is_recorded_verified_and_applied(tmp_path):
    w = Work(tmp_path).config(BASE + 'output "o" {\n  value = "v1"\n}\n')
    w.apply()
    w.config(BASE + 'output "o" {\n  value = "v2"\n}\noutput "p" {\n  value = terraform_data.b.output\n}\n')
    pr = w.plan()
    assert all(rc["change"]["actions"] == ["no-op"] for rc in json.loads(pr.read_text())["resource_changes"])
    assert w.tf("plan", "-detailed-exitcode", "-input=false", "-no-color", ok=False).returncode == 2  # the drift job sees it
    reviewed = record(pr, tmp_path)
    assert [(c["address"], c["actions"]) for c in json.loads(reviewed.read_text())["changes"]] == \
        [("output.o", ["update"]), ("output.p", ["create"])]
    lock = RECORDED / "lock-before.json"
    code, body, _ = run("comment", "--stack", "prod", "--plan-json", pr, "--plan-text", pr.with_suffix(".txt"),
                        "--lock-before", lock, "--lock-after", lock)
    assert code == 0 and "**Changes to Outputs only (2).**" in body and "Plan fingerprint" in body
    fresh = w.plan()
    assert verify(fresh, reviewed, tmp_path)[:2] == (0, "matches the reviewed plan")
    w.apply("tfplan")
    assert verify(w.plan(), reviewed, tmp_path)[:2] == (4, "no changes: nothing to apply")
    # an output whose value changed after the review: refused, naming it
    w.config(BASE + 'output "o" {\n  value = "v3"\n}\n')
    code, line, report = verify(w.plan(), reviewed, tmp_path)
    assert code == 1 and '`output.o`: planned values differ `(the whole value)`: reviewed `"v2"`, now `"v3"`' in report


# ---------------------------------------------------------------------------
# The run's summary under GitHub's 1 MiB cap


def test_the_apply_summary_keeps_its_verdict_first_and_fits_github_cap_on_a_large_plan(tmp_path):
    """30 stacks of a real plan whose text is ~140 KB each: each stack's section (`verify --summary`: report and
    plan, the plan cut to 40,000 characters) is ~40 KB, 1.2 MB together, over the 1 MiB a step summary may hold
    (GitHub then drops it whole, verdict and all). `review summary` puts the verdict first and keeps the total under
    the cap, naming the sections left out."""
    cfg = ('resource "terraform_data" "big" {\n  count = 400\n  input = {for i in range(8) : "k${i}" => '
           'join("", [for j in range(40) : "v${count.index}-${i}-${j}"])}\n}\n')
    w = Work(tmp_path).config(cfg)
    plan = w.plan()
    assert len(plan.with_suffix(".txt").read_text()) > 100_000
    stacks = [f"stack-{n:02d}" for n in range(30)]
    rows = []
    for name in stacks:
        out = tmp_path / "review" / name
        out.mkdir(parents=True)
        code, line, _ = run("verify", "--stack", name, "--plan-json", plan, "--plan-text", plan.with_suffix(".txt"),
                            "--summary", out / "summary.md")
        assert code == 1 and line.startswith("refused: no reviewed plan")
        rows.append(f"{name}\trefused\t{line.strip()}\n")
    sections = sorted((tmp_path / "review").glob("*/summary.md"))
    assert sum(p.stat().st_size for p in sections) > 1024 * 1024  # what the step appended before: dropped by GitHub
    (tmp_path / "results.tsv").write_text("".join(rows))
    (tmp_path / "stacks.json").write_text(json.dumps({"stacks": [{"name": n} for n in stacks], "removed": []}))
    code, verdict, err = run("applied", "--results", tmp_path / "results.tsv", "--stacks", tmp_path / "stacks.json",
                             "--commit", "a" * 40, "--run-url", "https://github.com/o/r/actions/runs/1")
    assert code == 0, err
    (tmp_path / "applied.md").write_text(verdict)
    code, summary, err = run("summary", "--verdict", tmp_path / "applied.md", *sections)
    assert code == 0, err
    size = len(summary.encode())
    assert size < 1024 * 1024 and size > 900 * 1024  # under the cap, and filled
    assert summary.startswith(verdict)  # the verdict first, whole
    kept = [n for n in stacks if f"### {n}\n" in summary]
    left = [n for n in stacks if n not in kept]
    assert kept == stacks[:len(kept)] and left  # whole sections, in order, then the rest left out...
    assert summary.rstrip().endswith("The run's log has every one.")  # ...and said so, naming them
    assert f"{len(left)} section(s) left out (" + ", ".join(f"`{n}`" for n in left) in summary
    assert summary.count("<details>") == summary.count("</details>") == len(kept)  # no section cut in half


def test_a_record_hiding_known_values_as_unknown_is_refused(tmp_path):
    """A record whose changes show every value "(known after apply)" (well formed, its fingerprint recomputed: not a
    plan Terraform made) matched any value: a changed one and an extra create passed. With nothing of the reviewed
    plan applied since, every value the fresh plan knows was known at review: refused, naming it. After a partial
    apply the rule cannot hold (what was applied makes values known) and does not apply: test_reviewed_apply.py."""
    from mirrorcap.workflow import reviewed as R
    w = Work(tmp_path).config(BASE)
    w.apply()
    w.config(BASE + C)  # the pull request: create c
    pr = w.plan()
    honest = record(pr, tmp_path)
    assert verify(pr, honest, tmp_path)[:2] == (0, "matches the reviewed plan")
    forged = json.loads(honest.read_text())
    d = json.loads(json.dumps(forged["changes"][0]))
    d["address"] = "terraform_data.d"
    forged["changes"].append(d)
    for change in forged["changes"]:
        change["after"] = {k: R.UNKNOWN for k in change["after"]}
    forged["fingerprint"] = R.fingerprint(forged["changes"])
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    # merged: c with another value, and an extra create d the review never showed
    w.config(BASE + 'resource "terraform_data" "c" {\n  input = "other"\n}\nresource "terraform_data" "d" {\n  input = "d"\n}\n')
    fresh = w.plan()
    code, line, report = verify(fresh, tmp_path / "forged.json", tmp_path)
    assert code == 1 and line == "refused: the plan differs from the one reviewed in the pull request (2 change(s))"
    assert ('`terraform_data.c`: known at review, as nothing of the reviewed plan has been applied since, but the record '
            'says (known after apply) `input`: reviewed `(known after apply)`, now `"other"`') in report
    assert '`terraform_data.d`: known at review' in report
    # the honest record of the same pull request: the changed value named as such
    code, _, report = verify(fresh, honest, tmp_path)
    assert code == 1 and '`terraform_data.c`: planned values differ `input`: reviewed `"c"`, now `"other"`' in report
