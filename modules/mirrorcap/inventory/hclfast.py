"""The plain subset of HCL an inventory is written in, read without the general parser.

python-hcl2 (lark's LALR parser, then a rule object per node, then its serializer) reads
about 100 KB of inventory a second: an 8,000-source fleet took 9-15 s to validate. Nearly
every inventory is blocks with quoted labels, `name = value` lines and `#`/`//` comments,
the values quoted strings without escapes or templates, decimal integers, true/false,
lists and maps of them. This reads exactly that, in one regular-expression pass and a
small recursive descent, into the values python-hcl2 returns for it.

Anything else returns None, and the caller reads the text with python-hcl2 as before:
an expression, a float, a negative number, null, a backslash, `${`/`%{`/`$${`, a heredoc,
a `/* */` comment, a carriage return, a name HCL keeps for itself, an attribute or map
key given twice, a layout the grammar might read otherwise (two attributes on one line,
`=` on the next line), a syntax error. So every problem is still found and reported by
the one parser that reports them, and what this accepts it reads as python-hcl2 does
(tests/unit/test_hclfast.py compares the two on every fixture and on generated documents).
"""

from __future__ import annotations

import re
from typing import Any

# One token at a time; `bad` is any character the subset does not have.
_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+)
  | (?P<nl>(?:(?:\#|//)[^\n]*)?\n)
  | (?P<str>"(?:[^"\\$%\x00-\x1f\x7f-\x9f]|[$%](?![{$%]))*")
  | (?P<int>0(?![0-9])|[1-9][0-9]{0,17})
  | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<punct>[{}\[\]=,:])
  | (?P<bad>.)
""", re.VERBOSE | re.DOTALL)

# Names the grammar reads as keywords or literals: left to python-hcl2.
_RESERVED = frozenset({"if", "in", "for", "for_each", "else", "endif", "endfor", "true", "false", "null"})
_LITERALS = {"true": True, "false": False}
# Deeper than any inventory nests (capture > source > tags): python-hcl2 decides the rest.
_MAX_DEPTH = 32
_END = ("end", "")


class _Decline(Exception):
    """Not in the subset: python-hcl2 reads it."""


def parse(text: str) -> dict[str, Any] | None:
    """python-hcl2's values for `text` (as hclfile.parse_hcl asks for them), or None when `text`
    is not in the plain subset (or is not HCL at all)."""
    if "\r" in text:
        return None
    tokens = []
    for m in _TOKEN.finditer(text + "\n"):  # the newline: as parse_hcl gives python-hcl2
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "bad":
            return None
        tokens.append((kind, m.group()))
    tokens.append(_END)
    try:
        reader = _Reader(tokens)
        return reader.body(top=True, depth=0)
    except _Decline:
        return None


class _Reader:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens = tokens
        self.at = 0

    def next(self) -> tuple[str, str]:
        tok = self.tokens[self.at]
        self.at += 1
        return tok

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at]

    def skip_newlines(self) -> None:
        while self.tokens[self.at][0] == "nl":
            self.at += 1

    def body(self, top: bool, depth: int) -> dict[str, Any]:
        """A file's or a block's attributes and blocks, as python-hcl2's body serializes them:
        keys in the order first seen, blocks of one type a list in order."""
        if depth > _MAX_DEPTH:
            raise _Decline
        result: dict[str, Any] = {}
        attributes: set[str] = set()
        while True:
            self.skip_newlines()
            kind, text = self.next()
            if kind == "end" and top or text == "}" and kind == "punct" and not top:
                return result
            if kind != "name" or text in _RESERVED:
                raise _Decline
            kind, after = self.next()
            if kind == "punct" and after == "=":
                if text in result:  # twice, or a block of the name: python-hcl2 says which
                    raise _Decline
                result[text] = self.value(depth + 1)
                attributes.add(text)
            else:
                labels = []
                while kind == "str":
                    labels.append(after[1:-1])
                    kind, after = self.next()
                if (kind, after) != ("punct", "{") or text in attributes:
                    raise _Decline
                block = self.body(top=False, depth=depth + 1)
                for label in reversed(labels):
                    block = {label: block}
                result.setdefault(text, []).append(block)
            follow = self.peek()
            if not (follow[0] == "nl" or follow == ("punct", "}") and not top):
                raise _Decline  # two on one line, or anything after a value: the grammar's call

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise _Decline
        kind, text = self.next()
        if kind == "str":
            return text[1:-1]
        if kind == "int":
            return int(text)
        if kind == "name" and text in _LITERALS:
            return _LITERALS[text]
        if (kind, text) == ("punct", "["):
            return self.list(depth)
        if (kind, text) == ("punct", "{"):
            return self.map(depth)
        raise _Decline

    def list(self, depth: int) -> list[Any]:
        items = []
        while True:
            self.skip_newlines()
            if self.peek() == ("punct", "]"):
                self.at += 1
                return items
            items.append(self.value(depth + 1))
            self.skip_newlines()
            kind, text = self.next()
            if (kind, text) == ("punct", "]"):
                return items
            if (kind, text) != ("punct", ","):
                raise _Decline

    def map(self, depth: int) -> dict[str, Any]:
        items: dict[str, Any] = {}
        while True:
            self.skip_newlines()
            kind, text = self.next()
            if (kind, text) == ("punct", "}"):
                return items
            if kind == "str":
                key = text[1:-1]
            elif kind == "name" and text not in _RESERVED:
                key = text
            else:
                raise _Decline
            if self.next() not in (("punct", "="), ("punct", ":")) or key in items:
                raise _Decline
            items[key] = self.value(depth + 1)
            follow = self.peek()
            if follow == ("punct", ","):
                self.at += 1
            elif follow[0] != "nl" and follow != ("punct", "}"):
                raise _Decline
