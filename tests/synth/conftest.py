"""The synthesized fixtures the synth tests share, each synthesized once per run.

example: the bundled capture.hcl and its lock; edge: two stacks sharing a source,
gp3, a named key, IPv6, tag sources and auto_mirror; many: four stacks with up
to 29 sources; fleet: a fleet (NLB, Auto Scaling group, archive) and a single host
with an archive; odd: inventory text that must reach Terraform literally
(expressions, quotes, heredoc markers), set on the parsed inventory so that
validation, whatever it allows, is not what it proves.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURES, env, mirrorcap
from synthesized import ODD, SYNTH_ODD, prepare


@pytest.fixture(scope="session")
def example(tmp_path_factory) -> Path:
    return prepare(tmp_path_factory.mktemp("example"))


@pytest.fixture(scope="session")
def edge(tmp_path_factory) -> Path:
    return prepare(tmp_path_factory.mktemp("edge"), (FIXTURES / "edge.hcl").read_text())


@pytest.fixture(scope="session")
def many(tmp_path_factory) -> Path:
    return prepare(tmp_path_factory.mktemp("many"), (FIXTURES / "many.hcl").read_text())


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> Path:
    return prepare(tmp_path_factory.mktemp("fleet"), (FIXTURES / "fleet.hcl").read_text())


@pytest.fixture(scope="session")
def odd(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("odd")
    shutil.copy(FIXTURES / "odd.hcl", work / "capture.hcl")
    assert mirrorcap("sessions", "--write", cwd=work).returncode == 0
    r = subprocess.run([sys.executable, "-c", SYNTH_ODD, json.dumps(ODD)], cwd=work, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return work
