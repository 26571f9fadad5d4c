"""`mirrorcap review ...`: the GitHub workflows' steps that are mirrorcap's own (workflows/github/).
Thin: read the files, call workflow/ (stacks, plan, sessions, comment, drift,
applied, reviewed, cost, inputs), print."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .. import jsontext
from ..errors import MirrorcapError, Problem
from ..workflow.reviewed import DESTROY_LABEL
from .common import AWS_UNREACHABLE, FINDINGS, NOTHING_TO_APPLY, USAGE, InventoryOpt, fail, sub_app

review_app = sub_app("Plan review for pull requests, apply and drift workflows (workflows/github/).")

ChangedOpt = typer.Option(None, "--changed", help="file listing the changed paths, one per line, repository-relative "
                          "(`git diff --name-only --no-renames BASE HEAD`: a move lists both paths); - for standard input")


@review_app.command()
def stacks(
    changed: Path = ChangedOpt,
    base: str = typer.Option(None, "--base", help="git revision the change is compared with (the pull request's base, "
                             "the commit before a push): the inventory and lock there tell which captures changed"),
    inventory: Path = InventoryOpt,
    out: Path = typer.Option(Path("cdktf.out"), "--out", help="the synth output directory (make synth)"),
    require_remote_state: bool = typer.Option(False, "--require-remote-state",
                                              help="exit 1 when a selected stack keeps local state (apply from CI)"),
    every: bool = typer.Option(False, "--all", help="every synthesized stack, whatever changed (the drift check, a run by hand)"),
) -> None:
    """Which synthesized stacks a change needs planned, as JSON: {"stacks": [{name, dir, region, remote_state, reasons}], "removed": [...]}.

    A capture whose block the change removes (with --base) is a stack too, "removal" in its entry: its dir,
    OUT/removed/<name>/, written here, is its state backend and provider with no resource, whose plan
    destroys everything the capture deployed (a protected pcap volume makes that plan fail, saying how).
    "removed" lists the removed captures not planned so (local state), with what to do.

    Exit 0: chosen; 1: --require-remote-state and a chosen stack keeps local state; 2: an input is wrong."""
    from ..workflow import inputs, removal
    from ..workflow.sessions import lock_path, parse_lock
    from ..workflow.stacks import select_stacks
    try:
        known = inputs.synthesized(out)
        if every:
            chosen = [{**info, "reasons": ["every stack"]} for info in known.values()]
            print(json.dumps({"stacks": chosen, "removed": []}, indent=2))
            return
        if changed is None:
            raise MirrorcapError([Problem("mirrorcap review stacks", "--changed", "missing", "pass --changed FILE, or --all")])
        paths = inputs.read(changed, "changed-file list", "pass a file of paths, one per line").splitlines()
        lock = Path(lock_path(str(inventory)))
        inv_after = inputs.read(inventory, "inventory", "pass --inventory the inventory file")
        lock_after = parse_lock(lock.read_text(encoding="utf-8") if lock.exists() else "", str(lock))
        inv_before = lock_before = None
        if base is not None:
            if inputs.git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode != 0:
                raise MirrorcapError([Problem("--base", "", f"{base!r} is not a commit of this repository",
                                              "fetch the history first (actions/checkout with fetch-depth: 0), or pass a commit SHA")])
            inv_before = inputs.at_base(base, inventory)
            lock_before = parse_lock(inputs.at_base(base, lock), f"{lock} at {base}")
        selection = select_stacks(paths, list(known), inventory=inputs.repo_relative(inventory) if base else str(inventory),
                                  inventory_before=inv_before, inventory_after=inv_after,
                                  lock_before=lock_before, lock_after=lock_after)
        removals = []
        if selection.removed:
            removals = removal.plan_removals(inputs.captures_of(inv_before, f"{inventory} at {base}", selection.removed),
                                             inputs.captures_of(inv_after, str(inventory)))
            destroy = [r for r in removals if r.kind == "destroy"]
            docs = {out / "removed" / r.name: removal.destroy_config(r, inputs.provider_pins(known)) for r in destroy}
            inputs.write_destroy_dirs(docs)
    except MirrorcapError as exc:
        fail(exc)
    chosen = removal.entries([{**known[n], "reasons": why} for n, why in selection.stacks.items()], removals, selection.added,
                             (out / "removed").as_posix())
    advice = {n: a for n, a in selection.removed.items() if all(r.name != n or r.kind == "local" for r in removals)}
    local = [s["name"] for s in chosen if not s["remote_state"]]
    if require_remote_state and local:
        fail(MirrorcapError([Problem(str(inventory), f'capture "{n}" > backend', "keeps its Terraform state on the runner, "
                                     "which forgets it after every run (the next apply would create everything again)",
                                     'declare backend "s3" { bucket = "..." } in the capture block') for n in local]), FINDINGS)
    print(json.dumps({"stacks": chosen, "removed": [{"name": n, "advice": a} for n, a in advice.items()]}, indent=2))


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
    removed: bool = typer.Option(False, "--removed", help="the warning for a capture removed from the inventory whose state "
                                 "is local (no workflow can plan its destroy)"),
    inventory: Path = InventoryOpt,
    destroy_allowed: bool = typer.Option(False, "--destroy-allowed", help=f"the pull request carries the {DESTROY_LABEL} label"),
    stacks_json: Path = typer.Option(None, "--stacks", help="`mirrorcap review stacks` output: says whether the capture was "
                                     "removed from the inventory (its plan destroys it) or added while another was"),
) -> None:
    """The pull-request comment for one stack (Markdown, starting with its hidden marker). Exit 2: an input is wrong."""
    from ..workflow import cost as costs
    from ..workflow import inputs, reviewed
    from ..workflow.comment import comment as pr_comment, removal_note, removed_comment, unaffected_comment
    from ..workflow.plan import PLAN_FIX, parse_plan, summarize_plan
    from ..workflow.sessions import LOCK_FIX, parse_lock, session_changes, session_sentences
    if unaffected or removed:
        print(unaffected_comment(stack, commit) if unaffected else removed_comment(stack, str(inventory)), end="")
        return
    try:
        missing = [name for name, v in (("--plan-text", plan_text), ("--lock-before", lock_before), ("--lock-after", lock_after))
                   if v is None]
        if missing:
            raise MirrorcapError([Problem("mirrorcap review comment", m, "missing", f"pass {m} FILE") for m in missing])
        plan = raw = None
        if plan_json is not None:
            raw = parse_plan(inputs.read(plan_json, "plan JSON", PLAN_FIX), str(plan_json))
            plan = summarize_plan(raw)
        text = inputs.read(plan_text, "plan text", "pass `terraform show -no-color tfplan` output")
        before = parse_lock(inputs.read(lock_before, "lock file", LOCK_FIX), str(lock_before))
        after = parse_lock(inputs.read(lock_after, "lock file", LOCK_FIX), str(lock_after))
        entry = inputs.stack_entry(stacks_json, stack) if stacks_json is not None else {}
    except MirrorcapError as exc:
        fail(exc)
    note = removal_note(stack, entry, inventory=str(inventory), label=reviewed.DESTROY_LABEL)
    changes = session_changes(before.get(stack, {}), after.get(stack, {}))
    sentences = session_sentences(stack, changes, plan)
    extra = {}
    if raw is not None:
        changes = reviewed.normalize(raw)
        extra = {"destroys": reviewed.destroys(changes), "cost": costs.cost_lines(_priced(raw, plan_json)),
                 "fingerprint": reviewed.fingerprint(changes)}
    print(pr_comment(stack, plan=plan, plan_text=text, sessions=sentences, lock_name=lock_after.name, commit=commit,
                     local_state=local_state, destroy_label=reviewed.DESTROY_LABEL, destroy_allowed=destroy_allowed,
                     note=note, removed="removal" in entry, **extra), end="")


def _priced(raw: dict, plan_json: Path):
    """The plan's cost change, or exit 2 naming the value the cost model cannot read."""
    from ..workflow import cost as costs
    from ..workflow.plan import PLAN_FIX
    try:
        return costs.plan_cost(raw)
    except costs.PlanValueError as exc:
        fail(MirrorcapError([Problem(str(plan_json), f"{exc.address}.{exc.attribute}", exc.what, PLAN_FIX)]))


