"""The plan workflow's required check and the drift job's look at the apply's runs, their own
shell run for real (bash, git, jq) with a stand-in `gh` answering GitHub's REST shapes
(tests/fixtures/github/README.md):

- decide: which events plan (a change to what mirrorcap plans, the destroy label) and which do
  not (another label, a fork, nothing mirrorcap plans changed);
- verdict: the one required check: it passes only for "nothing to plan" and a passed plan; a
  failed, cancelled or skipped plan, a fork and a failed decision fail it; another label's run
  repeats the verdict of the commit's last run, waiting for it to finish;
- drift: a commit of the default branch changing what mirrorcap plans with no apply after it
  (a merge made with GITHUB_TOKEN starts no workflow) fails the run and says what to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, env

WF = ROOT / "workflows" / "github"


def load(name: str) -> dict:
    doc = yaml.safe_load((WF / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def the_step(workflow: str, job: str, name: str) -> dict:
    return next(s for s in load(workflow)["jobs"][job]["steps"] if s.get("name") == name)


FAKE_GH = r'''#!{python}
"""gh api: each URL prefix in $GH_ANSWERS answers its list of JSON answers in turn (the last repeats)."""
import json, os, subprocess, sys
from pathlib import Path
path = Path(os.environ["GH_ANSWERS"])
answers = json.loads(path.read_text())
args = sys.argv[2:]
jq = args[args.index("--jq") + 1] if "--jq" in args else None
url = next(a for a in args if a.startswith("repos/"))
with open(os.environ["GH_LOG"], "a") as log:
    log.write(url + "\n")
key = max((k for k in answers if url.startswith(k)), key=len)
seq = answers[key]
out = seq[0]
if len(seq) > 1:
    answers[key] = seq[1:]
    path.write_text(json.dumps(answers))
text = json.dumps(out)
if jq:
    text = subprocess.run(["jq", "-r", jq], input=text, capture_output=True, text=True, check=True).stdout
sys.stdout.write(text + ("" if jq else "\n"))
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def ctx(tmp_path) -> dict:
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    repo.mkdir(), bin_.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("x\n")
    (repo / "capture.hcl").write_text('capture "prod" {}\n')
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    (bin_ / "gh").write_text(FAKE_GH.replace("{python}", sys.executable))
    (bin_ / "gh").chmod(0o755)
    (tmp_path / "answers.json").write_text("{}")
    (tmp_path / "gh.log").touch()
    (tmp_path / "runner").mkdir()
    return {"tmp": tmp_path, "repo": repo, "base": git(repo, "rev-parse", "HEAD"),
            "env": {**env(), "PATH": f"{bin_}:{env()['PATH']}", "GH_ANSWERS": str(tmp_path / "answers.json"),
                    "GH_LOG": str(tmp_path / "gh.log"), "GH_TOKEN": "x", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "500",
                    "RUNNER_TEMP": str(tmp_path / "runner"), "GITHUB_OUTPUT": str(tmp_path / "output"),
                    "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"), "POLL_SECONDS": "0"}}


def run(ctx: dict, workflow: str, job: str, name: str, answers: dict | None = None, **extra: str) -> subprocess.CompletedProcess:
    s = the_step(workflow, job, name)
    e = {**{k: str(v) for k, v in load(workflow).get("env", {}).items()},
         **{k: str(v) for k, v in (s.get("env") or {}).items() if "${{" not in str(v)}, **ctx["env"], **extra}
    (ctx["tmp"] / "output").write_text("")
    (ctx["tmp"] / "summary").write_text("")
    if answers is not None:
        (ctx["tmp"] / "answers.json").write_text(json.dumps(answers))
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]], cwd=ctx["repo"], env=e,
                          capture_output=True, text=True, timeout=60)


def outputs(ctx: dict) -> dict:
    return dict(line.split("=", 1) for line in (ctx["tmp"] / "output").read_text().splitlines())


# ---------------------------------------------------------------------------
# decide


def decide(ctx: dict, **event: str) -> dict:
    base = {"EVENT": "pull_request", "ACTION": "synchronize", "LABEL": "", "HEAD_REPO": "o/r", "BASE_SHA": ctx["base"]}
    r = run(ctx, "mirrorcap-plan.yml", "decide", "Decide whether this event needs a plan", **{**base, **event})
    assert r.returncode == 0, r.stderr
    return outputs(ctx)


def test_decide_plans_a_change_to_what_mirrorcap_plans_and_nothing_else(ctx):
    repo = ctx["repo"]
    (repo / "README.md").write_text("y\n")
    git(repo, "commit", "-qam", "docs")
    assert decide(ctx) == {"plan": "false", "why": "nothing"}  # no `paths` filter: the check still reports
    (repo / "modules").mkdir()
    (repo / "modules" / "deep").mkdir()
    (repo / "modules" / "deep" / "x.py").write_text("")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "code")
    assert decide(ctx) == {"plan": "true", "why": "changed"}
    assert decide(ctx, EVENT="merge_group", ACTION="checks_requested", HEAD_REPO="") == {"plan": "true", "why": "changed"}
    # labels: only the destroy gate's plans again; another one never starts (or cancels) a plan
    assert decide(ctx, ACTION="labeled", LABEL="documentation") == {"plan": "false", "why": "label"}
    assert decide(ctx, ACTION="unlabeled", LABEL="mirrorcap:destroy-pcaps") == {"plan": "true", "why": "changed"}
    # a fork: GitHub gives its run no OIDC token
    assert decide(ctx, HEAD_REPO="mallory/r") == {"plan": "false", "why": "fork"}


def test_the_plan_job_alone_holds_the_concurrency_group():
    """A workflow-level group is claimed before any job's `if`: every label event would cancel a running plan."""
    doc = load("mirrorcap-plan.yml")
    assert "concurrency" not in doc
    assert doc["jobs"]["plan"]["if"] == "needs.decide.outputs.plan == 'true'"
    assert doc["jobs"]["plan"]["concurrency"]["cancel-in-progress"] is True
    assert set(doc["jobs"]) == {"decide", "plan", "verdict"}
    verdict = doc["jobs"]["verdict"]
    assert verdict["if"] == "always()" and verdict["needs"] == ["decide", "plan"]


