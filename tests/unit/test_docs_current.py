"""The prose docs name what the code has today: every `mirrorcap ...` command they show is
one the app has, every modules/mirrorcap path they name exists, and the exit codes are
one table (docs/operations.md), the same as errors.EXIT_CODES.

The commands come from the Typer app itself and the paths from the file system, so a
renamed command or module fails here until the docs follow it."""

from __future__ import annotations

import re

import pytest
import typer

from helpers import ROOT
from mirrorcap.cli import app
from mirrorcap.errors import EXIT_CODES

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "packer" / "README.md",
         ROOT / "workflows" / "README.md"]
GENERATED = ROOT / "docs" / "commands.md"
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)((?:(?!\1).)+?)\1", re.S)
# A command as a reader would type it: at the start of a code span or a code line ($ optional).
INVOCATION = re.compile(r"(?:^|\$ |`)mirrorcap((?: +[a-z][a-z-]*){1,2})", re.M)
PACKAGE_PATH = re.compile(r"modules/mirrorcap/[A-Za-z0-9_./-]*[A-Za-z0-9_]")
EXIT_ROW = re.compile(r"^\| `(\d)` \| (.+?) \|$", re.M)


def code(text: str) -> str:
    """The code a page shows: fenced blocks and code spans, each span on its own line."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    spans = [m.group(2) for m in CODE_SPAN.finditer(FENCE.sub("", text))]
    return "\n".join(blocks + ["`" + s for s in spans])


def commands() -> dict[str, set[str]]:
    """{command: its subcommands (empty for a plain command)} as the app has them."""
    root = typer.main.get_command(app)
    return {name: set(getattr(cmd, "commands", None) or ()) for name, cmd in root.commands.items()}


def unknown_commands(text: str, known: dict[str, set[str]]) -> list[str]:
    wrong = []
    for words in INVOCATION.findall(code(text)):
        verb, *rest = words.split()
        if verb not in known:
            wrong.append(f"mirrorcap {verb}")
        elif known[verb] and rest and rest[0] not in known[verb]:
            wrong.append(f"mirrorcap {verb} {rest[0]}")
    return wrong


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_exists(page):
    assert not unknown_commands(page.read_text(), commands()), f"{page.relative_to(ROOT)} shows commands the app does not have"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_package_path_named_exists(page):
    missing = sorted({p for p in PACKAGE_PATH.findall(page.read_text()) if not (ROOT / p).exists()})
    assert not missing, f"{page.relative_to(ROOT)} names paths that are gone: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_is_shown_as_a_module_run(page):
    """The verbs are one app: `python -m mirrorcap VERB`, never a module of the package run by itself."""
    assert not re.findall(r"-m mirrorcap\.[\w.]+", page.read_text()), f"{page.relative_to(ROOT)}: use `mirrorcap VERB`"


def test_the_exit_codes_are_one_table_and_the_codes_of_errors_py():
    text = (ROOT / "docs" / "operations.md").read_text()
    assert "## Exit codes" in text
    rows = {int(code): meaning for code, meaning in EXIT_ROW.findall(text)}
    assert set(rows) == set(EXIT_CODES), f"docs/operations.md's exit codes {sorted(rows)} are not errors.py's {sorted(EXIT_CODES)}"
    others = [p.relative_to(ROOT) for p in PAGES if p not in (ROOT / "docs" / "operations.md", GENERATED)
              and "| code | meaning |" in p.read_text()]
    assert not others, f"the exit-code table is kept once, in docs/operations.md; link it from {others}"


def test_the_checks_find_stale_names():
    """The checks can fail: old commands and old paths are found, current ones are not."""
    known = commands()
    stale = ("run `python -m mirrorcap.workflow.bake vars`, then `mirrorcap bake vars` and `mirrorcap bake bogus`\n"
             "```\n$ mirrorcap deploy --stack prod\nmirrorcap find 'host 10.0.0.1' --dir .\n```\n"
             "`mirrorcap review verify` and `mirrorcap-health` and mirrorcap turns prose into nothing\n")
    assert unknown_commands(stale, known) == ["mirrorcap deploy", "mirrorcap bake bogus"]
    assert {"find", "index", "preflight", "state-bucket", "bake", "review"} <= set(known)
    paths = PACKAGE_PATH.findall("`modules/mirrorcap/live/handler.py` and modules/mirrorcap/remirror/.")
    assert [p for p in paths if not (ROOT / p).exists()] == ["modules/mirrorcap/live/handler.py"]