@review_app.command()
def drift(check_json: Path = typer.Option(..., "--check-json", help="`mirrorcap check --json` output"),
          terraform: Path = typer.Option(None, "--terraform", help="directory of <stack>/exitcode (+ plan.json, plan.log): "
                                         "each stack's `terraform plan -detailed-exitcode`")) -> None:
    """The drift check's findings (or why it could not check), and Terraform's view of each stack, as Markdown.
    Exit 0: no drift; 1: drift (either kind); 2: an input is unreadable, or the check could not read the
    inventory; 3: the check or a Terraform plan could not reach the account."""
    from ..workflow import inputs
    from ..workflow.drift import CHECK_FIX, drift_summary, parse_check, terraform_drift_summary
    try:
        report = parse_check(inputs.read(check_json, "check output", CHECK_FIX), str(check_json))
        tf = inputs.terraform_results(terraform) if terraform is not None else []
    except (MirrorcapError, OSError) as exc:
        if isinstance(exc, OSError):
            exc = MirrorcapError([Problem(str(terraform), "", f"cannot read: {exc.strerror or exc}",
                                          "pass --terraform the directory the drift step writes")])  # no report to read: the check could not run
        fail(exc)
    print(drift_summary(report), end="")
    if tf:
        print()
        print(terraform_drift_summary(tf), end="")
    if report.get("drift") is None:
        raise typer.Exit(AWS_UNREACHABLE if all(e.get("file") == "AWS" for e in report.get("error") or [{}]) else USAGE)
    if any(r.failed for r in tf):
        raise typer.Exit(AWS_UNREACHABLE)
    if report.get("drift") or report.get("findings") or any(r.drift for r in tf):
        raise typer.Exit(FINDINGS)


