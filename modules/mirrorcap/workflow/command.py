"""`mirrorcap review ...`: the workflow's steps that are mirrorcap's own. Thin:
read files, call review.py, print. Wired into the CLI as a Typer sub-app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer

from ..errors import MirrorcapError, Problem
from . import review

review_app = typer.Typer(help="Plan review for pull requests, apply and drift workflows (workflows/github/).",
                         no_args_is_help=True)

ChangedOpt = typer.Option(..., "--changed", help="file listing the changed paths, one per line, repository-relative "
                          "(`git diff --name-only --no-renames BASE HEAD`: a move lists both paths); - for standard input")
InventoryOpt = typer.Option("capture.hcl", "--inventory", "-i", help="inventory file (HCL)", envvar="MIRRORCAP_INVENTORY")


def _fail(exc: MirrorcapError) -> None:
    print(f"mirrorcap: {exc}", file=sys.stderr)
    raise typer.Exit(1)


def _read(path: Path, what: str, fix: str) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MirrorcapError([Problem(str(path), "", f"cannot read the {what}: {exc}", fix)])


def _git(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True)
    except OSError as exc:
        raise MirrorcapError([Problem("--base", "", f"cannot run git: {exc}", "install git, or leave out --base")])


def _at_base(base: str, path: Path) -> str:
    """`path` (relative to the working directory) as it was at `base`; "" where it did not exist."""
    shown = _git("show", f"{base}:./{path.as_posix()}")
    return shown.stdout if shown.returncode == 0 else ""


def _repo_relative(path: Path) -> str:
    prefix = _git("rev-parse", "--show-prefix")
    return (prefix.stdout.strip() if prefix.returncode == 0 else "") + path.as_posix()


def synthesized(out: Path) -> dict[str, dict]:
    """Every stack `make synth` wrote, from cdktn's manifest: its directory, region and state backend."""
    manifest_path = out / "manifest.json"
    fix = "run `make synth` first (it writes cdktf.out/), or pass --out the synth output directory"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        stacks = manifest["stacks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MirrorcapError([Problem(str(manifest_path), "stacks", f"no synthesized stacks: {exc}", fix)])
    info = {}
    for name, stack in stacks.items():
        directory = out / stack["workingDirectory"]
        try:
            doc = json.loads((directory / "cdk.tf.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MirrorcapError([Problem(str(directory / "cdk.tf.json"), "", f"unreadable: {exc}", fix)])
        backend = doc.get("terraform", {}).get("backend") or {}
        providers = doc.get("provider", {}).get("aws") or [{}]
        info[name] = {"name": name, "dir": directory.as_posix(), "region": providers[0].get("region"),
                      "remote_state": bool(set(backend) - {"local"})}
    return info


@review_app.command()
def stacks(
    changed: Path = ChangedOpt,
    base: str = typer.Option(None, "--base", help="git revision the change is compared with (the pull request's base, "
                             "the commit before a push): the inventory and lock there tell which captures changed"),
    inventory: Path = InventoryOpt,
    out: Path = typer.Option(Path("cdktf.out"), "--out", help="the synth output directory (make synth)"),
    require_remote_state: bool = typer.Option(False, "--require-remote-state",
                                              help="exit 1 when a selected stack keeps local state (apply from CI)"),
) -> None:
    """Which synthesized stacks a change needs planned, as JSON: {"stacks": [{name, dir, region, remote_state, reasons}], "removed": [...]}."""
    try:
        paths = _read(changed, "changed-file list", "pass a file of paths, one per line").splitlines()
        known = synthesized(out)
        lock = Path(review.lock_path(str(inventory)))
        inv_after = _read(inventory, "inventory", "pass --inventory the inventory file")
        lock_after = review.parse_lock(lock.read_text(encoding="utf-8") if lock.exists() else "", str(lock))
        inv_before = lock_before = None
        if base is not None:
            if _git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode != 0:
                raise MirrorcapError([Problem("--base", "", f"{base!r} is not a commit of this repository",
                                              "fetch the history first (actions/checkout with fetch-depth: 0), or pass a commit SHA")])
            inv_before = _at_base(base, inventory)
            lock_before = review.parse_lock(_at_base(base, lock), f"{lock} at {base}")
        selection = review.select_stacks(paths, list(known), inventory=_repo_relative(inventory) if base else str(inventory),
                                         inventory_before=inv_before, inventory_after=inv_after,
                                         lock_before=lock_before, lock_after=lock_after)
        chosen = [{**known[n], "reasons": why} for n, why in selection.stacks.items()]
        local = [s["name"] for s in chosen if not s["remote_state"]]
        if require_remote_state and local:
            raise MirrorcapError([Problem(str(inventory), f'capture "{n}" > backend', "keeps its Terraform state on the runner, "
                                          "which forgets it after every run (the next apply would create everything again)",
                                          'declare backend "s3" { bucket = "..." } in the capture block') for n in local])
    except MirrorcapError as exc:
        _fail(exc)
    print(json.dumps({"stacks": chosen, "removed": [{"name": n, "advice": a} for n, a in selection.removed.items()]}, indent=2))


@review_app.command()
def comment(
    stack: str = typer.Option(..., "--stack", help="the stack (capture name)"),
    plan_json: Path = typer.Option(None, "--plan-json", help="`terraform show -json tfplan` output; leave out when the plan failed"),
    plan_text: Path = typer.Option(None, "--plan-text", help="`terraform show -no-color tfplan` output, or the failed plan's log"),
    lock_before: Path = typer.Option(None, "--lock-before", help="the lock file at the base (an empty file where there was none)"),
    lock_after: Path = typer.Option(None, "--lock-after", help="the lock file of this change"),
    commit: str = typer.Option(None, "--commit", help="the commit planned, shown in the heading"),
    local_state: bool = typer.Option(False, "--local-state", help="warn that the stack keeps local state"),
    unaffected: bool = typer.Option(False, "--unaffected", help="the comment for a stack this change no longer touches"),
    removed: bool = typer.Option(False, "--removed", help="the warning for a capture removed from the inventory"),
    inventory: Path = InventoryOpt,
) -> None:
    """The pull-request comment for one stack (Markdown, starting with its hidden marker)."""
    if unaffected or removed:
        print(review.unaffected_comment(stack, commit) if unaffected else review.removed_comment(stack, str(inventory)), end="")
        return
    try:
        missing = [name for name, v in (("--plan-text", plan_text), ("--lock-before", lock_before), ("--lock-after", lock_after))
                   if v is None]
        if missing:
            raise MirrorcapError([Problem("mirrorcap review comment", m, "missing", f"pass {m} FILE") for m in missing])
        plan = None
        if plan_json is not None:
            plan = review.summarize_plan(review.parse_plan(_read(plan_json, "plan JSON", review.PLAN_FIX), str(plan_json)))
        text = _read(plan_text, "plan text", "pass `terraform show -no-color tfplan` output")
        before = review.parse_lock(_read(lock_before, "lock file", review.LOCK_FIX), str(lock_before))
        after = review.parse_lock(_read(lock_after, "lock file", review.LOCK_FIX), str(lock_after))
    except MirrorcapError as exc:
        _fail(exc)
    changes = review.session_changes(before.get(stack, {}), after.get(stack, {}))
    sentences = review.session_sentences(stack, changes, plan)
    print(review.comment(stack, plan=plan, plan_text=text, sessions=sentences, lock_name=lock_after.name, commit=commit,
                         local_state=local_state), end="")


@review_app.command()
def drift(check_json: Path = typer.Option(..., "--check-json", help="`mirrorcap check --json` output")) -> None:
    """The drift check's findings (or why it could not check) as Markdown, for the job summary."""
    try:
        report = review.parse_check(_read(check_json, "check output", review.CHECK_FIX), str(check_json))
    except MirrorcapError as exc:
        _fail(exc)
    print(review.drift_summary(report), end="")
