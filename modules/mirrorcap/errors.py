"""Errors that reach the user: each names the file, the field and the fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message}\n  fix: {self.fix}"


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
