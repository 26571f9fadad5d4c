"""The apply and drift workflows: their rules read from the files, and their own
shell run for real with stand-ins for what only GitHub and AWS have.

Rules (parsed YAML): no concurrency group that could cancel a waiting apply; AWS
sessions no longer than IAM's default MaxSessionDuration; every `terraform apply`
applies a saved plan that `mirrorcap review verify` passed, never a bare or
auto-approved apply; the plan workflow uploads the record the apply workflow reads.

Runs: the plan workflow's "Plan each stack" writes the reviewed record; that record,
zipped as GitHub serves an artifact, feeds the apply workflow's steps (queue, pull
request lookup, select, apply, report). `gh` is a small fake GitHub (runs, pull
requests, artifacts, comments) kept in a JSON file; `terraform` replays plan JSON
files and fails applies on demand. git, jq, bash, timeout and mirrorcap are real.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, env
from mirrorcap.workflow import reviewed

WF = ROOT / "workflows" / "github"
RECORDED = ROOT / "tests" / "fixtures" / "review"
PLAN = json.loads((RECORDED / "plan.json").read_text())  # real: one session created (tests/synth/test_review_plan.py)


def load(name: str) -> dict:
    doc = yaml.safe_load((WF / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def steps(name: str, job: str) -> list[dict]:
    return load(name)["jobs"][job]["steps"]


def step(name: str, job: str, title: str) -> dict:
    return next(s for s in steps(name, job) if s.get("name") == title)


# ---------------------------------------------------------------------------
# Rules


def test_no_workflow_that_applies_has_a_concurrency_group():
    """GitHub keeps one pending run per concurrency group and cancels the older pending one
    whatever cancel-in-progress says (DESIGN.md): a group on the apply would lose merges."""
    doc = load("mirrorcap-apply.yml")
    assert "concurrency" not in doc and all("concurrency" not in job for job in doc["jobs"].values())
    wait = steps("mirrorcap-apply.yml", "apply")[0]
    assert wait["name"] == "Wait for earlier runs of this workflow (oldest first)"
    assert doc["jobs"]["apply"]["permissions"]["actions"] == "read"  # listing runs and artifacts


def test_aws_sessions_fit_the_default_max_session_duration():
    """role-duration-seconds above the role's MaxSessionDuration (3600 by default) fails the assume."""
    found = 0
    for path in sorted(WF.glob("*.yml")):
        doc = load(path.name)
        for job in doc["jobs"].values():
            for s in job["steps"]:
                if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@"):
                    found += 1
                    seconds = s["with"].get("role-duration-seconds")
                    assert isinstance(seconds, int) and seconds <= 3600, f"{path.name}: role-duration-seconds {seconds}"
    assert found == 3
    apply = load("mirrorcap-apply.yml")
    assert int(apply["env"]["CREDENTIALS_SECONDS"]) == 3600  # the apply step's own clock agrees
    assert load("mirrorcap-drift.yml")["jobs"]["check"]["timeout-minutes"] < 60  # the drift job ends inside its session


def run_scripts() -> list[tuple[str, str]]:
    out = []
    for path in sorted(WF.glob("*.yml")):
        for job in load(path.name)["jobs"].values():
            out += [(f"{path.name}: {s.get('name')}", s["run"]) for s in job["steps"] if "run" in s]
    return out


def test_every_apply_applies_a_saved_plan_that_verify_passed():
    applies = []
    for where, text in run_scripts():
        flat = text.replace("\\\n", " ")
        assert "-auto-approve" not in flat, where
        # a terraform command whose subcommand is apply (not messages: "::group::terraform apply ...", "terraform apply failed")
        for m in re.finditer(r"""(?<![:\w"'])terraform(?:\s+-chdir=\S+)?\s+apply\b[^\n]*""", flat):
            line = re.split(r"\s*(?:>|;|&&|\|)", m.group(0))[0]  # the command, without its redirections
            applies.append(where)
            assert line.endswith(" tfplan"), f"{where}: {line} does not apply the saved plan"
            before = flat[:m.start()]
            assert "plan -input=false" in before and "-out=tfplan" in before, where
            verify = before.rfind("mirrorcap review verify")
            assert verify != -1 and 'case "$rc" in' in before[verify:], f"{where}: apply without verify's verdict"
    assert applies == ["mirrorcap-apply.yml: Apply each stack, as reviewed"]


