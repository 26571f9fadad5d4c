"""Every relative link in README.md and docs/*.md reaches a file of the
repository, and every #anchor a heading of the page it names (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import ROOT

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, file: ...


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text links can be in: code blocks and code spans hold examples, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code spans' content, a link's text), lowercased,
    punctuation but `-` and `_` dropped, spaces as `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    # HTML tags drop out, but not `<name>` in a code span: that is text.
    text = "".join(part if part.startswith("`") else re.sub(r"<[^>]+>", "", part)
                   for part in re.split(r"(`[^`]*`)", text)).replace("`", "")
    text = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, text in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = prose(path.read_text())
    return INLINE_LINK.findall(text) + REFERENCE_DEF.findall(text)


def broken(path: Path, root: Path = ROOT) -> list[str]:
    root = root.resolve()
    found = []
    for target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            found.append(f"{target}: no such file")
        elif root not in (dest, *dest.parents):
            found.append(f"{target}: outside the repository")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            found.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return found


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert not broken(page), f"{page.relative_to(ROOT)}: fix or remove: {broken(page)}"


def test_the_docs_exist_and_the_readme_links_every_page():
    readme = {t.partition("#")[0] for t in links(ROOT / "README.md")}
    for name in ("inventory", "capture-host", "fleets", "operations", "workflow", "architecture", "security", "benchmarks",
                 "commands", "find"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), name
        assert f"docs/{name}.md" in readme, f"README.md does not link docs/{name}.md"


def test_the_checker_finds_what_is_broken(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## Plan time at 1,000 sources\n\n## `mirrorcap check`\n\n"
                                       "## `capture \"<name>\" > storage`\n\n## <a id=\"x\"></a>Seen <b>twice</b>\n\n## Seen twice\n")
    page.write_text("# Page\n\n[ok](other.md#plan-time-at-1000-sources) [ok](other.md#mirrorcap-check) [ok](#page)\n"
                    "[ok](other.md#capture-name--storage) [ok](other.md#seen-twice) [ok](other.md#seen-twice-1)\n"
                    "[gone](missing.md) [bad anchor](other.md#nowhere) [self](#not-here) [web](https://example.com/x)\n"
                    "`[in code](missing-too.md)`\n\n```\n[in a block](missing-three.md)\n```\n")
    (tmp_path / "repo").mkdir()
    outside = tmp_path / "repo" / "out.md"
    outside.write_text("[up](../page.md)\n")
    assert broken(page, tmp_path) == ["missing.md: no such file", "other.md#nowhere: no heading #nowhere in other.md",
                                      "#not-here: no heading #not-here in page.md"]
    assert broken(outside, tmp_path / "repo") == ["../page.md: outside the repository"]
