"""Does an identity policy allow a call (tests/iam_calls.Call)? IAM's evaluation, as far as the CI
roles' policies use it: an explicit Deny wins, else some Allow must match the action (wildcards,
case-insensitive), the resource (wildcards) and every condition (StringEquals / StringLike on the
keys the call sets; a key the call does not set fails the condition, as in IAM). Anything else in a
policy (NotAction, NotResource, other operators) is refused rather than guessed.
"""

from __future__ import annotations

import re

from iam_calls import Call

KNOWN = {"Sid", "Effect", "Action", "Resource", "Condition"}


def _list(v) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _like(pattern: str, value: str, case: bool = True) -> bool:
    # IAM wildcards: * any run of characters (also "/"), ? one character; nothing else is special.
    rx = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, value, 0 if case else re.IGNORECASE) is not None


def _condition(cond: dict, call: Call) -> bool:
    context = dict(call.context)
    for op, pairs in cond.items():
        if op not in ("StringEquals", "StringLike"):
            raise ValueError(f"condition operator {op} is not evaluated here")
        for key, values in pairs.items():
            if key not in context:
                return False
            test = (lambda v: v == context[key]) if op == "StringEquals" else (lambda v: _like(v, context[key]))
            if not any(test(v) for v in _list(values)):
                return False
    return True


def _matches(statement: dict, call: Call) -> bool:
    extra = set(statement) - KNOWN
    if extra:
        raise ValueError(f"statement {statement.get('Sid')}: {sorted(extra)} are not evaluated here")
    return (any(_like(a, call.action, case=False) for a in _list(statement["Action"]))
            and any(_like(r, call.resource) for r in _list(statement["Resource"]))
            and _condition(statement.get("Condition", {}), call))


def allows(policy: dict, call: Call) -> bool:
    statements = policy["Statement"]
    if any(s["Effect"] == "Deny" and _matches(s, call) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _matches(s, call) for s in statements)


def actions_of(policy: dict) -> set[str]:
    """Every action an Allow names (as written: a wildcard stays one entry)."""
    return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in _list(s["Action"])}