def test_the_plan_workflow_records_what_the_apply_workflow_reads():
    upload = next(s for s in steps("mirrorcap-plan.yml", "plan") if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == "mirrorcap-reviewed-${{ github.event.pull_request.head.sha || github.event.merge_group.head_sha }}"
    assert upload["with"]["path"] == "review/reviewed/"
    plan = step("mirrorcap-plan.yml", "plan", "Plan each stack")["run"]
    assert '> "review/reviewed/$name/reviewed.json"' in plan and "mirrorcap review record" in plan
    find = step("mirrorcap-apply.yml", "apply", "Find the merged pull requests and the plans they reviewed")["run"]
    assert "actions/artifacts?name=mirrorcap-reviewed-$head" in find and "mirrorcap review trusted-record" in find
    apply = step("mirrorcap-apply.yml", "apply", "Apply each stack, as reviewed")
    assert '"$REVIEWED"/pr-*/"$name"/reviewed.json' in apply["run"] and apply["env"]["REVIEWED"] == "${{ runner.temp }}/reviewed"
    for name in ("mirrorcap-plan.yml", "mirrorcap-apply.yml"):  # one label, the one mirrorcap knows
        assert load(name)["env"]["MIRRORCAP_DESTROY_LABEL"] == reviewed.DESTROY_LABEL
    assert {"labeled", "unlabeled"} <= set(load("mirrorcap-plan.yml")["on"]["pull_request"]["types"])


def test_drift_runs_terraform_plan_with_detailed_exitcode_too():
    text = step("mirrorcap-drift.yml", "check", "Check every capture against the account and its Terraform state")["run"]
    assert "mirrorcap check --json" in text and "-detailed-exitcode" in text and "-lock=false" in text
    assert "mirrorcap review drift --check-json review/check.json --terraform review/terraform" in text


# ---------------------------------------------------------------------------
# Stand-ins

FAKE_GH = r'''#!{python}
"""gh api against a JSON world: runs (a sequence served one per call), pulls, artifacts, comments."""
import json, subprocess, sys
from pathlib import Path
world_path = Path(__import__("os").environ["GH_WORLD"])
world = json.loads(world_path.read_text())
args = sys.argv[1:]
assert args[0] == "api", args
args = args[1:]
method, jq, body, url = "GET", None, None, None
i = 0
while i < len(args):
    a = args[i]
    if a == "--method": method = args[i + 1]; i += 2; continue
    if a == "--jq": jq = args[i + 1]; i += 2; continue
    if a == "-F": body = Path(args[i + 1].split("=@", 1)[1]).read_text(); i += 2; continue
    if a == "--paginate": i += 1; continue
    url = a; i += 1
world.setdefault("calls", []).append(f"{method} {url}")
path, _, query = url.partition("?")
parts = path.split("/")
out = None
if method == "POST" and parts[-1] == "comments":
    world.setdefault("comments", []).append({"pr": int(parts[-2]), "body": body})
    out = {"id": len(world["comments"])}
elif parts[3:5] == ["actions", "runs"] and parts[-1] == "jobs":
    out = world.get("jobs", {}).get(parts[5], {"total_count": 0, "jobs": []})
elif parts[3:5] == ["actions", "runs"]:
    out = {"id": int(parts[5]), "workflow_id": 4242}
elif parts[3:6] == ["actions", "workflows", "mirrorcap-plan.yml"]:
    sha = dict(q.split("=", 1) for q in query.split("&"))["head_sha"]
    out = {"workflow_runs": [r for r in world.get("plan_runs", []) if r["head_sha"] == sha]}
elif parts[3:5] == ["actions", "workflows"]:
    seq = world["runs"]
    out = {"workflow_runs": seq[0]}
    if len(seq) > 1: world["runs"] = seq[1:]
elif parts[3] == "compare":
    out = {"commits": [{"sha": s} for s in world["compare"]]}
elif parts[3] == "commits" and parts[5] == "pulls":
    out = world.get("pulls", {}).get(parts[4], [])
elif parts[3:5] == ["actions", "artifacts"] and len(parts) == 5:
    name = dict(q.split("=", 1) for q in query.split("&"))["name"]
    out = {"artifacts": [a for a in world.get("artifacts", []) if a["name"] == name]}
elif parts[3:5] == ["actions", "artifacts"] and parts[-1] == "zip":
    a = next(a for a in world["artifacts"] if a["id"] == int(parts[5]))
    world_path.write_text(json.dumps(world))
    sys.stdout.buffer.write(Path(a["zip"]).read_bytes()); sys.exit(0)
else:
    print(f"fake gh: no route for {method} {url}", file=sys.stderr); sys.exit(1)
world_path.write_text(json.dumps(world))
text = json.dumps(out)
if jq:
    text = subprocess.run(["jq", "-r", jq], input=text, capture_output=True, text=True, check=True).stdout
else:
    text += "\n"
sys.stdout.write(text)
'''

# Plans served in order, one per `plan` (the last repeats); applies fail while TF_FAIL_APPLIES > applies so far.
FAKE_TERRAFORM = r'''#!/bin/bash
dir="${1#-chdir=}"
shift
echo "terraform $* (in $dir)" >> "$TF_LOG"
n=$(grep -c ' plan ' "$TF_LOG" || true)
case "$1" in
  init) echo "Terraform has been successfully initialized!" ;;
  plan) echo "planned" ; echo "$n" > "$dir/tfplan" ;;
  show)
    i=$(cat "$dir/tfplan")
    mapfile -t plans < <(tr ' ' '\n' <<< "$TF_PLANS")
    k=$(( i <= ${#plans[@]} ? i : ${#plans[@]} ))
    if [ "$2" = -json ]; then cat "${plans[$((k - 1))]}"; else echo "Terraform will perform the following actions: (plan $k)"; fi ;;
  apply)
    applies=$(grep -c ' apply ' "$TF_LOG")
    if [ "$applies" -le "${TF_FAIL_APPLIES:-0}" ]; then echo "Error: creating EC2 Instance: InvalidParameterValue: Invalid IAM Instance Profile name" >&2; exit 1; fi
    echo "Apply complete!" ;;
esac
'''

MIRRORCAP_SHIM = """#!{python}
# mirrorcap (the real app), and `check` answering $CHECK_JSON / $CHECK_RC (AWS stood in)
import os, sys
if sys.argv[1:2] == ["check"]:
    sys.stdout.write(open(os.environ["CHECK_JSON"]).read())
    sys.exit(int(os.environ.get("CHECK_RC", "0")))
from mirrorcap.cli import app
app(prog_name="mirrorcap")
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def plan_with(*changes: dict) -> dict:
    p = copy.deepcopy(PLAN)
    p["resource_changes"] = [*p["resource_changes"], *changes]
    return p


SESSION = next(rc for rc in PLAN["resource_changes"] if rc["change"]["actions"] == ["create"])


def session(eni: str, **after) -> dict:
    rc = copy.deepcopy(SESSION)
    rc["address"] = f'aws_ec2_traffic_mirror_session.source["{eni}"]'
    rc["index"] = eni
    rc["change"]["after"].update(network_interface_id=eni, **after)
    return rc


def volume_delete() -> dict:
    return {"address": "aws_ebs_volume.pcap_volume", "mode": "managed", "type": "aws_ebs_volume", "name": "pcap_volume",
            "action_reason": "delete_because_no_resource_config",
            "change": {"actions": ["delete"], "before": {"id": "vol-0123", "size": 300, "type": "st1"}, "after": None,
                       "after_unknown": {}, "before_sensitive": {}, "after_sensitive": False}}


@pytest.fixture
def gh_repo(tmp_path) -> dict:
    """A repository whose last commit (a merged pull request) adds one source to "prod", synthesized."""
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    repo.mkdir(), bin_.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "capture.hcl").write_text('capture "prod" {\n  region = "ap-northeast-1"\n}\n')
    (repo / "capture.lock.json").write_text((RECORDED / "lock-before.json").read_text())
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    before = git(repo, "rev-parse", "HEAD")
    (repo / "capture.hcl").write_text('capture "prod" {\n  region = "ap-northeast-1"\n  source {\n    eni_id = "eni-f18f144060cec27fd"\n  }\n}\n')
    (repo / "capture.lock.json").write_text((RECORDED / "lock-after.json").read_text())
    git(repo, "commit", "-q", "-am", "add a source (#7)")
    sha = git(repo, "rev-parse", "HEAD")
    return synthesized_runner(tmp_path, repo, bin_, sha, before,
                              {"provider": {"aws": [{"region": "ap-northeast-1"}]}, "terraform": {"backend": {"s3": {}}}})


def synthesized_runner(tmp_path, repo, bin_, sha: str, before: str, stack_json: dict) -> dict:
    """The repository synthesized as `stack_json` (stack "prod"), and an apply runner beside it: the fake
    terraform and gh on PATH, mirrorcap in the checkout's venv, the workflow's environment."""
    stack = repo / "cdktf.out" / "stacks" / "prod"
    stack.mkdir(parents=True)
    (stack / "cdk.tf.json").write_text(json.dumps(stack_json))
    (repo / "cdktf.out" / "manifest.json").write_text('{"stacks": {"prod": {"workingDirectory": "stacks/prod"}}}')
    (repo / ".venv" / "bin").mkdir(parents=True)
    for path, text in ((bin_ / "terraform", FAKE_TERRAFORM), (bin_ / "gh", FAKE_GH.replace("{python}", sys.executable)),
                       (repo / ".venv" / "bin" / "mirrorcap", MIRRORCAP_SHIM.format(python=sys.executable))):
        path.write_text(text)
        path.chmod(0o755)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"runs": [[]], "pulls": {}, "compare": [sha]}))
    (tmp_path / "tf.log").touch()
    return {"tmp": tmp_path, "repo": repo, "world": world, "sha": sha, "before": before, "plans": tmp_path / "plans",
            "env": {**env(), "PATH": f"{bin_}:{env()['PATH']}", "GH_WORLD": str(world), "GH_TOKEN": "x", "TF_LOG": str(tmp_path / "tf.log"),
                    "GITHUB_REPOSITORY": "o/r", "GITHUB_SHA": sha, "GITHUB_RUN_ID": "900", "GITHUB_RUN_NUMBER": "12",
                    "GITHUB_EVENT_NAME": "push", "RUNNER_TEMP": str(runner_temp), "BRANCH": "main", "BEFORE": before,
                    "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
                    "REVIEWED": str(runner_temp / "reviewed"), "RUN_URL": "https://github.example/o/r/actions/runs/900",
                    "POLL_SECONDS": "0", "WAIT_MINUTES": "1", "RETRY_SECONDS": "0"}}


def serve_plans(ctx: dict, *plans: dict) -> str:
    ctx["plans"].mkdir(exist_ok=True)
    paths = []
    for n, p in enumerate(plans):
        path = ctx["plans"] / f"{len(list(ctx['plans'].iterdir()))}-{n}.json"
        path.write_text(json.dumps(p))
        paths.append(str(path))
    return " ".join(paths)


def run_step(ctx: dict, workflow: str, job: str, title: str, **extra: str) -> subprocess.CompletedProcess:
    doc = load(workflow)
    s = step(workflow, job, title)
    e = {**{k: str(v) for k, v in doc.get("env", {}).items()}, **ctx["env"], **extra}  # the test's knobs win (no 30 s pauses)
    for k, v in (s.get("env") or {}).items():
        if "${{" not in str(v):
            e.setdefault(k, str(v))
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]], cwd=ctx["repo"], env=e,
                          capture_output=True, text=True, timeout=120)


def reviewed_in_pull_request(ctx: dict, plan: dict, *, labels: tuple[str, ...] = (), head: str = "a" * 40,
                             select: bool = False) -> subprocess.CompletedProcess:
    """The plan workflow's own step on the pull request's head: it writes review/reviewed/, which
    GitHub keeps as the artifact mirrorcap-reviewed-<head>. `select`: the stacks are the workflow's own
    selection step's (mirrorcap review stacks against the commit before), not "prod"."""
    repo = ctx["repo"]
    (repo / "review").mkdir(exist_ok=True)
    if select:
        r = run_step(ctx, "mirrorcap-plan.yml", "plan", "Select the stacks this pull request changes", BASE_SHA=ctx["before"])
        assert r.returncode == 0, r.stderr
    else:
        (repo / "review" / "stacks.json").write_text(json.dumps({"stacks": [
            {"name": "prod", "dir": "cdktf.out/stacks/prod", "region": "ap-northeast-1", "remote_state": True, "reasons": ["x"]}]}))
    r = run_step(ctx, "mirrorcap-plan.yml", "plan", "Plan each stack", TF_PLANS=serve_plans(ctx, plan), BASE_SHA=ctx["before"],
                 HEAD_SHA=head, PR="7", LABELS=json.dumps(list(labels)))
    zpath = ctx["tmp"] / f"artifact-{head}.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in (repo / "review" / "reviewed").rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(repo / "review" / "reviewed").as_posix())
    world = json.loads(ctx["world"].read_text())
    # GitHub's answers (shapes: tests/fixtures/github/): the plan workflow's passed run at the head, its record,
    # the pull request merged by the push's commit
    world["plan_runs"] = [{"id": 5005, "path": ".github/workflows/mirrorcap-plan.yml", "event": "pull_request", "head_sha": head,
                           "status": "completed", "conclusion": "success" if r.returncode == 0 else "failure",
                           "run_attempt": 1, "created_at": "2026-12-01T00:00:00Z",
                           "repository": {"full_name": "o/r"}, "head_repository": {"full_name": "o/r"}}]
    world["artifacts"] = [{"id": 55, "name": f"mirrorcap-reviewed-{head}", "expired": False, "created_at": "2026-12-01T00:00:00Z",
                           "workflow_run": {"id": 5005, "head_sha": head}, "zip": str(zpath)}]
    world["pulls"] = {ctx["sha"]: [{"number": 7, "merged_at": "2026-12-01T01:00:00Z", "merge_commit_sha": ctx["sha"],
                                    "base": {"ref": "main"}, "head": {"sha": head}, "labels": [{"name": n} for n in labels]}]}
    ctx["world"].write_text(json.dumps(world))
    shutil.rmtree(repo / "review")
    (ctx["tmp"] / "tf.log").write_text("")
    return r


APPLY_STEPS = ("Wait for earlier runs of this workflow (oldest first)", "Find the merged pull requests and the plans they reviewed",
               "Select the stacks this push changes", "Apply each stack, as reviewed")


def run_apply(ctx: dict, *fresh: dict, fail_applies: int = 0, **extra: str) -> dict:
    """The apply job's steps in order, as GitHub runs them (a failed step skips the rest but the report)."""
    out: dict = {"steps": {}}
    shutil.rmtree(ctx["repo"] / "review", ignore_errors=True)  # each run starts on a fresh runner
    for left in Path(ctx["env"]["RUNNER_TEMP"]).iterdir():
        shutil.rmtree(left) if left.is_dir() else left.unlink()
    (ctx["tmp"] / "output").unlink(missing_ok=True)
    (ctx["tmp"] / "tf.log").write_text("")
    plans = serve_plans(ctx, *fresh)
    for title in APPLY_STEPS:
        r = run_step(ctx, "mirrorcap-apply.yml", "apply", title, TF_PLANS=plans, TF_FAIL_APPLIES=str(fail_applies), **extra)
        out["steps"][title] = r
        if r.returncode != 0:
            break
        if title.startswith("Find"):
            outputs = dict(line.split("=", 1) for line in (ctx["tmp"] / "output").read_text().splitlines() if "=" in line) \
                if (ctx["tmp"] / "output").exists() else {}
            extra = {**extra, "PULLS": outputs.get("numbers", "")}
    out["report"] = run_step(ctx, "mirrorcap-apply.yml", "apply", "Report on the merged pull requests", **extra)
    world = json.loads(ctx["world"].read_text())
    out["comments"] = world.get("comments", [])
    out["calls"] = world.get("calls", [])
    out["terraform"] = (ctx["tmp"] / "tf.log").read_text().splitlines()
    results = ctx["repo"] / "review" / "results.tsv"
    out["results"] = results.read_text() if results.exists() else ""
    return out


def applies(out: dict) -> list[str]:
    return [line for line in out["terraform"] if " apply " in line]


# ---------------------------------------------------------------------------
# The apply workflow, run


def test_a_merge_applies_the_plan_its_pull_request_reviewed(gh_repo):
    r = reviewed_in_pull_request(gh_repo, PLAN)
    assert r.returncode == 0, r.stdout + r.stderr
    out = run_apply(gh_repo, PLAN)
    step_ = out["steps"]["Apply each stack, as reviewed"]
    assert step_.returncode == 0, step_.stdout + step_.stderr
    assert applies(out) == ["terraform apply -input=false -no-color -lock-timeout=300s tfplan (in cdktf.out/stacks/prod)"]
    assert out["results"] == "prod\tapplied\tmatches the reviewed plan\n"
    (comment,) = out["comments"]
    assert comment["pr"] == 7 and comment["body"].startswith(f"<!-- mirrorcap-apply:{gh_repo['sha']} -->")
    assert "all 1 stack(s) applied" in comment["body"] and "| `prod` | ✅ applied: matches the reviewed plan |" in comment["body"]
    assert "[The workflow run](https://github.example/o/r/actions/runs/900)" in comment["body"]


def test_a_fresh_plan_with_an_unreviewed_change_is_refused_and_said_so_on_the_pull_request(gh_repo):
    reviewed_in_pull_request(gh_repo, PLAN)
    extra = session("eni-0aaaaaaaaaaaaaaaa")  # e.g. a source merged by another pull request, planned here too
    out = run_apply(gh_repo, plan_with(extra))
    step_ = out["steps"]["Apply each stack, as reviewed"]
    assert step_.returncode == 1 and applies(out) == []
    assert out["results"].startswith("prod\trefused\trefused: the plan differs from the one reviewed in the pull request (1 change(s))")
    body = out["comments"][0]["body"]
    fp = reviewed.fingerprint(reviewed.normalize(plan_with(extra)))
    assert "**1 of 1 stack(s) not applied**" in body and "⛔ not applied (refused)" in body
    assert f'`{extra["address"]}`: create is not in the reviewed plan' in body
    assert f"approve `prod={fp}`" in body  # how to apply it anyway, by hand


def test_a_person_approves_a_refused_plan_by_its_fingerprint_in_a_run_by_hand(gh_repo):
    other = plan_with(session("eni-0aaaaaaaaaaaaaaaa"))
    fp = reviewed.fingerprint(reviewed.normalize(other))
    by_hand = {"GITHUB_EVENT_NAME": "workflow_dispatch"}
    out = run_apply(gh_repo, other, APPROVE="prod=sha256:" + "0" * 64, **by_hand)  # a stale approval: refused
    assert applies(out) == [] and "refused: no reviewed plan" in out["results"] and out["comments"] == []
    out = run_apply(gh_repo, other, APPROVE=f"prod={fp}", **by_hand)
    assert len(applies(out)) == 1 and out["results"] == f"prod\tapplied\tapproved by fingerprint {fp}\n"


def test_a_failed_apply_is_retried_with_what_is_left_of_the_reviewed_plan(gh_repo):
    two = plan_with(session("eni-0bbbbbbbbbbbbbbbb"))
    reviewed_in_pull_request(gh_repo, two)
    # the first apply fails halfway: one session created; the retry's plan holds the other, with a value
    # the reviewed plan showed as "(known after apply)" now known
    rest = plan_with()
    (left,) = [rc for rc in rest["resource_changes"] if rc["change"]["actions"] == ["create"]]
    left["change"]["after"]["packet_length"] = 8500
    del left["change"]["after_unknown"]["packet_length"]
    out = run_apply(gh_repo, two, rest, fail_applies=1)  # the created one is not in the state: not applied
    assert out["results"].startswith("prod\trefused\trefused: the plan differs")
    made = session("eni-0bbbbbbbbbbbbbbbb")  # as the state has it once created: every value known
    values = {**made["change"]["after"], **{k: "x" for k, v in made["change"]["after_unknown"].items() if v is True}}
    rest["prior_state"]["values"]["root_module"].setdefault("resources", []).append(
        {"address": made["address"], "mode": "managed", "type": made["type"], "index": made["index"], "values": values,
         "sensitive_values": {}})
    out = run_apply(gh_repo, two, rest, fail_applies=1)
    assert out["steps"]["Apply each stack, as reviewed"].returncode == 0
    assert len(applies(out)) == 2 and out["results"].startswith("prod\tapplied\tmatches the rest of the reviewed plan (1 change(s)")
    out = run_apply(gh_repo, two, fail_applies=99)  # failing every time: visibly failed, with Terraform's error
    assert out["steps"]["Apply each stack, as reviewed"].returncode == 1 and len(applies(out)) == 2
    body = out["comments"][-1]["body"]
    assert "❌ apply failed" in body and "Invalid IAM Instance Profile name" in body


def test_destroying_pcap_data_needs_the_label(gh_repo):
    destroying = plan_with(volume_delete())
    r = reviewed_in_pull_request(gh_repo, destroying)
    assert r.returncode == 1 and "::error title=destroys pcap data::stack prod" in r.stdout  # the pull request's check fails
    assert "A merge does not apply this plan** until the `mirrorcap:destroy-pcaps` label" in (gh_repo["tmp"] / "summary").read_text()
    out = run_apply(gh_repo, destroying)
    assert applies(out) == [] and "needs the mirrorcap:destroy-pcaps label" in out["results"]
    reviewed_in_pull_request(gh_repo, destroying, labels=(reviewed.DESTROY_LABEL,))
    out = run_apply(gh_repo, destroying)
    assert len(applies(out)) == 1 and "\tapplied\t" in out["results"]


def test_a_push_without_a_pull_request_applies_nothing_and_says_why(gh_repo):
    out = run_apply(gh_repo, PLAN)
    assert f"::warning title=no pull request::{gh_repo['sha']} reached main without a merged pull request" in \
        out["steps"][APPLY_STEPS[1]].stdout
    assert applies(out) == [] and "refused: no reviewed plan for this stack" in out["results"]
    assert out["comments"] == []  # no pull request to comment on: the run's summary and its failure say it
    assert "⛔ not applied (refused)" in (gh_repo["tmp"] / "summary").read_text()


def test_a_record_the_plan_workflow_did_not_pass_is_not_trusted(gh_repo):
    """The record's run concluded failure (or another workflow uploaded an artifact of that name): refused."""
    reviewed_in_pull_request(gh_repo, PLAN)
    world = json.loads(gh_repo["world"].read_text())
    world["plan_runs"][0]["conclusion"] = "failure"
    gh_repo["world"].write_text(json.dumps(world))
    out = run_apply(gh_repo, PLAN)
    assert "::warning title=no trusted reviewed plan::pull request #7: run 5005 (attempt 1)" in out["steps"][APPLY_STEPS[1]].stdout
    assert applies(out) == [] and "refused: no reviewed plan" in out["results"]
    world["plan_runs"][0].update(conclusion="success", path=".github/workflows/other.yml")
    gh_repo["world"].write_text(json.dumps(world))
    out = run_apply(gh_repo, PLAN)
    assert applies(out) == [] and "refused: no reviewed plan" in out["results"]


def test_a_push_of_several_pull_requests_applies_what_their_records_together_reviewed(gh_repo):
    """Two pull requests land in one push: each one's record is used, and the fresh plan (both changes) applies;
    with one record missing, the other pull request's change is refused."""
    other = session("eni-0bbbbbbbbbbbbbbbb")
    reviewed_in_pull_request(gh_repo, PLAN)
    first = json.loads(gh_repo["world"].read_text())
    reviewed_in_pull_request(gh_repo, {**PLAN, "resource_changes": [other]}, head="b" * 40)
    world = json.loads(gh_repo["world"].read_text())
    # the second pull request's run, record and merge commit beside the first one's
    world["plan_runs"] = first["plan_runs"] + [{**world["plan_runs"][0], "id": 5006}]
    world["artifacts"] = first["artifacts"] + [{**world["artifacts"][0], "id": 56, "workflow_run": {"id": 5006, "head_sha": "b" * 40}}]
    world["compare"] = [gh_repo["before"], gh_repo["sha"]]
    world["pulls"] = {gh_repo["sha"]: first["pulls"][gh_repo["sha"]],
                      gh_repo["before"]: [{**first["pulls"][gh_repo["sha"]][0], "number": 8, "merge_commit_sha": gh_repo["before"],
                                           "head": {"sha": "b" * 40}}]}
    gh_repo["world"].write_text(json.dumps(world))
    out = run_apply(gh_repo, plan_with(other))
    assert len(applies(out)) == 1 and out["results"] == "prod\tapplied\tmatches the 2 reviewed plans\n"
    assert sorted(c["pr"] for c in out["comments"]) == [7, 8]  # each merged pull request hears the result
    world["artifacts"] = first["artifacts"]
    gh_repo["world"].write_text(json.dumps(world))
    out = run_apply(gh_repo, plan_with(other))
    assert applies(out) == [] and out["results"].startswith("prod\trefused")


def jobs(applied: bool, not_run: str = "skipped") -> dict:
    """`GET /actions/runs/{id}/jobs` of a finished run of the apply workflow: its apply step run, or never started
    (`not_run`: its conclusion then: skipped after a failed step, cancelled with the run)."""
    started = "2026-12-01T01:00:00Z" if applied else None
    return {"total_count": 1, "jobs": [{"id": 1, "status": "completed", "conclusion": "success" if applied else "cancelled",
                                        "steps": [{"name": "Wait for earlier runs of this workflow (oldest first)", "status": "completed",
                                                   "conclusion": "success" if applied else "cancelled", "number": 1,
                                                   "started_at": "2026-12-01T00:00:00Z"},
                                                  {"name": "Apply each stack, as reviewed", "status": "completed",
                                                   "conclusion": "success" if applied else not_run, "number": 9,
                                                   "started_at": started}]}]}


def test_runs_queue_oldest_first_and_an_older_run_never_applies_after_a_newer_one(gh_repo):
    reviewed_in_pull_request(gh_repo, PLAN)
    world = json.loads(gh_repo["world"].read_text())
    earlier = {"id": 911, "run_number": 11, "status": "in_progress", "conclusion": None}
    world["runs"] = [[earlier, {"id": 912, "run_number": 12, "status": "in_progress"}]] * 3 + [[{**earlier, "status": "completed",
                                                                                                 "conclusion": "success"}]]
    gh_repo["world"].write_text(json.dumps(world))
    out = run_apply(gh_repo, PLAN)
    wait = out["steps"][APPLY_STEPS[0]]
    assert wait.returncode == 0 and wait.stdout.count("waiting for run(s) #11 of this workflow to end") == 3
    assert len(applies(out)) == 1
    # newer runs that ended before applying (cancelled in the queue, failed to set up): they do not block this one
    world = json.loads(gh_repo["world"].read_text())
    world["runs"] = [[{"id": 913, "run_number": 13, "status": "completed", "conclusion": "cancelled"},
                      {"id": 914, "run_number": 14, "status": "completed", "conclusion": "failure"}]]
    world["jobs"] = {"913": jobs(applied=False, not_run="cancelled"), "914": jobs(applied=False)}
    world["comments"] = []
    gh_repo["world"].write_text(json.dumps(world))
    out = run_apply(gh_repo, PLAN)
    assert out["steps"][APPLY_STEPS[0]].returncode == 0 and len(applies(out)) == 1
    # a re-run of an older run, after a newer one applied: applies nothing, and the pull request hears of it
    world = json.loads(gh_repo["world"].read_text())
    world["jobs"]["914"] = jobs(applied=True)
    world["comments"] = []
    gh_repo["world"].write_text(json.dumps(world))
    out = run_apply(gh_repo, PLAN)
    assert out["steps"][APPLY_STEPS[0]].returncode == 1 and "run(s) #14 of this workflow already applied" in out["steps"][APPLY_STEPS[0]].stdout
    assert applies(out) == [] and out["comments"] == []  # stopped before finding its pull request: the run says why


def test_the_queue_gives_up_visibly(gh_repo):
    world = json.loads(gh_repo["world"].read_text())
    world["runs"] = [[{"run_number": 3, "status": "queued"}]]
    gh_repo["world"].write_text(json.dumps(world))
    r = run_step(gh_repo, "mirrorcap-apply.yml", "apply", APPLY_STEPS[0], WAIT_MINUTES="0")
    assert r.returncode == 1 and "::error title=queue::still waiting for run(s) #3" in r.stdout


# ---------------------------------------------------------------------------
# The drift workflow, run


@pytest.mark.parametrize("check, tf_code, expected", [
    ({"drift": False, "findings": [], "fixed": {}}, 0, 0),
    ({"drift": False, "findings": [], "fixed": {}}, 2, 1),  # changed in the console: only Terraform sees it
    ({"drift": True, "findings": [{"capture": "prod", "kind": "missing-session", "subject": "eni-1", "detail": "gone",
                                   "fix": "make deploy STACK=prod"}], "fixed": {}}, 0, 1),
    ({"drift": False, "findings": [], "fixed": {}}, 1, 3),  # a plan that errors: could not check (reach) the account
])
def test_drift_reports_mirrorcap_check_and_terraform_plan(gh_repo, check, tf_code, expected):
    tf = gh_repo["tmp"] / "bin" / "terraform"
    tf.write_text(f"""#!/bin/bash
dir="${{1#-chdir=}}"; shift
case "$1" in
  plan) echo "  ~ resource \\"aws_security_group\\" \\"mirror_sg\\" (changed outside Terraform)"; exit {tf_code} ;;
  show) cat {gh_repo['tmp'] / 'drift-plan.json'} ;;
esac
""")
    changed = copy.deepcopy(PLAN)
    changed["resource_changes"] = [{"address": "aws_security_group.mirror_sg", "mode": "managed", "type": "aws_security_group",
                                    "change": {"actions": ["update"], "before": {"ingress": []}, "after": {"ingress": [1]}}}]
    (gh_repo["tmp"] / "drift-plan.json").write_text(json.dumps(changed))
    (gh_repo["tmp"] / "check.json").write_text(json.dumps(check))
    r = run_step(gh_repo, "mirrorcap-drift.yml", "check", "Check every capture against the account and its Terraform state",
                 CHECK_JSON=str(gh_repo["tmp"] / "check.json"), CHECK_RC="0")
    assert r.returncode == expected, r.stdout + r.stderr
    summary = (gh_repo["tmp"] / "summary").read_text()
    assert "## terraform plan:" in summary
    if tf_code == 2:
        assert "`prod`: **differs from the configuration**" in summary and "`~` update `aws_security_group.mirror_sg`" in summary
    if tf_code == 1:
        assert "`prod`: **could not plan** (exit 1)" in summary


def test_a_merge_group_is_planned_and_recorded_without_a_pull_request(gh_repo):
    """merge_group: no pull request number (the record's pr is null, no comment), the pcap-data gate left to each pull
    request's own check and the apply; the summary starts with the verdict."""
    repo = gh_repo["repo"]
    (repo / "review").mkdir()
    (repo / "review" / "stacks.json").write_text(json.dumps({"stacks": [
        {"name": "prod", "dir": "cdktf.out/stacks/prod", "region": "ap-northeast-1", "remote_state": True, "reasons": ["x"]}]}))
    r = run_step(gh_repo, "mirrorcap-plan.yml", "plan", "Plan each stack", TF_PLANS=serve_plans(gh_repo, plan_with(volume_delete())),
                 BASE_SHA=gh_repo["before"], HEAD_SHA=gh_repo["sha"], PR="", LABELS="null", GITHUB_EVENT_NAME="merge_group")
    assert r.returncode == 0, r.stdout + r.stderr
    record = json.loads((repo / "review" / "reviewed" / "prod" / "reviewed.json").read_text())
    assert record["pr"] is None and record["commit"] == gh_repo["sha"] and record["gated"] == ["aws_ebs_volume.pcap_volume"]
    summary = (gh_repo["tmp"] / "summary").read_text()
    assert summary.startswith("## mirrorcap plan: every stack planned\n\n- `prod`: planned\n")
    # the same plan on a pull request without the label: the check fails, and says so first
    r = run_step(gh_repo, "mirrorcap-plan.yml", "plan", "Plan each stack", TF_PLANS=serve_plans(gh_repo, plan_with(volume_delete())),
                 BASE_SHA=gh_repo["before"], HEAD_SHA=gh_repo["sha"], PR="7", LABELS="[]", GITHUB_EVENT_NAME="pull_request")
    assert r.returncode == 1
    summary = (gh_repo["tmp"] / "summary").read_text()
    assert "## mirrorcap plan: **failed**\n\n- `prod`: **destroys pcap data** without the mirrorcap:destroy-pcaps label\n" in summary
