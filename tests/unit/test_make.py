"""make's AWS targets on a machine without AWS credentials: one line saying what
to do, never a Node stack trace, and nothing run against AWS. The real Makefile,
in the repository, with the example inventory."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from helpers import ROOT

MAKE_ERROR = re.compile(r"^make(\[\d+\])?: \*\*\* \[Makefile:\d+: [\w-]+\] Error (\d+)$")


def make(*args: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MAKE")) and k not in ("MFLAGS", "MIRRORCAP_INVENTORY")}
    e.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)


def said(r: subprocess.CompletedProcess) -> tuple[list[str], int]:
    """What the target printed (make's own "*** Error" line set apart), and the recipe's exit code make reports."""
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    errors = [m for m in map(MAKE_ERROR.match, lines) if m]
    assert len(errors) == 1, lines
    return [line for line in lines if not MAKE_ERROR.match(line)], int(errors[0].group(2))


@pytest.mark.parametrize("target", ["diff", "deploy", "output", "destroy"])
def test_without_credentials_one_line_and_no_node(target):
    r = make(target, "STACK=prod")
    assert r.returncode == 2  # make's own code for a failed recipe
    lines, code = said(r)
    assert lines == [f"make {target}: no AWS credentials: set AWS_PROFILE (after `aws sso login`) or "
                     "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the capture's account"], lines
    assert code == 3 and "node:" not in r.stderr  # could not reach AWS and "    at " not in r.stderr


def test_state_bucket_without_credentials():
    lines, code = said(make("state-bucket"))
    assert code == 3 and lines == ["make state-bucket: no AWS credentials: set AWS_PROFILE (after `aws sso login`) or "
                                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the capture's account"]


def test_a_missing_or_unknown_stack_is_a_usage_error():
    lines, code = said(make("diff"))
    assert code == 2 and lines == ["make diff: usage: make diff STACK=<capture name>"]
    lines, code = said(make("destroy", "STACK=nope"))
    assert code == 2 and lines == ["make destroy: no capture named 'nope' in capture.hcl: use one of prod"]
