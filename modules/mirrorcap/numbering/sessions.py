"""Mirror session numbering: a pure function.

A session number is not a global ID. AWS evaluates the (at most 3) sessions of
one source ENI in ascending number order and the first whose filter matches
mirrors the packet. So numbers only need to be unique per source, and the
lowest free number is the natural default.

Stability is what matters for reviewable plans: a number that changes forces
Terraform to replace the session. So numbers already recorded in the lock file
are kept, unless a number the user fixed in the inventory now claims them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from .. import aws_limits as L

Key = tuple[str, str]  # (capture name, source id)


@dataclass(frozen=True)
class Request:
    capture: str
    source: str
    fixed: Optional[int] = None


@dataclass(frozen=True)
class Conflict:
    capture: str
    source: str
    message: str
    fix: str
    field: str = "session_number"  # of the source block; "" = the source itself


class NumberingError(ValueError):
    def __init__(self, conflicts: list[Conflict]):
        self.conflicts = conflicts
        super().__init__("; ".join(c.message for c in conflicts))


def by_capture(numbers: Mapping[Key, int]) -> dict[str, dict[str, int]]:
    """{(capture, source): number} -> {capture: {source: number}}, sorted; a capture without sources is absent."""
    grouped: dict[str, dict[str, int]] = {}
    for (capture, source), number in sorted(numbers.items()):
        grouped.setdefault(capture, {})[source] = number
    return grouped


def assign(requests: Iterable[Request], locked: Mapping[Key, int]) -> dict[Key, int]:
    """Give every (capture, source) a session number, unique per source.

    Order of precedence per source: numbers fixed in the inventory, then numbers
    from the lock file (if still free and valid), then the lowest free number,
    new sessions taken in capture-name order so the result is deterministic.
    """
    by_source: dict[str, list[Request]] = defaultdict(list)
    for r in requests:
        by_source[r.source].append(r)

    conflicts: list[Conflict] = []
    result: dict[Key, int] = {}
    for source in sorted(by_source):
        group = sorted(by_source[source], key=lambda r: r.capture)
        if len({r.capture for r in group}) != len(group):
            conflicts.append(Conflict(group[0].capture, source, f"{source} is listed more than once in one capture", "remove the duplicate"))
            continue
        if len(group) > L.SESSIONS_PER_SOURCE_ENI:
            users = ", ".join(r.capture for r in group)
            conflicts.append(Conflict(group[0].capture, source,
                                      f"{source} would be in {len(group)} sessions (captures {users}); "
                                      f"AWS allows {L.SESSIONS_PER_SOURCE_ENI} sessions per source ENI, whichever capture creates them",
                                      f"mirror {source} from at most {L.SESSIONS_PER_SOURCE_ENI} captures", field=""))
            continue
        taken: dict[int, str] = {}
        for r in group:
            if r.fixed is None:
                continue
            if not L.SESSION_NUMBER_MIN <= r.fixed <= L.SESSION_NUMBER_MAX:
                conflicts.append(Conflict(r.capture, source, f"session number {r.fixed} is outside {L.SESSION_NUMBER_MIN}-{L.SESSION_NUMBER_MAX}",
                                          f"use a number from {L.SESSION_NUMBER_MIN} to {L.SESSION_NUMBER_MAX}"))
            elif r.fixed in taken:
                conflicts.append(Conflict(r.capture, source, f"session number {r.fixed} for {source} is also fixed by capture \"{taken[r.fixed]}\"",
                                          "numbers must differ per source ENI (the lowest is evaluated first): change one"))
            else:
                taken[r.fixed] = r.capture
                result[(r.capture, source)] = r.fixed
        pending = []
        for r in group:
            if r.fixed is not None:
                continue
            prior = locked.get((r.capture, source))
            if prior is not None and L.SESSION_NUMBER_MIN <= prior <= L.SESSION_NUMBER_MAX and prior not in taken:
                taken[prior] = r.capture
                result[(r.capture, source)] = prior
            else:
                pending.append(r)
        candidate = L.SESSION_NUMBER_MIN
        for r in pending:
            while candidate in taken:
                candidate += 1
            taken[candidate] = r.capture
            result[(r.capture, source)] = candidate
    if conflicts:
        raise NumberingError(conflicts)
    return result
