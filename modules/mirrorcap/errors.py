"""Errors that reach the user: each names the file, the field and the fix; and the exit codes
(EXIT_CODES, the one table: every --help prints it, docs/operations.md lists it).

(A reader of the output that goes away, `| head -1`, ends any command with 141, as SIGPIPE would: cli/__init__.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

from .plaintext import inert

# The same for every command: cron, CI and make tell the outcomes apart by them.
OK, FINDINGS, USAGE, AWS_UNREACHABLE, NOTHING_TO_APPLY = 0, 1, 2, 3, 4
EXIT_CODES = {
    OK: "done (valid, no drift, fits, up to date, written)",
    FINDINGS: "findings (inventory problems, drift, does not fit, stale, refused)",
    USAGE: "usage or input error (command line; missing or invalid inventory or input file)",
    AWS_UNREACHABLE: "could not reach AWS (credentials, network, a denied call)",
    NOTHING_TO_APPLY: "review verify: nothing to apply",
}


@dataclass(frozen=True)
class Problem:
    file: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        # Every part may hold input (a capture's label, a lock key, a syntax error's line): unseen
        # characters (ESC, U+202E...) are shown by their code point, never sent to a terminal.
        where = f"{self.file}: {self.field}" if self.field else self.file
        return inert(f"{where}: {self.message}\n  fix: {self.fix}")


class MirrorcapError(Exception):
    """One or more problems with user input; nothing has been written."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Collector:
    """Collects every problem in a file so the user fixes them in one pass."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def add(self, field: str, message: str, fix: str) -> None:
        self.problems.append(Problem(self.file, field, message, fix))

    def problems_at(self, prefix: str) -> bool:
        return any(p.field.startswith(prefix) for p in self.problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise MirrorcapError(self.problems)