# ---------------------------------------------------------------------------
# Apply what was reviewed


@review_app.command()
def record(
    stack: str = typer.Option(..., "--stack"),
    plan_json: Path = typer.Option(..., "--plan-json", help="`terraform show -json tfplan` of the pull request's plan"),
    stack_dir: Path = typer.Option(..., "--dir", help="the synthesized stack directory (its configuration digest)"),
    pr: int = typer.Option(None, "--pr", help="the pull request number"),
    commit: str = typer.Option(..., "--commit", help="the commit planned (the pull request's head)"),
) -> None:
    """The reviewed-plan record the plan workflow uploads: changes (of a sensitive value only whether it changes), outputs, fingerprint, digest."""
    from ..workflow import inputs, reviewed
    from ..workflow.plan import PLAN_FIX, parse_plan
    try:
        plan = parse_plan(inputs.read(plan_json, "plan JSON", PLAN_FIX), str(plan_json))
        if not (stack_dir / "cdk.tf.json").is_file():
            raise MirrorcapError([Problem(str(stack_dir), "", "not a synthesized stack directory (no cdk.tf.json in it)",
                                          "pass --dir the stack's directory under cdktf.out/stacks/ (make synth)")])
        digest = reviewed.config_digest(stack_dir)
    except (MirrorcapError, OSError) as exc:
        fail(exc if isinstance(exc, MirrorcapError) else MirrorcapError([Problem(str(stack_dir), "", str(exc), "pass --dir the stack directory")]))
    print(json.dumps(reviewed.record(plan, stack=stack, digest=digest, pr=pr, commit=commit), indent=1, sort_keys=True))


