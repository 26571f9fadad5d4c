"""What the review commands read besides the plan: git revisions of the inventory and lock, cdktn's
manifest of synthesized stacks, the drift job's per-stack Terraform results, the apply step's results
file, approvals from the command line. Each bad input is a MirrorcapError naming the file and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..errors import MirrorcapError, Problem
from . import review


# Every file the review commands read is bounded (review.MAX_PLAN_BYTES says why this size): a larger one
# is refused before it is read, not read into memory.
MAX_BYTES = 64 * 1024 * 1024


def read(path: Path, what: str, fix: str, limit: int = MAX_BYTES) -> str:
    """A file the command was given (- for standard input), at most `limit` bytes, or a problem naming it."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(limit + 1) if hasattr(sys.stdin, "buffer") else sys.stdin.read(limit + 1).encode()
        else:
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a directory")
            with path.open("rb") as f:
                data = f.read(limit + 1)
        if len(data) > limit:
            raise MirrorcapError([Problem(str(path), "", f"the {what} is larger than {limit // 2**20} MiB: not one a "
                                          "mirrorcap workflow writes", fix)])
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MirrorcapError([Problem(str(path), "", f"cannot read the {what}: {exc}", fix)])


def writable(path: Path, what: str, fix: str) -> None:
    """A file the command will write: a problem now (before anything is printed) if it cannot be."""
    if path.is_dir():
        raise MirrorcapError([Problem(str(path), "", f"is a directory, not a file for the {what}", fix)])
    if not path.parent.is_dir():
        raise MirrorcapError([Problem(str(path), "", f"its directory {path.parent} does not exist", fix)])


def git(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True)
    except OSError as exc:
        raise MirrorcapError([Problem("--base", "", f"cannot run git: {exc}", "install git, or leave out --base")])


def at_base(base: str, path: Path) -> str:
    """`path` (relative to the working directory) as it was at `base`; "" where it did not exist."""
    shown = git("show", f"{base}:./{path.as_posix()}")
    return shown.stdout if shown.returncode == 0 else ""


def repo_relative(path: Path) -> str:
    prefix = git("rev-parse", "--show-prefix")
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


def terraform_results(directory: Path) -> list[review.TerraformDrift]:
    """<directory>/<stack>/exitcode (and plan.json when it differs, plan.log otherwise), as the drift workflow writes them."""
    fix = "pass --terraform the directory the drift step writes (<stack>/exitcode, plan.json, plan.log)"
    if not directory.is_dir():
        raise MirrorcapError([Problem(str(directory), "", "not a directory", fix)])
    out = []
    for d in sorted(p for p in directory.iterdir() if (p / "exitcode").is_file()):
        text = read(d / "exitcode", "exit code", fix, 64).strip()
        if not text.isdigit():
            raise MirrorcapError([Problem(str(d / "exitcode"), "", f"{text!r} is not an exit code", "write terraform's exit code")])
        code = int(text)
        plan = None
        if code == 2 and (d / "plan.json").is_file():
            plan = review.summarize_plan(review.parse_plan(read(d / "plan.json", "plan JSON", review.PLAN_FIX), str(d / "plan.json")))
        log = _tail(d / "plan.log")
        out.append(review.TerraformDrift(d.name, code, plan, log))
    return out


def approved(items: list[str], stack: str) -> list[str]:
    """`stack=sha256:...` entries (comma- or space-separated) for this stack."""
    out = []
    for item in " ".join(items).replace(",", " ").split():
        name, sep, fp = item.partition("=")
        if not sep or not fp.startswith("sha256:"):
            raise MirrorcapError([Problem("--approve", item, "not STACK=sha256:<fingerprint>",
                                          "copy the stack=fingerprint pair from the refused run's report")])
        if name == stack:
            out.append(fp)
    return out


def results(path: Path) -> list[review.StackResult]:
    """stack<TAB>status<TAB>detail lines (the apply step's log); each stack's report.md beside, when there is one."""
    out = []
    for n, line in enumerate(read(path, "results", "pass the apply step's results file").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3 or fields[1] not in review.APPLY_STATUS:
            raise MirrorcapError([Problem(str(path), f"line {n}", f"expected stack<TAB>status<TAB>detail, got {line!r}",
                                          "status is one of " + ", ".join(review.APPLY_STATUS))])
        detail_md, log = path.parent / fields[0] / "report.md", path.parent / fields[0] / "failure.log"
        report = read(detail_md, "report", "pass the files review verify wrote") if detail_md.is_file() else ""
        out.append(review.StackResult(fields[0], fields[1], fields[2], report, _tail(log, 40)))
    return out


def _tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log (raw text: shown fenced and inert), "" where there is none."""
    if not path.is_file():
        return ""
    try:
        with path.open("rb") as f:
            f.seek(max(f.seek(0, 2) - 64 * 1024, 0))
            text = f.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(the log {path} could not be read: {exc})"
    return "\n".join(text.strip().splitlines()[-lines:])
