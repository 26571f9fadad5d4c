"""What the review commands read besides the plan: git revisions of the inventory and lock, cdktn's
manifest of synthesized stacks, the drift job's per-stack Terraform results, the apply step's results
file, approvals from the command line. Each bad input is a MirrorcapError naming the file and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from .. import jsontext
from ..errors import MirrorcapError, Problem
from .applied import APPLY_STATUS, StackResult
from .drift import TerraformDrift
from .plan import PLAN_FIX, parse_plan, summarize_plan
from .stacks import inventory_captures


# Every file the review commands read is bounded (plan.MAX_PLAN_BYTES says why this size): a larger one
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


def captures_of(text: str, source: str, names: Iterable[str] | None = None) -> list:
    """The capture blocks of an inventory text (all, or those named), each read as `load` reads it."""
    from ..inventory.load import capture_block
    blocks, _ = inventory_captures(text, source)
    wanted = list(blocks) if names is None else [n for n in names if n in blocks]
    return [capture_block(n, blocks[n], source) for n in wanted]


def provider_pins(known: dict[str, dict]) -> dict:
    """`terraform.required_providers` of the synthesized stacks (one synth pins them all alike)."""
    for info in known.values():
        path = Path(info["dir"]) / "cdk.tf.json"
        pins = json.loads(path.read_text(encoding="utf-8")).get("terraform", {}).get("required_providers")
        if isinstance(pins, dict) and pins:
            return pins
    raise MirrorcapError([Problem("cdktf.out", "required_providers", "no synthesized stack pins its providers",
                                  "run `make synth` first")])


def write_destroy_dirs(docs: dict[Path, dict]) -> None:
    """Each removed capture's destroy configuration, <dir>/cdk.tf.json. A file there that mirrorcap did
    not write is left alone (a problem, before anything is written)."""
    from .removal import MARK
    for directory in docs:
        path = directory / "cdk.tf.json"
        if path.exists():
            try:
                mine = MARK in json.loads(path.read_text(encoding="utf-8")).get("//", {}).get("mirrorcap", "")
            except (OSError, ValueError, AttributeError, TypeError):
                mine = False
            if not mine:
                raise MirrorcapError([Problem(str(path), "", "exists and is not a destroy configuration mirrorcap wrote",
                                              "move it away (mirrorcap writes each removed capture's configuration there)")])
    for directory, doc in docs.items():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "cdk.tf.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        except OSError as exc:
            raise MirrorcapError([Problem(str(directory), "", f"cannot write: {exc.strerror or exc}",
                                          "pass --out a writable synth output directory")])


def stack_entry(path: Path, stack: str) -> dict:
    """`stack`'s entry in `review stacks` output ({} where it has none)."""
    fix = "pass mirrorcap review stacks' output"
    try:
        data = jsontext.loads(read(path, "stack list", fix))
        found = [s for s in data["stacks"] if s["name"] == stack]
        if found and not isinstance(found[0], dict):
            raise TypeError("a stack is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise MirrorcapError([Problem(str(path), "stacks", f"not a stack list: {str(exc)[:200]}", fix)])
    return found[0] if found else {}


def terraform_results(directory: Path) -> list[TerraformDrift]:
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
            plan = summarize_plan(parse_plan(read(d / "plan.json", "plan JSON", PLAN_FIX), str(d / "plan.json")))
        log = _tail(d / "plan.log")
        out.append(TerraformDrift(d.name, code, plan, log))
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


def results(path: Path) -> list[StackResult]:
    """stack<TAB>status<TAB>detail lines (the apply step's log); each stack's report.md beside, when there is one."""
    out = []
    for n, line in enumerate(read(path, "results", "pass the apply step's results file").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3 or fields[1] not in APPLY_STATUS:
            raise MirrorcapError([Problem(str(path), f"line {n}", f"expected stack<TAB>status<TAB>detail, got {line!r}",
                                          "status is one of " + ", ".join(APPLY_STATUS))])
        detail_md, log = path.parent / fields[0] / "report.md", path.parent / fields[0] / "failure.log"
        report = read(detail_md, "report", "pass the files review verify wrote") if detail_md.is_file() else ""
        out.append(StackResult(fields[0], fields[1], fields[2], report, _tail(log, 40)))
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