# ---------------------------------------------------------------------------
# verdict

VERDICT = ("mirrorcap-plan.yml", "verdict", "The verdict")


def verdict(ctx: dict, answers: dict | None = None, **needs: str) -> subprocess.CompletedProcess:
    base = {"DECIDED": "success", "PLAN_NEEDED": "true", "WHY": "changed", "PLANNED": "success", "HEAD_SHA": "a" * 40}
    return run(ctx, *VERDICT, answers, **{**base, **needs})


@pytest.mark.parametrize("needs, code, said", [
    (dict(PLAN_NEEDED="false", WHY="nothing", PLANNED="skipped"), 0, "nothing mirrorcap plans changed"),
    (dict(PLANNED="success"), 0, "planned: every stack"),
    (dict(PLANNED="failure"), 1, "the plan failed, or destroys pcap data without the label"),
    (dict(PLANNED="cancelled"), 1, "the plan was cancelled"),
    (dict(PLANNED="skipped"), 1, "the plan did not run (skipped)"),
    (dict(DECIDED="failure", PLAN_NEEDED="", WHY="", PLANNED="skipped"), 1, "deciding whether to plan failure"),
    (dict(PLAN_NEEDED="false", WHY="fork", PLANNED="skipped"), 1, "a maintainer pushes its commits to a branch of this repository"),
])
def test_the_verdict_is_the_real_one(ctx, needs, code, said):
    r = verdict(ctx, **needs)
    assert r.returncode == code and said in r.stdout, r.stdout + r.stderr
    summary = (ctx["tmp"] / "summary").read_text()
    assert summary.startswith("### mirrorcap plan verdict: " + ("passed" if code == 0 else "**failed**")) and said in summary