@review_app.command()
def verify(
    stack: str = typer.Option(..., "--stack"),
    plan_json: Path = typer.Option(..., "--plan-json", help="`terraform show -json tfplan` of the fresh plan about to be applied"),
    reviewed_json: list[Path] = typer.Option([], "--reviewed", help="a pull request's record (mirrorcap review record), "
                                             "once per pull request the push merged; a path that does not exist means none"),
    stack_dir: Path = typer.Option(None, "--dir", help="the synthesized stack directory: compared with the record's digest"),
    approve: list[str] = typer.Option([], "--approve", help="STACK=sha256:<fingerprint> a person approved (run by hand)"),
    allow_destroy: bool = typer.Option(False, "--allow-destroy", help=f"the {DESTROY_LABEL} label, or the run's input"),
    report: Path = typer.Option(None, "--report", help="write the verdict with its details (Markdown) here"),
    plan_text: Path = typer.Option(None, "--plan-text", help="`terraform show -no-color tfplan`: folded, inert, after the "
                                   "details in --summary"),
    summary: Path = typer.Option(None, "--summary", help="append the stack's section of the run's summary here (Markdown: "
                                 "the report, then the plan folded and cut to fit)"),
) -> None:
    """May this fresh plan be applied? Exit 0: yes (it is the reviewed plan, or what is left of it, or approved);
    1: refused; 2: an input is wrong; 4: nothing to apply. One line on standard output says why."""
    from ..workflow import inputs, reviewed
    from ..workflow.comment import truncate
    from ..workflow.markdown import inert, md_code, md_escape, md_fence, one_line
    from ..workflow.plan import PLAN_FIX, parse_plan
    try:
        plan = parse_plan(inputs.read(plan_json, "plan JSON", PLAN_FIX), str(plan_json))
        records = [reviewed.parse_record(inputs.read(path, "reviewed plan", reviewed.RECORD_FIX), str(path), stack)
                   for path in reviewed_json if path.exists()]
        fps = inputs.approved(approve, stack)
        text = inputs.read(plan_text, "plan text", "pass `terraform show -no-color tfplan` output") if plan_text else ""
        for path, what in ((report, "report"), (summary, "summary")):
            if path is not None:
                inputs.writable(path, what, f"pass {'--' + what} a file path")
    except MirrorcapError as exc:
        fail(exc)
    v = reviewed.check(plan, records, approved=fps, allow_destroy=allow_destroy)
    if report is not None or summary is not None:
        lines = [f"**{md_escape(stack)}**: {md_escape(v.reason)}", f"Fresh plan fingerprint: `{v.fingerprint}`"]
        for record_data in records:
            lines.append(f"Reviewed: pull request #{record_data.get('pr')} at {str(record_data.get('commit'))[:12]}, "
                         f"fingerprint `{record_data['fingerprint']}`")
        digest = reviewed.config_digest(stack_dir) if records and stack_dir is not None and stack_dir.is_dir() else None
        if digest is not None and all(digest != r.get("config_digest") for r in records):
            lines.append("The merged configuration of this stack differs from the one planned in the pull request "
                         "(the branch was behind its base, or several were merged): only changes a reviewed plan made are applied.")
        if v.differences:
            more = f"\n- … and {len(v.differences) - 50} more" if len(v.differences) > 50 else ""
            lines.append("Not in the reviewed plan:\n" + "\n".join(f"- {d.markdown()}" for d in v.differences[:50]) + more)
        if v.done:
            lines.append(f"Applied already (the fresh plan's prior state shows them done): {len(v.done)} reviewed change(s).")
        if v.remainders:
            lines.append(f"What a failed apply left (tainted, now replaced): {', '.join(md_code(a) for a in v.remainders[:50])}.")
        if not v.apply and not v.nothing:
            lines.append("To apply this plan as it is, after reading it in the run's summary: run the apply workflow by "
                         f"hand with approve `{stack}={v.fingerprint}`"
                         + (" and allow_destroy" if v.gated else "") + ".")
        body = "\n\n".join(lines) + "\n"
        try:
            if report is not None:
                report.write_text(body)
            if summary is not None:
                # A bounded section per stack: GitHub drops a step summary over 1 MiB whole, verdicts with it.
                folded = md_fence(truncate(inert(text), SUMMARY_PLAN_CHARS)) if text else ""
                with summary.open("a", encoding="utf-8") as f:
                    f.write(f"### {md_escape(stack)}\n\n{body}\n"
                            + (f"<details><summary>plan</summary>\n\n{folded}\n\n</details>\n\n" if folded else ""))
        except OSError as exc:
            fail(MirrorcapError([Problem(str(exc.filename or report), "", f"cannot write: {exc.strerror or exc}",
                                         "pass --report/--summary a writable file path")]))
    print(one_line(v.reason))
    raise typer.Exit(0 if v.apply else NOTHING_TO_APPLY if v.nothing else FINDINGS)


SUMMARY_PLAN_CHARS = 40_000  # of one stack's plan in the run's summary (its log has the whole plan)


@review_app.command()
def applied(
    results: Path = typer.Option(..., "--results", help="the apply step's stack<TAB>status<TAB>detail lines (may not exist)"),
    stacks_json: Path = typer.Option(..., "--stacks", help="the stacks the run was to apply (mirrorcap review stacks); "
                                     "absent: the run stopped before choosing"),
    commit: str = typer.Option(..., "--commit"),
    run_url: str = typer.Option(..., "--run-url"),
) -> None:
    """The comment for the merged pull request: each stack applied, refused, failed or not reached, and the run."""
    from ..workflow import inputs
    from ..workflow.applied import apply_report
    try:
        rows = inputs.results(results) if results.exists() else []
        chosen = None  # no stack list: the run stopped before choosing
        if stacks_json.exists():
            chosen = [s["name"] for s in jsontext.loads(inputs.read(stacks_json, "stack list", "pass mirrorcap review stacks' output"))["stacks"]]
    except (MirrorcapError, ValueError, KeyError, TypeError) as exc:
        fail(exc if isinstance(exc, MirrorcapError) else MirrorcapError([Problem(str(stacks_json), "stacks", str(exc), "pass mirrorcap review stacks' output")]))
    print(apply_report(rows, chosen, commit=commit, run_url=run_url), end="")


