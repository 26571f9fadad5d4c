"""A capture of an inventory text turned into another kind, as a user edits it: one host
("single"), one host with `archive {}` ("archive"), or a fleet ("fleet", which archives).

Works on the lines of the capture's block (the fixtures' two-space layout): the `fleet`
and `archive` blocks and the `subnet_id` / `max_sources_per_target` lines are taken out,
then what the kind needs is put back before the block's closing brace. An archive or a
fleet gets `ami` when the capture has none (their user data needs a baked AMI).
"""

from __future__ import annotations

import re

KINDS = ("single", "archive", "fleet")
# Every kind into every other kind and back, in one walk: single -> archive -> fleet -> archive -> single -> fleet -> single.
WALK = ("single", "archive", "fleet", "archive", "single", "fleet", "single")
AMI = "ami-0123456789abcdef0"
SECOND_SUBNET = "subnet-0bbbbbbbbbbbbbbb2"


def _braces(line: str) -> int:
    code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line).split("#", 1)[0]
    return code.count("{") - code.count("}")


def _block_end(lines: list[str], start: int) -> int:
    """The index of the line closing the block opened on lines[start]."""
    depth = 0
    for i in range(start, len(lines)):
        depth += _braces(lines[i])
        if depth == 0:
            return i
    raise ValueError(f"unbalanced block at line {start + 1}")


def capture_as(text: str, name: str, kind: str) -> str:
    assert kind in KINDS, kind
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if re.match(rf'capture "{re.escape(name)}" \{{', line))
    end = _block_end(lines, start)
    body, subnets, i = [], [], start + 1
    while i < end:
        line = lines[i]
        if re.match(r"  (fleet|archive)\s*\{", line):
            j = _block_end(lines, i)
            subnets += re.findall(r'"(subnet-[0-9a-f]+)"', "\n".join(lines[i:j + 1]))
            i = j + 1
            continue
        if m := re.match(r'  subnet_id\s*=\s*"([^"]+)"', line):
            subnets.insert(0, m.group(1))
        elif not re.match(r"  max_sources_per_target\s*=", line):
            body.append(line)
        i += 1
    first = subnets[0]
    add = []
    if kind != "single" and not any(re.match(r"  ami\s*=", line) for line in body):
        add.append(f'  ami = "{AMI}"')
    if kind == "fleet":
        second = next((s for s in subnets[1:] if s != first), SECOND_SUBNET)
        add += ["  fleet {", f'    subnet_ids = ["{first}", "{second}"]', "  }", "  archive {}"]
    else:
        add.append(f'  subnet_id = "{first}"')
        if kind == "archive":
            add.append("  archive {}")
    return "\n".join(lines[:start + 1] + body + add + lines[end:])