def runs(*entries: tuple[int, str, str | None]) -> dict:
    """`GET .../workflows/{id}/runs`: the docs' shape, the fields the verdict reads."""
    return {"total_count": len(entries), "workflow_runs": [{"id": i, "status": st, "conclusion": c, "head_sha": "a" * 40,
                                                             "event": "pull_request"} for i, st, c in entries]}


def test_another_labels_run_repeats_the_last_verdict_of_the_commit(ctx):
    label = dict(PLAN_NEEDED="false", WHY="label", PLANNED="skipped")
    this = {"repos/o/r/actions/runs/500": [{"id": 500, "workflow_id": 77}]}
    failed = {**this, "repos/o/r/actions/workflows/77/runs": [runs((300, "completed", "failure"), (500, "in_progress", None))]}
    r = verdict(ctx, failed, **label)
    assert r.returncode == 1 and "run 300's verdict for this commit stands: failure" in r.stdout  # not turned green
    # the last run is still planning: wait for it, then repeat its verdict
    waiting = {**this, "repos/o/r/actions/workflows/77/runs": [runs((300, "in_progress", None)), runs((300, "in_progress", None)),
                                                                 runs((300, "completed", "success"))]}
    r = verdict(ctx, waiting, **label)
    assert r.returncode == 0 and r.stdout.count("waiting for run 300") == 2 and "stands: passed" in r.stdout
    # no earlier run of the commit at all
    r = verdict(ctx, {**this, "repos/o/r/actions/workflows/77/runs": [runs((500, "in_progress", None))]}, **label)
    assert r.returncode == 1 and "a label changed before any plan of this commit" in r.stdout


# ---------------------------------------------------------------------------
# drift: merged, never applied

NEVER = ("mirrorcap-drift.yml", "check", "Find commits whose apply never ran")


def applies(*entries: tuple[str, str]) -> dict:
    return {"repos/o/r/actions/workflows/mirrorcap-apply.yml/runs": [{"total_count": len(entries), "workflow_runs": [
        {"id": n, "head_sha": sha, "status": st, "conclusion": "success" if st == "completed" else None,
         "created_at": f"2026-12-0{n}T00:00:00Z", "event": "push"} for n, (sha, st) in enumerate(entries, 1)]}]}


def test_drift_names_commits_no_apply_ran_for(ctx):
    repo = ctx["repo"]
    (repo / "README.md").write_text("docs only\n")
    git(repo, "commit", "-qam", "docs")
    r = run(ctx, *NEVER, applies((ctx["base"], "completed")), BRANCH="main")
    assert r.returncode == 0 and "was applied" in r.stdout  # nothing mirrorcap plans changed since
    (repo / "capture.hcl").write_text('capture "prod" {\n  region = "eu-west-1"\n}\n')
    git(repo, "commit", "-qam", "merged by a bot with GITHUB_TOKEN")
    merged = git(repo, "rev-parse", "HEAD")
    r = run(ctx, *NEVER, applies((ctx["base"], "completed")), BRANCH="main")
    assert r.returncode == 1 and f"1 commit(s) of main after the last apply ({ctx['base'][:12]})" in r.stdout
    assert merged in r.stdout and "Run the apply workflow by hand (workflow_dispatch)" in r.stdout
    assert "## Merged, never applied" in (ctx["tmp"] / "summary").read_text()
    # an apply at that commit: nothing to say; one still running: not yet
    assert run(ctx, *NEVER, applies((ctx["base"], "completed"), (merged, "completed")), BRANCH="main").returncode == 0
    r = run(ctx, *NEVER, applies((ctx["base"], "completed"), (merged, "queued")), BRANCH="main")
    assert r.returncode == 0 and "an apply is queued or running" in r.stdout


def test_drift_and_the_apply_watch_the_same_paths():
    apply_paths = [p.replace("**", "*") for p in load("mirrorcap-apply.yml")["on"]["push"]["paths"]]
    drift = the_step(*NEVER)["env"]["APPLY_PATHS"].splitlines()
    assert sorted(drift) == sorted(apply_paths)
