"""The shipped GitHub Actions workflows (workflows/github/): actionlint (with
shellcheck over every `run:` script), and agreement with mirrorcap itself: the
commands and options they call exist, and their `paths` filters cover every
file that `mirrorcap review stacks` plans a stack for.

actionlint comes from the dev extras (a PyPI wheel carrying the binary) and is
required, not optional: a workflow that is not linted is not shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import typer
import yaml

from helpers import BIN, ROOT, mirrorcap
from mirrorcap.workflow import review
from mirrorcap.workflow.command import review_app

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
    broken.write_text(plan.replace("${{ github.event.pull_request.base.sha }}", "${{ github.event.pull_request.base.sha( }}", 1))
    r = actionlint(broken)
    assert r.returncode == 1 and "broken.yml" in r.stdout, r.stdout
    if SHELLCHECK:
        broken.write_text(plan.replace('cat "$out/plan.log"', "cat $out/plan.log", 1))
        r = actionlint(broken)
        assert r.returncode == 1 and "SC2086" in r.stdout, r.stdout


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


@pytest.mark.parametrize("name", ["mirrorcap-plan.yml", "mirrorcap-apply.yml"])
def test_paths_filters_cover_every_path_review_plans_a_stack_for(name):
    doc = load(ROOT / "workflows" / "github" / name)
    event = "pull_request" if "plan" in name else "push"
    filters = doc["on"][event]["paths"]
    inventory = doc["env"]["MIRRORCAP_INVENTORY"]
    wanted = [inventory, review.lock_path(inventory), "rendered/**",
              *(p + "**" if p.endswith("/") else p + "*.yml" if p.endswith("-") else p for p, _ in review.EVERY_STACK)]
    assert sorted(filters) == sorted(wanted)


def test_roles_and_permissions_are_split_as_documented():
    plan, apply, drift = (load(ROOT / "workflows" / "github" / f"mirrorcap-{n}.yml") for n in ("plan", "apply", "drift"))
    text = {n: (ROOT / "workflows" / "github" / f"mirrorcap-{n}.yml").read_text() for n in ("plan", "apply", "drift")}
    assert "vars.MIRRORCAP_PLAN_ROLE_ARN" in text["plan"] and "APPLY_ROLE" not in text["plan"]
    assert "vars.MIRRORCAP_APPLY_ROLE_ARN" in text["apply"] and "PLAN_ROLE" not in text["apply"]
    assert "vars.MIRRORCAP_PLAN_ROLE_ARN" in text["drift"] and "APPLY_ROLE" not in text["drift"]
    for doc in (plan, apply, drift):
        assert doc["permissions"] == {}  # nothing by default; each job asks for what it uses
        (job,) = doc["jobs"].values()
        assert job["permissions"]["id-token"] == "write" and job["permissions"]["contents"] == "read"
    assert plan["jobs"]["plan"]["permissions"]["pull-requests"] == "write"
    assert apply["concurrency"] == {"group": "mirrorcap-apply", "cancel-in-progress": False}
    for name, t in text.items():  # third-party actions by full commit SHA
        for ref in re.findall(r"uses: ([^\s#]+)", t):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{name}: {ref} is not pinned to a commit"


def review_commands() -> click.Group:
    root = typer.Typer()
    root.add_typer(review_app, name="review")

    @root.callback()
    def main() -> None:
        """test app"""
    return typer.main.get_command(root).commands["review"]


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
        for args in re.findall(r"args\+?=\(([^)]*)\)", text):  # the plan workflow builds `review comment`'s arguments
            known = {o for p in group.commands["comment"].params for o in p.opts}
            used = set(re.findall(r"(?<![\w-])(--[a-z-]+)", args))
            assert used and used <= known, f"{path.name}: mirrorcap review comment: unknown {sorted(used - known)}"
    assert top == {"validate", "sessions", "render", "check"}
    for cmd in sorted(top):
        r = mirrorcap(cmd, "--help", cwd=ROOT)
        assert r.returncode == 0, f"mirrorcap {cmd}: {r.stderr}"
    assert "--check" in mirrorcap("sessions", "--help", cwd=ROOT).stdout and "--json" in mirrorcap("check", "--help", cwd=ROOT).stdout
