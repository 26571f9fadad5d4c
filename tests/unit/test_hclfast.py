"""hclfast reads the plain subset into exactly python-hcl2's values, and leaves everything else to it.

Compared with python-hcl2 itself (hclfile.parse_general): on every inventory in the repository, on the
benchmark's generated fleet, and on generated documents mixing the subset with what lies just outside it
(escapes, templates, floats, negatives, null, keywords, repeats, layouts the grammar reads otherwise).
Values are compared with their order (json.dumps), since map and block order reaches Terraform.
"""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ROOT
from mirrorcap.errors import MirrorcapError
from mirrorcap.inventory import hclfast
from mirrorcap.inventory.hclfile import parse_general

sys.path.insert(0, str(ROOT / "bench"))
from inventory_scale import fleet_inventory  # noqa: E402  (the benchmark's 8,000-source fleet)

INVENTORIES = sorted([ROOT / "capture.hcl", *(ROOT / "tests" / "fixtures").glob("*.hcl")])


def same(fast, text: str) -> None:
    """fast is None (declined), or python-hcl2 reads `text` into the same values, in the same order."""
    if fast is None:
        return
    try:
        general = parse_general(text, "x.hcl")
    except MirrorcapError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"hclfast read what python-hcl2 refuses ({exc}):\n{text}")
    assert json.dumps(fast) == json.dumps(general), text


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.name)
def test_every_inventory_here_reads_the_same(path):
    text = path.read_text()
    same(hclfast.parse(text), text)


def test_the_plain_inventories_are_read_by_the_subset():
    """Else the speed is not there: the example, the fleet and the benchmark's 8,000 sources are plain."""
    for text in [(ROOT / "capture.hcl").read_text(), (ROOT / "tests" / "fixtures" / "fleet.hcl").read_text(), fleet_inventory(8000)]:
        fast = hclfast.parse(text)
        assert fast is not None
        same(fast, text)


OUTSIDE = {
    "float": "a = 1.5", "exponent": "a = 1e3", "negative": "a = -1", "null": "a = null", "bare word": "a = gp3",
    "backslash": 'a = "x\\"y"', "escape": 'a = "x\\ny"', "template": 'a = "${x}"', "escaped template": 'a = "$${x}"', "directive": 'a = "%{ if x }y%{ endif }"',
    "heredoc": "a = <<EOT\nx\nEOT", "block comment": "/* x */\na = 1", "carriage return": "a = 1\r\n", "keyword name": "in = 1",
    "repeat": "a = 1\na = 2", "repeat in a map": "a = { k = 1, k = 2 }", "quoted and bare key": 'a = { k = 1, "k" = 2 }',
    "block named like an attribute": "a = 1\na {}", "two on a line": "a = 1 b = 2", "operator": "a = 1 + 2",
    "leading zero": "a = 012", "huge integer": "a = 99999999999999999999", "newline before =": "a\n= 1",
    "string over two lines": 'a = "x\ny"', "control character": 'a = "x\x1by"', "bare label": "b x {}",
    "unclosed": "b {", "syntax error": "a = ", "index": 'a = "x"[0]', "function": "a = f(1)",
}


@pytest.mark.parametrize("case", sorted(OUTSIDE))
def test_outside_the_subset_is_left_to_python_hcl2(case):
    assert hclfast.parse(OUTSIDE[case]) is None


# --- generated documents: the subset's pieces and their near neighbours --------------------------------

NAMES = st.sampled_from(["a", "b", "eni_id", "tags", "source", "x-y", "_z", "in", "true", "null", "for_each", "format", "if_x"])
STRING_TEXT = st.text(st.sampled_from(list("az09 -_.:/#=,{}[]\"'$%é\u202e\x1b\\\t")), max_size=8)
ATOMS = st.one_of(
    STRING_TEXT.map(lambda s: '"' + s + '"'),
    st.sampled_from(["0", "1", "42", "012", "-1", "1.5", "1e3", "true", "false", "null", "gp3", "99999999999999999999"]),
)
# Mostly inside the subset: text without backslashes, quotes or templates, plain names, integers.
PLAIN_TEXT = st.text(st.sampled_from(list("az09 -_.:/#=,{}[]'$%é\u202e\u00a0")), max_size=8)
PLAIN_ATOMS = st.one_of(PLAIN_TEXT.map(lambda s: '"' + s + '"'), st.integers(0, 10**18).map(str), st.sampled_from(["true", "false"]))
PLAIN_NAMES = st.sampled_from(["a", "b", "eni_id", "tags", "x-y", "_z", "format", "if_x", "description"])
SPACE = st.sampled_from([" ", "", "  ", "\t", "\n", " # c\n", " // c\n"])


def values(depth: int):
    if depth == 0:
        return ATOMS
    inner = values(depth - 1)
    lists = st.builds(lambda items, seps, end: "[" + "".join(v + s for v, s in zip(items, seps)) + end + "]",
                      st.lists(inner, max_size=3), st.lists(st.sampled_from([", ", ",", ",\n", "\n", " "]), min_size=3, max_size=3),
                      SPACE)
    keys = st.one_of(NAMES, STRING_TEXT.map(lambda s: '"' + s + '"'))
    maps = st.builds(lambda items, end: "{" + "".join(f"{k}{eq}{v}{sep}" for k, eq, v, sep in items) + end + "}",
                     st.lists(st.tuples(keys, st.sampled_from([" = ", "=", ": ", " =\n"]), inner,
                                        st.sampled_from([", ", ",", "\n", " ", ",\n"])), max_size=3), SPACE)
    return st.one_of(inner, lists, maps)


def bodies(depth: int):
    attribute = st.builds(lambda n, v: f"{n} = {v}", NAMES, values(2))
    items = [attribute]
    if depth:
        labels = st.lists(st.one_of(STRING_TEXT.map(lambda s: '"' + s + '"'), NAMES), max_size=2).map(" ".join)
        items.append(st.builds(lambda n, lab, b, sp: f"{n} {lab} {{{sp}{b}}}", NAMES, labels, bodies(depth - 1), SPACE))
    return st.lists(st.tuples(st.one_of(items), SPACE), max_size=4).map(lambda xs: "".join(i + s for i, s in xs))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(2))
def test_a_generated_document_reads_the_same_or_is_left_to_python_hcl2(text):
    same(hclfast.parse(text), text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["capture", "source", "tags", "backend"]), st.lists(PLAIN_TEXT, max_size=2),
                          st.lists(st.tuples(st.one_of(PLAIN_NAMES, NAMES), st.one_of(PLAIN_ATOMS, PLAIN_ATOMS, ATOMS)), max_size=3)),
                min_size=1, max_size=4))
def test_generated_blocks_in_the_plain_layout_read_the_same(blocks):
    """The layout inventories are written in (one attribute a line, blocks on their own lines): mostly
    inside the subset, so these compare values rather than declines."""
    text = "".join(f"{kind} {' '.join(chr(34) + lab + chr(34) for lab in labels)} {{\n"
                   + "".join(f"  {n} = {v}\n" for n, v in attrs) + "}\n" for kind, labels, attrs in blocks)
    same(hclfast.parse(text), text)
