"""Text from outside (an inventory, a lock, a plan, AWS's answers) shown as it is: every character that
changes how the text around it is shown without being seen is written by its code point instead.
At the bottom of the package (errors.py shows problems with it; workflow/markdown.py builds on it)."""

from __future__ import annotations

import re

# Characters that change how text around them is shown without being seen: terminal escapes (ESC and
# every C0/C1 control but tab and newline) and Unicode's bidirectional controls (U+202E turns text
# around: "Trojan Source"), zero-width and other format characters. Shown by their code point instead.
_UNSEEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


def inert(text: object) -> str:
    """`text` with every unseen character (_UNSEEN) written as <U+XXXX>: what is shown is what it holds."""
    return _UNSEEN.sub(lambda m: f"<U+{ord(m.group(0)):04X}>", str(text))
