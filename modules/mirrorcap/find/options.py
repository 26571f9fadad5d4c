"""What `mirrorcap find` was asked, checked before anything is read, and where it looks (pure).

`option_problem` names the first option combination that cannot be answered, in the order a
user meets them (the query, where the packets go, where to look, the engine); `source` picks
what answers the query: the pcaps of --dir, a capture's archive read here (duckdb) or by
Athena, or the capture's host through Systems Manager."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import Problem
from .query import QueryError

ENGINES = ("duckdb", "athena")
WHERE = "command line"


def query_problem(e: QueryError) -> Problem:
    """A query that does not parse, with a caret under where it stops."""
    return Problem(WHERE, "QUERY", e.message, f"{e.fix}\n  {e.query}\n  {' ' * e.pos}^")


def option_problem(*, flows: bool, as_json: bool, out: Path | None, out_exists: bool, out_dir_exists: bool,
                   directory: Path | None, capture: str | None, instance: str | None, engine: str,
                   bucket: str | None) -> Problem | None:
    """The first problem with these options, or None. `out_exists`: something (a link too) is at --out;
    `out_dir_exists`: --out's parent is a directory."""
    if not flows and out is None:
        return Problem(WHERE, "--out", "nowhere to put the packets", "give --out FILE, or --flows to list the flows")
    if as_json and not flows:
        return Problem(WHERE, "--json", "--json lists flows", "add --flows")
    if out is not None:
        if out_exists:
            return Problem(WHERE, "--out", f"{out} exists", "pick another --out (find never overwrites a file)")
        if not out_dir_exists:
            return Problem(WHERE, "--out", f"{out.parent} is not a directory", "create it, or write elsewhere")
    if (directory is None) == (capture is None):
        return Problem(WHERE, "--dir / --capture", "say where to look: one of them",
                       "--dir PATH (pcaps on this machine) or --capture NAME (its S3 archive, or its host)")
    if instance is not None and capture is None:
        return Problem(WHERE, "--instance", "--instance needs --capture (its region)", "add --capture NAME")
    if engine not in ENGINES:
        return Problem(WHERE, "--engine", f"unknown engine {engine!r}", "--engine duckdb or --engine athena")
    if engine == "athena" and capture is None:
        return Problem(WHERE, "--engine", "athena queries a capture's archive",
                       "add --capture NAME (or drop --engine athena to search --dir here)")
    if engine == "athena" and bucket is not None:
        return Problem(WHERE, "--bucket", "athena reads the bucket its Glue table names", "drop --bucket (or use --engine duckdb)")
    if engine == "athena" and instance is not None:
        return Problem(WHERE, "--instance", "--instance runs the query on that host; athena reads the archive",
                       "drop one of --instance and --engine athena")
    return None


def source(*, capture: str | None, instance: str | None, engine: str, archived: Callable[[], bool]) -> str:
    """"dir" (the pcaps of --dir), "athena", "archive" (read here), or "ssm" (the capture's host, through
    Systems Manager: --instance names one, or the capture has no archive). `archived` is asked only
    when the answer turns on it: it reads the inventory."""
    if capture is None:
        return "dir"
    if engine == "athena":
        return "athena"
    return "ssm" if instance is not None or not archived() else "archive"
