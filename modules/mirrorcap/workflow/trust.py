"""Which reviewed-plan record the apply workflow may trust, chosen from GitHub's REST API answers
(the JSON the workflow fetches with `gh api`), never "the newest artifact with that name":

- `merged_pulls(commits, pulls_by_commit, branch)`: the pull requests a push merged: each one
  GitHub associates with a commit of the push (`GET /repos/{o}/{r}/commits/{sha}/pulls`), merged
  into `branch`, whose merge commit is one of the push's commits (an older pull request that
  merely shares a commit is not merged by this push);
- `trusted_record(runs, artifacts, head_sha, repository)`: the record artifact
  `mirrorcap-reviewed-<head_sha>` a run of the plan workflow uploaded for that commit
  (`GET /repos/{o}/{r}/actions/workflows/mirrorcap-plan.yml/runs?head_sha=...` and
  `GET /repos/{o}/{r}/actions/artifacts?name=...`): that workflow file, a pull_request or
  merge_group event of this repository (not a fork's copy of the workflow, not a push to some
  branch, not a run by hand), finished and successful in its newest attempt (a re-run reuses the
  run's id and counts up run_attempt), and the newest of those runs passed too.

`trusted_record` answers (the artifact, what it is) or (None, why not), in one plain line. A shape the API never
answers is a MirrorcapError naming the field.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from ..errors import MirrorcapError, Problem
from .markdown import one_line

PLAN_WORKFLOW = ".github/workflows/mirrorcap-plan.yml"
PLAN_EVENTS = ("pull_request", "merge_group")
RECORD_PREFIX = "mirrorcap-reviewed-"
API_FIX = "pass the JSON `gh api` printed for the endpoint the apply workflow calls"
_SHA = re.compile(r"[0-9a-f]{40}")


def _problem(name: str, field: str, what: str) -> MirrorcapError:
    return MirrorcapError([Problem(name, field, what, API_FIX)])


def _items(data: Any, key: str, name: str) -> list[Mapping]:
    if not isinstance(data, Mapping) or not isinstance(data.get(key), list):
        raise _problem(name, key, "expected an object with a list here (the endpoint's answer)")
    for i, item in enumerate(data[key]):
        if not isinstance(item, Mapping):
            raise _problem(name, f"{key}[{i}]", "expected an object")
    return data[key]


def _field(item: Mapping, key: str, kind: type | tuple[type, ...], name: str, where: str, *, optional: bool = False) -> Any:
    value = item.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _problem(name, f"{where}.{key}", f"expected {getattr(kind, '__name__', 'a value')}")
    return value


def check_sha(sha: str, what: str) -> str:
    if not _SHA.fullmatch(sha or ""):
        raise MirrorcapError([Problem(what, "", f"{one_line(sha)[:60]!r} is not a full commit SHA", "pass the 40-hex commit")])
    return sha


# ---------------------------------------------------------------------------
# The pull requests a push merged


def merged_pulls(commits: Sequence[str], pulls_by_commit: Mapping[str, Any], branch: str, name: str = "pulls") -> list[dict]:
    """The pull requests the push of `commits` merged into `branch`, oldest merge first:
    [{number, head_sha, merge_commit_sha, labels}]."""
    in_push = set(commits)
    found: dict[int, dict] = {}
    for sha in commits:
        pulls = pulls_by_commit.get(sha, [])
        if not isinstance(pulls, list):
            raise _problem(f"{name} ({sha[:12]})", "", "expected a list of pull requests")
        for i, pr in enumerate(pulls):
            where = f"[{i}]"
            if not isinstance(pr, Mapping):
                raise _problem(f"{name} ({sha[:12]})", where, "expected an object")
            number = _field(pr, "number", int, name, where)
            base = pr.get("base") if isinstance(pr.get("base"), Mapping) else {}
            head = pr.get("head") if isinstance(pr.get("head"), Mapping) else {}
            if pr.get("merged_at") is None or base.get("ref") != branch or pr.get("merge_commit_sha") not in in_push:
                continue  # open, merged elsewhere, or merged by another push
            head_sha = head.get("sha")
            if not isinstance(head_sha, str) or not _SHA.fullmatch(head_sha):
                raise _problem(name, f"{where}.head.sha", "expected a commit SHA")
            labels = [lb.get("name") for lb in pr.get("labels") or [] if isinstance(lb, Mapping) and isinstance(lb.get("name"), str)]
            found.setdefault(number, {"number": number, "head_sha": head_sha, "merge_commit_sha": pr["merge_commit_sha"],
                                      "labels": labels, "merged_at": str(pr["merged_at"])})
    return sorted(found.values(), key=lambda p: (p["merged_at"], p["number"]))


# ---------------------------------------------------------------------------
# The plan workflow's run for a commit, and its record


def _workflow_path(path: str) -> str:
    return path.split("@", 1)[0]  # GitHub's examples write ".github/workflows/build.yml@main"


def trusted_record(runs: Any, artifacts: Any, *, head_sha: str, repository: str,
                   workflow: str = PLAN_WORKFLOW) -> tuple[dict | None, str]:
    """The record artifact to trust for `head_sha`, or (None, why there is none).

    `runs`: the plan workflow's runs for the commit; `artifacts`: the repository's artifacts named
    mirrorcap-reviewed-<head_sha> (`GET /repos/{o}/{r}/actions/artifacts?name=...`). Only an artifact a
    run of ours uploaded counts (ours: `workflow`, a pull_request or merge_group event of this repository
    for this commit); the newest of our runs (a label event starts one that plans nothing and repeats
    the verdict) must have passed, and so must the newest of ours that recorded a plan."""
    ours: dict[int, Mapping] = {}
    for i, run in enumerate(_items(runs, "workflow_runs", "runs")):
        where = f"workflow_runs[{i}]"
        path = _field(run, "path", str, "runs", where)
        event = _field(run, "event", str, "runs", where)
        sha = _field(run, "head_sha", str, "runs", where)
        repo = run["repository"].get("full_name") if isinstance(run.get("repository"), Mapping) else None
        head_repo = run["head_repository"].get("full_name") if isinstance(run.get("head_repository"), Mapping) else None
        if _workflow_path(path) != workflow or event not in PLAN_EVENTS or sha != head_sha:
            continue  # another workflow, a push or a run by hand, another commit
        if repo != repository or head_repo != repository:
            continue  # a fork's pull request runs the fork's copy of the workflow file: never trusted
        ours[_field(run, "id", int, "runs", where)] = run
        _field(run, "run_attempt", int, "runs", where, optional=True)
        _field(run, "created_at", str, "runs", where)
    if not ours:
        return None, (f"no run of {workflow} planned {head_sha[:12]} in {repository} (not planned, or its runs were "
                      "deleted): plan the pull request again")
    newest = max(ours.values(), key=lambda r: (r["created_at"], r["id"]))
    why = _not_passed(newest, workflow, head_sha)
    if why:
        return None, why
    wanted = RECORD_PREFIX + head_sha
    recorded = []
    for i, art in enumerate(_items(artifacts, "artifacts", "artifacts")):
        where = f"artifacts[{i}]"
        if _field(art, "name", str, "artifacts", where) != wanted:
            continue
        _field(art, "id", int, "artifacts", where)
        run = art.get("workflow_run")
        if not isinstance(run, Mapping) or run.get("id") not in ours or run.get("head_sha") != head_sha:
            continue  # uploaded by another workflow, event, repository or commit: anyone with write access can
        if art.get("expired") is not False:
            continue
        recorded.append((ours[run["id"]], art))
    if not recorded:
        return None, (f"no run of {workflow} for {head_sha[:12]} left an unexpired {wanted} (the plan failed before "
                      "recording, planned nothing, or the record expired): plan the pull request again")
    run, art = max(recorded, key=lambda ra: (ra[0]["created_at"], ra[0]["id"], str(ra[1].get("created_at") or ""), ra[1]["id"]))
    why = _not_passed(run, workflow, head_sha)
    if why:
        return None, why
    return dict(art), f"artifact {art['id']} of run {run['id']} (attempt {run.get('run_attempt') or 1}) of {workflow}"


def _not_passed(run: Mapping, workflow: str, head_sha: str) -> str | None:
    """Why the run (its newest attempt: a re-run keeps the id and counts up run_attempt) is not a passed review."""
    label = f"run {run['id']} (attempt {run.get('run_attempt') or 1}) of {workflow} for {head_sha[:12]}"
    if run.get("status") != "completed":
        return f"{label} has not finished ({one_line(run.get('status'))}): wait for it, then run the apply by hand"
    if run.get("conclusion") != "success":
        return (f"{label} concluded {one_line(run.get('conclusion'))}: not a passed review (plan the pull request "
                "again, or run the apply by hand and approve what it shows)")
    return None
