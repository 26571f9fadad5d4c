"""The shipped GitHub Actions workflows (workflows/github/): actionlint (with
shellcheck over every `run:` script), and agreement with mirrorcap itself: the
commands and options they call exist, and their `paths` filters cover every
file that `mirrorcap review stacks` plans a stack for; and the plan workflow's
own shell, run with stand-ins for terraform and gh: one comment per stack,
updated (found by its marker) on the next push, never duplicated.

actionlint comes from the dev extras (a PyPI wheel carrying the binary) and is
required, not optional: a workflow that is not linted is not shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml

from helpers import BIN, ROOT, env, mirrorcap
from mirrorcap.workflow.sessions import lock_path
from mirrorcap.workflow.stacks import EVERY_STACK
from mirrorcap.cli import app

WORKFLOWS = sorted((ROOT / "workflows" / "github").glob("*.yml"))
ACTIONLINT = next((str(p) for p in (BIN / "actionlint",) if p.exists()), None) or shutil.which("actionlint")
SHELLCHECK = shutil.which("shellcheck")


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    if ACTIONLINT is None:
        pytest.fail("actionlint is not installed: it comes with the dev extras (`make setup`; the actionlint wheel in "
                    "pyproject.toml's [dev])")
    args = [ACTIONLINT, "-no-color", *(["-shellcheck", SHELLCHECK] if SHELLCHECK else ["-shellcheck="])]
    return subprocess.run([*args, *map(str, files)], capture_output=True, text=True, timeout=120)


def test_the_three_workflows_are_shipped():
    assert [p.name for p in WORKFLOWS] == ["mirrorcap-apply.yml", "mirrorcap-drift.yml", "mirrorcap-plan.yml"]


def test_actionlint_and_shellcheck_pass():
    r = actionlint(*WORKFLOWS)
    assert r.returncode == 0, r.stdout + r.stderr
    if not SHELLCHECK:
        pytest.xfail("actionlint passed, but without shellcheck (tools/host-packages.sh installs it): run: scripts unchecked")


def test_actionlint_fails_a_broken_copy(tmp_path):
    """The linter is really looking: a bad expression and, with shellcheck, an unquoted variable fail."""
    plan = (ROOT / "workflows" / "github" / "mirrorcap-plan.yml").read_text()
    broken = tmp_path / "broken.yml"
    broken.write_text(plan.replace("${{ github.event.pull_request.base.sha ||", "${{ github.event.pull_request.base.sha( ||", 1))
    r = actionlint(broken)
    assert r.returncode == 1 and "broken.yml" in r.stdout, r.stdout
    if SHELLCHECK:
        broken.write_text(plan.replace('show_log "$out/plan.log"', "show_log $out/plan.log", 1))
        r = actionlint(broken)
        assert r.returncode == 1 and "SC2086" in r.stdout, r.stdout


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def wanted_paths(inventory: str, star: str) -> list[str]:
    return [inventory, lock_path(inventory), "rendered/" + star,
            *(p + star if p.endswith("/") else p + "*.yml" if p.endswith("-") else p for p, _ in EVERY_STACK)]


def test_paths_cover_every_path_review_plans_a_stack_for():
    """The apply's `paths` filter and the plan's decide job list the same paths, those mirrorcap review stacks
    plans for. The plan workflow itself has no `paths` filter: a required check that a filter skips stays
    "Expected" forever (docs/workflow.md)."""
    apply, plan = (load(ROOT / "workflows" / "github" / n) for n in ("mirrorcap-apply.yml", "mirrorcap-plan.yml"))
    inventory = apply["env"]["MIRRORCAP_INVENTORY"]
    assert sorted(apply["on"]["push"]["paths"]) == sorted(wanted_paths(inventory, "**"))
    assert "paths" not in plan["on"]["pull_request"] and set(plan["on"]) == {"pull_request", "merge_group"}
    decide = next(s for s in plan["jobs"]["decide"]["steps"] if s.get("id") == "decide")
    assert sorted(decide["env"]["PLAN_PATHS"].splitlines()) == sorted(wanted_paths(plan["env"]["MIRRORCAP_INVENTORY"], "*"))


def test_roles_and_permissions_are_split_as_documented():
    plan, apply, drift = (load(ROOT / "workflows" / "github" / f"mirrorcap-{n}.yml") for n in ("plan", "apply", "drift"))
    text = {n: (ROOT / "workflows" / "github" / f"mirrorcap-{n}.yml").read_text() for n in ("plan", "apply", "drift")}
    assert "vars.MIRRORCAP_PLAN_ROLE_ARN" in text["plan"] and "APPLY_ROLE" not in text["plan"]
    assert "vars.MIRRORCAP_APPLY_ROLE_ARN" in text["apply"] and "PLAN_ROLE" not in text["apply"]
    assert "vars.MIRRORCAP_PLAN_ROLE_ARN" in text["drift"] and "APPLY_ROLE" not in text["drift"]
    for doc, name in ((plan, "plan"), (apply, "apply"), (drift, "check")):
        assert doc["permissions"] == {}  # nothing by default; each job asks for what it uses
        job = doc["jobs"][name]
        assert job["permissions"]["id-token"] == "write" and job["permissions"]["contents"] == "read"
    assert plan["jobs"]["plan"]["permissions"]["pull-requests"] == "write"
    # the plan's other jobs: no AWS, no writes
    assert plan["jobs"]["decide"]["permissions"] == {"contents": "read"}
    assert plan["jobs"]["verdict"]["permissions"] == {"actions": "read"}
    # the apply: no concurrency group (it would cancel waiting runs: test_workflow_apply.py), the queue and
    # the reviewed plans read with actions: read, the result commented on the merged pull request
    assert apply["jobs"]["apply"]["permissions"] == {"contents": "read", "id-token": "write", "actions": "read",
                                                     "pull-requests": "write"}
    assert drift["jobs"]["check"]["permissions"] == {"contents": "read", "id-token": "write", "actions": "read"}
    for name, t in text.items():  # third-party actions by full commit SHA
        for ref in re.findall(r"uses: ([^\s#]+)", t):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w.-]+)*@[0-9a-f]{40}", ref), f"{name}: {ref} is not pinned to a commit"


def review_commands() -> click.Group:
    return typer.main.get_command(app).commands["review"]


def test_every_mirrorcap_command_and_option_the_workflows_run_exists():
    group = review_commands()
    top: set[str] = set()
    for path in WORKFLOWS:
        text = path.read_text().replace("\\\n", " ")
        for m in re.finditer(r"\.venv/bin/mirrorcap ([a-z-]+)(?: ([a-z-]+))?([^\n|>]*)", text):
            cmd, sub, rest = m.groups()
            if cmd != "review":
                top.add(cmd)
                continue
            assert sub in group.commands, f"{path.name}: mirrorcap review {sub} does not exist"
            known = {o for p in group.commands[sub].params for o in p.opts}
            used = set(re.findall(r"(?<![\w-])(--[a-z-]+)", rest))
            assert used <= known, f"{path.name}: mirrorcap review {sub}: unknown {sorted(used - known)}"
        # arguments built in an array (args=(...), args+=(...)) go to the one review command given "${args[@]}"
        fed = set(re.findall(r'mirrorcap review ([a-z-]+) "\$\{args\[@\]\}"', text))
        arrays = re.findall(r"args\+?=\(([^)]*)\)", text)
        assert len(fed) == (1 if arrays else 0), f"{path.name}: {fed}"
        for args in arrays:
            (sub,) = fed
            known = {o for p in group.commands[sub].params for o in p.opts}
            used = set(re.findall(r"(?<![\w-])(--[a-z-]+)", args))
            assert used and used <= known, f"{path.name}: mirrorcap review {sub}: unknown {sorted(used - known)}"
    assert top == {"validate", "sessions", "render", "check"}
    for cmd in sorted(top):
        r = mirrorcap(cmd, "--help", cwd=ROOT)
        assert r.returncode == 0, f"mirrorcap {cmd}: {r.stderr}"
    assert "--check" in mirrorcap("sessions", "--help", cwd=ROOT).stdout and "--json" in mirrorcap("check", "--help", cwd=ROOT).stdout


# ---------------------------------------------------------------------------
# The plan workflow's own shell, run: select, plan, post. Terraform and the gh
# CLI are stand-ins (the recorded real plan; a log of API calls); everything
# else (git, jq, bash, mirrorcap review) is real.

RECORDED = ROOT / "tests" / "fixtures" / "review"
NEW = (RECORDED / "new-source.txt").read_text().strip()

TERRAFORM_STUB = f"""#!/bin/bash
case "$2" in
  show) if [ "$3" = -json ]; then cat {RECORDED / 'plan.json'}; else cat {RECORDED / 'plan.txt'}; fi ;;
  *) echo "terraform $*" ;;