# ---------------------------------------------------------------------------
# Which record to trust, and the run's summary


@review_app.command()
def pulls(
    commits: Path = typer.Option(..., "--commits", help="the push's commits, one SHA a line (oldest first)"),
    pulls_dir: Path = typer.Option(..., "--pulls", help="directory of <sha>.json: `gh api repos/O/R/commits/<sha>/pulls` "
                                   "for each commit"),
    branch: str = typer.Option(..., "--branch", help="the branch the push went to"),
) -> None:
    """The pull requests a push merged, as JSON: "pulls" (each: number, head_sha, merge_commit_sha, labels) and
    "unreviewed" (the commits no merged pull request brought). Exit 2: an input is wrong."""
    from ..workflow import inputs, trust
    try:
        shas = [trust.check_sha(line.strip(), str(commits))
                for line in inputs.read(commits, "commit list", "pass one commit SHA a line").splitlines() if line.strip()]
        answers = {}
        for sha in shas:
            path = pulls_dir / f"{sha}.json"
            answers[sha] = jsontext.loads(inputs.read(path, "pull request list", trust.API_FIX)) if path.exists() else []
        merged = trust.merged_pulls(shas, answers, branch, str(pulls_dir))
    except ValueError as exc:
        fail(MirrorcapError([Problem(str(pulls_dir), "", f"not JSON: {str(exc)[:200]}", "pass what `gh api` printed")]))
    except MirrorcapError as exc:
        fail(exc)
    brought = {sha for sha in shas for pr in (answers.get(sha) or []) if isinstance(pr, dict)
               and any(pr.get("number") == m["number"] for m in merged)}
    print(json.dumps({"pulls": merged, "unreviewed": [s for s in shas if s not in brought]}, indent=1))


@review_app.command("trusted-record")
def trusted_record(
    runs: Path = typer.Option(..., "--runs", help="`gh api repos/O/R/actions/workflows/mirrorcap-plan.yml/runs?head_sha=SHA`"),
    artifacts: Path = typer.Option(..., "--artifacts", help="`gh api repos/O/R/actions/artifacts?name=mirrorcap-reviewed-SHA`"),
    head: str = typer.Option(..., "--head", help="the commit the pull request was reviewed at (its head)"),
    repository: str = typer.Option(..., "--repository", help="OWNER/REPO, this repository"),
) -> None:
    """The reviewed-plan artifact to trust for a commit: one line, `ID<TAB>what it is` (exit 0), or why there is
    none (exit 1). Exit 2: an input is wrong."""
    from ..workflow import inputs, trust
    from ..workflow.markdown import one_line
    try:
        trust.check_sha(head, "--head")
        data = [jsontext.loads(inputs.read(p, what, trust.API_FIX)) for p, what in ((runs, "runs"), (artifacts, "artifacts"))]
        art, why = trust.trusted_record(*data, head_sha=head, repository=repository)
    except ValueError as exc:
        fail(MirrorcapError([Problem(f"{runs} / {artifacts}", "", f"not JSON: {str(exc)[:200]}", "pass what `gh api` printed")]))
    except MirrorcapError as exc:
        fail(exc)
    if art is None:
        print(one_line(why))
        raise typer.Exit(FINDINGS)
    print(f"{art['id']}\t{one_line(why)}")


@review_app.command()
def summary(
    verdict: Path = typer.Option(..., "--verdict", help="what comes first: the verdict (Markdown)"),
    sections: list[Path] = typer.Argument(None, help="each stack's section (Markdown), in order; one that does not exist is skipped"),
) -> None:
    """A step summary under GitHub's 1 MiB cap: the verdict, then each section while it fits, whole, and a note
    naming those left out. Exit 2: an input is wrong."""
    from ..workflow import inputs
    from ..workflow import summary as fit
    try:
        head = inputs.read(verdict, "verdict", "pass the verdict's Markdown file")
        parts = [(p.parent.name or p.name, inputs.read(p, "summary section", "pass a Markdown file")) for p in sections or [] if p.exists()]
    except MirrorcapError as exc:
        fail(exc)
    print(fit.fit(head, parts), end="")
