"""docs/inventory.md documents every field the inventory accepts, block by block,
and nothing it does not.

The fields come from the loader itself: an unknown field in a block is refused
with the block's whole list ("allowed here: ..."), so an inventory with one
unknown field in every block makes `inventory.load` name every block and every
field. The loader's own source says how many blocks it reads (each is one
`Block(...)`): a block this inventory does not reach fails the test, not the docs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import ROOT
from mirrorcap.errors import MirrorcapError
from mirrorcap.inventory import load

DOC = ROOT / "docs" / "inventory.md"
INVENTORY_PACKAGE = ROOT / "modules" / "mirrorcap" / "inventory"
UNKNOWN = "zz_not_a_field"

# Every block, each given UNKNOWN: two captures, since a fleet and a single host,
# and an s3 and a local backend, exclude each other.
EVERY_BLOCK = f'''
{UNKNOWN} = 1
capture "one" {{
  {UNKNOWN} = 1
  region = "eu-west-1"
  vpc_id = "vpc-0123456789abcdef0"
  vni    = 1
  storage {{ {UNKNOWN} = 1 }}
  network {{
    {UNKNOWN} = 1
    mirror_source_cidrs = ["10.0.0.0/16"]
  }}
  filter {{
    {UNKNOWN} = 1
    rule {{
      {UNKNOWN} = 1
      direction = "ingress"
    }}
  }}
  source {{
    {UNKNOWN} = 1
    eni_id = "eni-0123456789abcdef0"
  }}
  auto_mirror {{ {UNKNOWN} = 1 }}
  host {{ {UNKNOWN} = 1 }}
  fleet {{
    {UNKNOWN} = 1
    subnet_ids = ["subnet-0123456789abcdef0"]
  }}
  archive {{ {UNKNOWN} = 1 }}
  alarms {{ {UNKNOWN} = 1 }}
  backend "s3" {{
    {UNKNOWN} = 1
    bucket = "state-bucket"
  }}
}}
capture "two" {{
  region    = "eu-west-1"
  vpc_id    = "vpc-0123456789abcdef0"
  subnet_id = "subnet-0123456789abcdef0"
  vni       = 2
  network {{ mirror_source_cidrs = ["10.0.0.0/16"] }}
  backend "local" {{ {UNKNOWN} = 1 }}
}}
'''


def block_name(field: str) -> str:
    """`capture "one" > filter > rule[0] > x` -> `capture "<name>" > filter > rule`."""
    path = field.rpartition(" > ")[0] if " > " in field else ""
    path = re.sub(r'^capture "[^"]*"', 'capture "<name>"', path)
    return re.sub(r"\[\d+\]", "", path)


def fields_in_code(tmp_path: Path) -> dict[str, set[str]]:
    inventory = tmp_path / "every-block.hcl"
    inventory.write_text(EVERY_BLOCK)
    with pytest.raises(MirrorcapError) as refused:
        load(inventory)
    blocks: dict[str, set[str]] = {}
    for problem in refused.value.problems:
        if problem.field.endswith(UNKNOWN) and "allowed here: " in problem.fix:
            blocks[block_name(problem.field)] = set(problem.fix.split("allowed here: ", 1)[1].split(", "))
    return blocks


def block_calls() -> int:
    """How many blocks the loader reads: its `Block(...)` calls."""
    n = 0
    for source in INVENTORY_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Block":
                n += 1
    return n


def fields_in_doc(text: str) -> dict[str, set[str]]:
    """Each `## ` section headed by a block's path (in a code span, as errors name it; `The file`
    for the top level) -> the fields its tables list (a first cell in a code span)."""
    blocks: dict[str, set[str]] = {}
    for section in re.split(r"^(?=## )", text, flags=re.M):
        head = re.match(r"## (?:`([^`]+)`|(The file))", section)
        if not head:
            continue
        name = head.group(1) or ""
        blocks[name] = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))
    return blocks


def test_every_block_of_the_loader_is_reached(tmp_path):
    code = fields_in_code(tmp_path)
    assert len(code) == block_calls(), ("the loader reads a block this test's inventory does not have: add it to EVERY_BLOCK",
                                        sorted(code))


def test_docs_list_every_field_and_no_other(tmp_path):
    code = fields_in_code(tmp_path)
    docs = fields_in_doc(DOC.read_text())
    problems = []
    for block, fields in sorted(code.items()):
        label = block or "The file"
        if block not in docs:
            problems.append(f"no section `## `{label}`` for the block")
            continue
        problems += [f"{label} > {f}: in the code, not in docs/inventory.md" for f in sorted(fields - docs[block])]
        problems += [f"{label} > {f}: in docs/inventory.md, not in the code" for f in sorted(docs[block] - fields)]
    problems += [f"section `{b}`: no such block in the code" for b in sorted(set(docs) - set(code))]
    assert not problems, "\n".join(problems)


def test_a_field_missing_from_the_docs_is_found(tmp_path):
    code = fields_in_code(tmp_path)
    text = DOC.read_text()
    storage = 'capture "<name>" > storage'
    assert "size_gib" in code[storage]
    cut = re.sub(r"^\| `size_gib` \|.*\n", "", text, flags=re.M)
    assert cut != text
    assert "size_gib" not in fields_in_doc(cut)[storage]
