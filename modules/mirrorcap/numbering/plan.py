"""Inventory + lock file -> session numbers; the one place both meet.

`numbers_for` computes what the lock should say; `locked_numbers` is what synth
uses: it refuses a lock file that disagrees with the inventory, so the numbers
Terraform sees are always the reviewed, committed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import lockfile
from ..inventory.model import Inventory
from ..errors import MirrorcapError, Problem
from .sessions import Key, NumberingError, Request, assign


@dataclass(frozen=True)
class Numbering:
    numbers: dict[Key, int]
    lock_path: Path
    locked: dict[Key, int]

    @property
    def changes(self) -> list[tuple[Key, int | None, int | None]]:
        keys = sorted(set(self.numbers) | set(self.locked))
        return [(k, self.locked.get(k), self.numbers.get(k)) for k in keys if self.locked.get(k) != self.numbers.get(k)]


def numbers_for(inventory: Inventory) -> Numbering:
    lock_path = lockfile.path_for(inventory.path)
    locked = lockfile.read(lock_path)
    requests = [Request(c.name, s.id, s.session_number) for c in inventory.captures for s in c.sources]
    try:
        numbers = assign(requests, locked)
    except NumberingError as exc:
        problems = []
        for conflict in exc.conflicts:
            capture = inventory.capture(conflict.capture)
            index = next(i for i, s in enumerate(capture.sources) if s.id == conflict.source)
            field = f'capture "{conflict.capture}" > source[{index}]' + (f" > {conflict.field}" if conflict.field else "")
            problems.append(Problem(inventory.path, field, conflict.message, conflict.fix))
        raise MirrorcapError(problems)
    return Numbering(numbers=numbers, lock_path=lock_path, locked=locked)


def locked_numbers(inventory: Inventory) -> dict[Key, int]:
    numbering = numbers_for(inventory)
    if numbering.changes:
        lines = []
        for (capture, source), old, new in numbering.changes[:10]:
            lines.append(f'capture "{capture}" source {source}: lock has {old if old is not None else "nothing"}, inventory needs {new if new is not None else "nothing"}')
        raise MirrorcapError([Problem(str(numbering.lock_path), "captures",
                                      "lock file is out of date with the inventory:\n    " + "\n    ".join(lines),
                                      f"run `mirrorcap sessions --write --inventory {inventory.path}`, review the change and commit {numbering.lock_path.name}")])
    return numbering.numbers
