"""`mirrorcap --help` stays fast: importing the command line loads Typer and mirrorcap's light modules,
never what a command needs only when it runs (boto3, the HCL parser, Jinja2, cdktn, ...). Checked in
a fresh interpreter by what is in sys.modules, not by a clock."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("boto3", "botocore", "hcl2", "lark", "jinja2", "cdktn", "cdktn_provider_aws", "constructs", "jsii", "duckdb", "yaml", "moto")

PROBE = """
import json, sys
import mirrorcap.cli
from typer.main import get_command
group = get_command(mirrorcap.cli.app)
print(json.dumps({"modules": sorted(sys.modules), "commands": sorted(group.commands)}))
"""


def loaded() -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def test_importing_the_cli_loads_nothing_heavy():
    got = loaded()
    heavy = sorted(m for m in got["modules"] if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy
    # the package's own heavy parts are loaded by the commands that run them, not by the app
    ours = [m for m in got["modules"] if m.startswith("mirrorcap.")]
    assert not [m for m in ours if m.startswith(("mirrorcap.inventory", "mirrorcap.stack", "mirrorcap.synth", "mirrorcap.host",
                                                 "mirrorcap.account_checks", "mirrorcap.remirror", "mirrorcap.archive"))], ours


def test_every_verb_is_on_the_one_app():
    assert loaded()["commands"] == sorted(["validate", "sessions", "render", "synth", "capacity", "check", "window", "find", "index", "preflight",
                                            "state-bucket", "ci-roles", "bake", "review"])


def test_the_probe_sees_a_heavy_import_when_there_is_one():
    """The check above could pass by never seeing anything: the same probe after a command's import does see botocore
    (the drift check's). (Loading a plain inventory is not one: python-hcl2 loads only for text outside hclfast's subset.)"""
    r = subprocess.run([sys.executable, "-c", "import sys, mirrorcap.cli, mirrorcap.account_checks.drift; print('botocore' in sys.modules)"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "True"


def test_h_is_help_everywhere_and_says_the_exit_codes():
    from mirrorcap.errors import EXIT_CODES
    for args in ([], ["validate"], ["review"], ["review", "verify"], ["bake", "vars"], ["state-bucket"]):
        short = subprocess.run([sys.executable, "-m", "mirrorcap", *args, "-h"], capture_output=True, text=True)
        long = subprocess.run([sys.executable, "-m", "mirrorcap", *args, "--help"], capture_output=True, text=True)
        assert short.returncode == 0 and short.stdout == long.stdout, (args, short.stderr)
        if args in ([], ["validate"], ["review"]):
            assert "Exit codes:" in short.stdout and all(f"{code}  " in short.stdout for code in EXIT_CODES), args