esac
"""
GH_STUB = """#!/bin/bash
# the API calls, one a line; the pull request's earlier comments (stack<TAB>id) from $EXISTING
n=$(wc -l < "$GH_LOG")
for a in "$@"; do case "$a" in body=@*) cp "${a#body=@}" "$GH_LOG.body$n" ;; esac; done
args="$*"
echo "${args//$'\n'/ }" >> "$GH_LOG"
if [[ " $* " == *" --paginate "* ]]; then printf '%b' "$EXISTING"; fi
"""
MIRRORCAP_SHIM = """#!{python}
# `mirrorcap`, the real app
from mirrorcap.cli import app
app(prog_name="mirrorcap")
"""


def script(workflow: str, job: str, step: str) -> str:
    steps = load(ROOT / "workflows" / "github" / workflow)["jobs"][job]["steps"]
    return next(s["run"] for s in steps if s.get("name") == step)


@pytest.fixture
def pull_request(tmp_path) -> dict:
    """A repository whose pull request adds one source to capture "prod", synthesized (cdktf.out as the synth lays it out)."""
    repo, bin_ = tmp_path / "repo", tmp_path / "bin"
    repo.mkdir(), bin_.mkdir()
    run = lambda *a: subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *a], cwd=repo, check=True,
                                    capture_output=True, text=True).stdout.strip()
    run("init", "-q")
    (repo / "capture.hcl").write_text('capture "prod" {\n  region = "ap-northeast-1"\n}\n')
    (repo / "capture.lock.json").write_text((RECORDED / "lock-before.json").read_text())
    run("add", ".")
    run("commit", "-q", "-m", "base")
    base = run("rev-parse", "HEAD")
    (repo / "capture.hcl").write_text(f'capture "prod" {{\n  region = "ap-northeast-1"\n  source {{\n    eni_id = "{NEW}"\n  }}\n}}\n')
    (repo / "capture.lock.json").write_text((RECORDED / "lock-after.json").read_text())
    run("commit", "-q", "-am", "add a source")
    stack = repo / "cdktf.out" / "stacks" / "prod"
    stack.mkdir(parents=True)
    (stack / "cdk.tf.json").write_text('{"provider": {"aws": [{"region": "ap-northeast-1"}]}, "terraform": {"backend": {"s3": {}}}}')
    (repo / "cdktf.out" / "manifest.json").write_text('{"stacks": {"prod": {"workingDirectory": "stacks/prod"}}}')
    (repo / ".venv" / "bin").mkdir(parents=True)
    for path, text in ((bin_ / "terraform", TERRAFORM_STUB), (bin_ / "gh", GH_STUB),
                       (repo / ".venv" / "bin" / "mirrorcap", MIRRORCAP_SHIM.format(python=sys.executable))):
        path.write_text(text)
        path.chmod(0o755)
    log = tmp_path / "gh.log"
    log.touch()
    return {"repo": repo, "log": log, "env": {**env(), "PATH": f"{bin_}:{env()['PATH']}", "MIRRORCAP_INVENTORY": "capture.hcl",
            "BASE_SHA": base, "HEAD_SHA": "f" * 40, "PR": "7", "GITHUB_REPOSITORY": "o/r", "GH_TOKEN": "x", "GH_LOG": str(log),
            "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}}


def run_plan_workflow(pr: dict, existing: str) -> list[str]:
    for step in ("Select the stacks this pull request changes", "Plan each stack", "Post or update one comment per stack"):
        r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script("mirrorcap-plan.yml", "plan", step)],
                           cwd=pr["repo"], env={**pr["env"], "EXISTING": existing}, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{step}:\n{r.stdout}\n{r.stderr}"
    return pr["log"].read_text().splitlines()


def test_plan_workflow_posts_one_comment_then_updates_it(pull_request):
    calls = run_plan_workflow(pull_request, existing="")
    writes = [c for c in calls if "--paginate" not in c]
    assert writes == ["api --method POST repos/o/r/issues/7/comments -F body=@review/prod/comment.md"]
    body = (pull_request["log"].parent / "gh.log.body1").read_text()
    assert body.startswith("<!-- mirrorcap-review:prod -->") and f"- `{NEW}` web-3: new session 1\n" in body
    assert "**Plan: 1 to add, 0 to change, 0 to destroy.**" in body

    # The next push: the comment found by its marker is updated, and a stack this push
    # no longer changes gets "no longer changes" instead of its stale plan.
    pull_request["log"].write_text("")
    calls = run_plan_workflow(pull_request, existing="prod\\t11\\nold\\t12\\n")
    writes = [c for c in calls if "--paginate" not in c]
    assert writes == ["api --method PATCH repos/o/r/issues/comments/11 -F body=@review/prod/comment.md",
                      "api --method PATCH repos/o/r/issues/comments/12 -F body=@review/unaffected-old.md"]
    assert "no longer changes stack `old`" in (pull_request["log"].parent / "gh.log.body2").read_text()


def test_terraforms_log_is_shown_with_workflow_commands_off(pull_request):
    """A value in a plan log that starts a line with "::" (a heredoc in Terraform's output) must not be read by the
    runner as a workflow command: the log is printed between ::stop-commands::<token> and ::<token>::."""
    stub = pull_request["repo"].parent / "bin" / "terraform"
    stub.write_text(TERRAFORM_STUB.replace('*) echo "terraform $*" ;;', '*) echo "terraform $*"; echo "::error::injected by a value" ;;'))
    run_plan_workflow(pull_request, existing="")
    r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script("mirrorcap-plan.yml", "plan", "Plan each stack")],
                       cwd=pull_request["repo"], env={**pull_request["env"], "EXISTING": ""}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    hits = [i for i, line in enumerate(lines) if line == "::error::injected by a value"]
    assert hits
    for i in hits:
        stops = [j for j in range(i) if lines[j].startswith("::stop-commands::")]
        assert stops, lines
        token = lines[stops[-1]].removeprefix("::stop-commands::")
        assert len(token) == 32 and f"::{token}::" not in lines[stops[-1]:i]  # still off at the injected line
        assert f"::{token}::" in lines[i:]  # and on again after the log


def test_dependabot_watches_every_pin():
    """workflows/dependabot.yml (copied to .github/dependabot.yml): uv for pyproject.toml + uv.lock and for the
    uv-compiled tool requirements, npm for the cdktn CLI's lock, GitHub Actions for the SHA pins; cdktn on PyPI
    and cdktn-cli on npm in one multi-ecosystem group; every path it names exists here."""
    doc = yaml.safe_load((ROOT / "workflows" / "dependabot.yml").read_text())
    assert doc["version"] == 2
    updates = doc["updates"]
    assert sorted(u["package-ecosystem"] for u in updates) == ["github-actions", "npm", "uv", "uv"]
    root_uv = next(u for u in updates if u["package-ecosystem"] == "uv" and u.get("directory") == "/")
    assert (ROOT / "pyproject.toml").is_file() and (ROOT / "uv.lock").is_file()
    tools_uv = next(u for u in updates if u["package-ecosystem"] == "uv" and "directories" in u)
    assert sorted(tools_uv["directories"]) == ["/tools/checkov", "/tools/uv"]
    assert all((ROOT / d.strip("/") / "requirements.txt").is_file() for d in tools_uv["directories"])
    npm = next(u for u in updates if u["package-ecosystem"] == "npm")
    assert (ROOT / npm["directory"].strip("/") / "package.json").is_file()
    assert (ROOT / npm["directory"].strip("/") / "package-lock.json").is_file()
    assert next(u for u in updates if u["package-ecosystem"] == "github-actions")["directory"] == "/"
    # One pull request moves cdktn on both registries.
    assert set(doc["multi-ecosystem-groups"]) == {"cdktn"}
    assert root_uv["multi-ecosystem-group"] == npm["multi-ecosystem-group"] == "cdktn"
    assert "cdktn" in root_uv["patterns"] and npm["patterns"] == ["cdktn-cli"]
    package = (ROOT / "tools" / "package.json").read_text()
    assert '"cdktn-cli"' in package
    pinned = " ".join((ROOT / "pyproject.toml").read_text().split())
    assert all(f'"{name}==' in pinned for name in root_uv["patterns"] if name != "jsii")
    for u in updates:
        assert u.get("schedule", doc["multi-ecosystem-groups"].get(u.get("multi-ecosystem-group"), {}).get("schedule"))
    for path in WORKFLOWS:  # a SHA pin Dependabot can move carries its tag
        for line in path.read_text().splitlines():
            if re.search(r"uses: \S+@[0-9a-f]{40}", line):
                assert re.search(r"# v\d+\.\d+\.\d+$", line), f"{path.name}: {line.strip()}"
    assert "cp workflows/dependabot.yml .github/dependabot.yml" in (ROOT / "workflows" / "README.md").read_text()
