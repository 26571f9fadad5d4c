"""Typed access to one parsed HCL block, recording a Problem for each bad field.

Readers never raise on bad input: they record the problem and return a safe
placeholder, so one pass reports every mistake in the file.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any, Optional

from ..errors import Collector

_MISSING = object()


class Block:
    def __init__(self, errors: Collector, path: str, data: Any, allowed: set[str]):
        self.errors = errors
        self.path = path
        self.allowed = allowed
        if not isinstance(data, dict):
            errors.add(path, f"expected a block `{{ ... }}`, got {type(data).__name__}", "write it as a block with braces")
            data = {}
        self.data = data
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"did you mean `{close[0]}`?" if close else "allowed here: " + ", ".join(sorted(allowed))
                errors.add(self.field(key), f"unknown field `{key}`", f"remove it or rename it; {hint}")

    def field(self, key: str) -> str:
        return f"{self.path} > {key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _get(self, key: str, required: bool, fix: str) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                self.errors.add(self.field(key), "required field is missing", fix)
            return _MISSING
        return value

    def string(self, key: str, default: str = "", *, required: bool = False, pattern: Optional[str] = None,
               what: str = "", fix: str = "") -> str:
        value = self._get(key, required, fix or f"add `{key} = \"...\"`")
        if value is _MISSING:
            return default
        # Any text is accepted as it is, `${` and `%{` included: nothing in the
        # inventory is evaluated, and the stack escapes it for Terraform (stack/literal.py).
        if not isinstance(value, str):
            self.errors.add(self.field(key), f"expected a plain string, got {value!r}", f'write it as `{key} = "..."` (no expressions)')
            return default
        if pattern and not re.fullmatch(pattern, value):
            self.errors.add(self.field(key), f"{value!r} is not {what}", fix)
            return default
        return value

    def integer(self, key: str, default: int = 0, *, lo: int, hi: int, required: bool = False, fix: str = "") -> int:
        value = self._get(key, required, fix or f"add `{key} = <number from {lo} to {hi}>`")
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.add(self.field(key), f"expected a whole number, got {value!r}", f"write a number from {lo} to {hi}, without quotes")
            return default
        if not lo <= value <= hi:
            self.errors.add(self.field(key), f"{value} is out of range ({lo} to {hi})", fix or f"use a number from {lo} to {hi}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.errors.add(self.field(key), f"expected true or false, got {value!r}", f"write `{key} = true` or `{key} = false`, without quotes")
            return default
        return value

    def string_list(self, key: str, *, pattern: Optional[str] = None, what: str = "", fix: str = "") -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.errors.add(self.field(key), f"expected a list of strings, got {value!r}", f'write `{key} = ["...", "..."]`')
            return ()
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or (pattern and not re.fullmatch(pattern, item)):
                self.errors.add(f"{self.field(key)}[{i}]", f"{item!r} is not {what or 'a string'}", fix or "correct the value")
                continue
            out.append(item)
        return tuple(out)

    def cidr(self, key: str, default: str) -> str:
        value = self.string(key, default)
        return check_cidr(self.errors, self.field(key), value) or default

    def cidr_list(self, key: str) -> tuple[str, ...]:
        values = self.string_list(key)
        return tuple(c for i, v in enumerate(values) if (c := check_cidr(self.errors, f"{self.field(key)}[{i}]", v)))

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.errors.add(self.field(key), f"expected a map, got {value!r}", f'write `{key} = {{ Name = "value" }}`')
            return ()
        out = []
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                self.errors.add(f"{self.field(key)}.{k}", f"expected a string value, got {v!r}", "quote the value")
                continue
            out.append((str(k), str(v)))
        return tuple(sorted(out))

    def blocks(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, dict):
            return [value]
        if isinstance(value, list):
            return value
        self.errors.add(self.field(key), f"expected `{key} {{ ... }}` blocks, got {value!r}", f"write `{key} {{ ... }}` as a block")
        return []

    def single_block(self, key: str) -> Any:
        found = self.blocks(key)
        if len(found) > 1:
            self.errors.add(self.field(key), f"`{key}` block given {len(found)} times", f"merge them into one `{key} {{ ... }}` block")
        return found[0] if found else {}


def check_cidr(errors: Collector, field: str, value: str) -> Optional[str]:
    if not value:
        return None
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        errors.add(field, f"{value!r} is not a CIDR block", 'write it like "10.0.0.0/16" (IPv4) or "2001:db8::/56" (IPv6)')
        return None
    if "/" not in value:
        errors.add(field, f"{value!r} has no prefix length", f'write "{net.with_prefixlen}" (a single address is /32)')
        return None
    if str(net) != value:
        errors.add(field, f"{value!r} has host bits set", f'write the network address: "{net.with_prefixlen}"')
        return None
    return value
