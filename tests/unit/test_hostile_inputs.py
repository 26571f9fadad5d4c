"""Inputs that once ended in a traceback, in arithmetic on nonsense, or in a silent change: each now
ends in one line naming the place, one naming the fix, and exit 1 or 2 (or, where it is no error,
an inert rendering). The inventory's own cases are in test_inventory.py / test_fleet_inventory.py,
the lock's in test_lockfile.py, window's and check's against moto in tests/aws/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import EXAMPLE, ROOT, minimal, write
from mirrorcap.capacity import fleet_estimate
from mirrorcap.cli import app
from mirrorcap.inventory import load
from mirrorcap.workflow.comment import comment
from mirrorcap.workflow.drift import drift_summary
from mirrorcap.workflow.plan import parse_plan, summarize_plan
from mirrorcap.workflow.sessions import SESSION_TYPE, SessionChange, parse_lock, session_sentences

RECORDED = ROOT / "tests" / "fixtures" / "review"
EXAMPLE_ENI = "eni-0000000000000001a"


def run(*args: str, **kw):
    return CliRunner().invoke(app, list(args), **kw)


def one_problem(stderr: str) -> tuple[str, str]:
    """The cause line and the fix line of a single problem (and nothing else, no traceback)."""
    lines = stderr.rstrip("\n").split("\n")
    assert len(lines) == 2 and lines[0].startswith("mirrorcap: ") and lines[1].startswith("  fix: "), stderr
    return lines[0], lines[1]


# --- capacity: numbers no capture host has -------------------------------------------------------

@pytest.mark.parametrize("args,flag", [
    (["--rate", "nan"], "--rate"), (["--rate", "1e300"], "--rate"), (["--rate", "-5"], "--rate"), (["--rate", "0"], "--rate"),
    (["--rate", "50", "--instance-gbps", "nan"], "--instance-gbps"), (["--rate", "50", "--instance-gbps", "-1"], "--instance-gbps"),
    (["--rate", "50", "--instance-gbps", "inf"], "--instance-gbps"), (["--rate", "50", "--retention", "inf"], "--retention"),
    (["--rate", "50", "--retention", "-1"], "--retention"), (["--rate", "50", "--avg-packet", "10"], "--avg-packet"),
    (["--rate", "50", "--tag-instances", "20000"], "--tag-instances"),
])
def test_capacity_refuses_numbers_no_host_has(args, flag):
    r = run("capacity", "-i", str(EXAMPLE), *args)
    assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit))
    cause, fix = one_problem(r.stderr)
    assert f"command line: {flag}: " in cause and "is out of range" in cause and "nan" not in fix


def test_fleet_advice_never_exceeds_what_a_fleet_takes():
    """A rate needing 525 hosts per AZ once got the advice "raise max_per_az", which validate caps at 100."""
    big = fleet_estimate(60_000, 1, azs=2, archive_days=1, volume_type="gp3", volume_gib=1000, instance_type="t3.small")
    assert big.hosts_per_az > 100
    (problem,) = [p for p in big.problems if p.startswith("fleet:")]
    assert "more than a fleet takes (100 per AZ" in problem and "split the sources" in problem and "raise fleet > max_per_az" not in problem
    some = fleet_estimate(500, 1, azs=2, archive_days=1, volume_type="gp3", volume_gib=1000, instance_type="t3.small", max_per_az=1)
    (problem,) = [p for p in some.problems if p.startswith("fleet:")]
    assert f"raise fleet > max_per_az to {some.hosts_per_az}" in problem and some.hosts_per_az <= 100


# --- review: a plan or a lock that is not what Terraform or mirrorcap writes ------------------------

PLAN = {"format_version": "1.2", "planned_values": {}}
MALFORMED = {
    "a change that is a number": ({**PLAN, "resource_changes": [1]}, "resource_changes[0]: expected an object"),
    "change not an object": ({**PLAN, "resource_changes": [{"address": "a.b", "change": "create"}]}, "resource_changes[0].change: expected an object"),
    "actions a string": ({**PLAN, "resource_changes": [{"address": "a.b", "change": {"actions": "create"}}]}, "resource_changes[0].change.actions"),
    "an unknown action": ({**PLAN, "resource_changes": [{"address": "a.b", "change": {"actions": ["explode"]}}]}, "resource_changes[0].change.actions"),
    "after a list": ({**PLAN, "resource_changes": [{"address": "a.b", "change": {"actions": ["create"], "after": []}}]}, "resource_changes[0].change.after"),
    "address a number": ({**PLAN, "resource_changes": [{"address": 5, "change": {"actions": ["create"]}}]},
                         "resource_changes[0].address: expected a string"),
    "index an object": ({**PLAN, "resource_changes": [{"address": "a.b", "index": {}, "change": {"actions": ["create"]}}]}, "resource_changes[0].index"),
    "importing a list": ({**PLAN, "resource_changes": [{"address": "a.b", "change": {"actions": ["no-op"], "importing": [1]}}]}, "change.importing"),
    "errored a string": ({**PLAN, "errored": "yes"}, "errored: expected true or false"),
    "resource_changes an object": ({**PLAN, "resource_changes": {}}, "resource_changes: expected a list"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_review_refuses_a_malformed_plan_in_one_line(tmp_path, case):
    plan, words = MALFORMED[case]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    r = run("review", "comment", "--stack", "prod", "--plan-json", str(tmp_path / "plan.json"), "--plan-text", str(RECORDED / "plan.txt"),
            "--lock-before", str(RECORDED / "lock-before.json"), "--lock-after", str(RECORDED / "lock-after.json"))
    assert r.exit_code == 2, r.output
    cause, fix = one_problem(r.stderr)
    assert words in cause and "terraform show -json" in fix


def test_review_refuses_repeated_keys_and_deep_json(tmp_path):
    for text, words in (('{"format_version": "1.2", "format_version": "1.1", "resource_changes": []}', "given twice"),
                        ('{"format_version": "1", "resource_changes": ' + "[" * 100000 + "]" * 100000 + "}", "not JSON")):
        with pytest.raises(Exception) as e:
            parse_plan(text, "plan.json")
        assert words in str(e.value) and "fix:" in str(e.value)
    with pytest.raises(Exception, match="given twice"):
        parse_lock('{"version": 1, "captures": {"prod": {"eni-1": 1, "eni-1": 2}}}', "lock.json")


# --- review: text from descriptions reaches the pull request inert ------------------------------------

HOSTILE = "web\u202egpj.exe \x1b[31mred\x1b[0m see https://evil.example/login or www.evil.example"


def test_the_comment_shows_unseen_characters_and_links_nothing():
    plan = summarize_plan({**PLAN, "resource_changes": [
        {"address": f'aws_ec2_traffic_mirror_session.source["eni-1\u202e"]', "mode": "managed", "type": SESSION_TYPE,
         "index": "eni-1", "change": {"actions": ["create"], "before": None, "after": {"description": f"mirrorcap prod: {HOSTILE}"}}}]})
    sentences = session_sentences("prod", [SessionChange("eni-1", "new", None, 1)], plan)
    body = comment("prod", plan=plan, plan_text=f"  + description = \"{HOSTILE}\"\n", sessions=sentences, lock_name="capture.lock.json")
    assert "\u202e" not in body and "\x1b" not in body  # neither in the sentence, the table nor the folded plan
    assert body.count("U+202E") == 3 and body.count("U+001B") == 4  # each shown where it was (sentence: once, plan: once, address)
    rendered, folded = body.split("<summary>Full plan</summary>")
    assert "https://" not in rendered and "www.evil" not in rendered  # GitHub would link them (not inside the plan's code fence)
    assert "https:\u2060//evil.example/login" in rendered and "www\u2060.evil.example" in rendered  # the text still reads the same
    assert folded.count("```") == 2  # the plan stays fenced
    drift = drift_summary({"drift": True, "findings": [{"capture": "prod", "kind": "x", "subject": "s", "detail": HOSTILE, "fix": "f"}]})
    assert "\u202e" not in drift and "\x1b" not in drift and "https://" not in drift


# --- the inventory's text reaches Terraform as written ---------------------------------------------

def test_hcl_escapes_are_the_text_they_stand_for(workdir):
    """`\\"` is a quote and `$${` is the text `${` (HCL's template escape): once `$${` reached Terraform doubled."""
    text = minimal('  source {\n    eni_id = "eni-0000000000000001a"\n'
                   '    description = "say \\"hi\\" $${literal} %%{ if } ${bare} back\\\\slash"\n  }')
    c, = load(write(workdir, text)).captures
    assert c.sources[0].description == 'say "hi" ${literal} %{ if } ${bare} back\\slash'


def test_a_lone_template_escape_is_the_text_it_stands_for(workdir):
    """HCL's `$${` needs no closing brace: once a syntax error a line further on, or read up to the next `}`
    (here a comment's), swallowing the lines between into the string."""
    text = minimal(f'  source {{\n    eni_id = "{EXAMPLE_ENI}"\n    description = "cost: $${{ and 50%%{{"\n    vni = 777 # }}\n  }}')
    c, = load(write(workdir, text)).captures
    assert c.sources[0].description == "cost: ${ and 50%{" and c.sources[0].vni == 777


# --- the lock: numbers out of AWS's range are refused, not renumbered ---------------------------------

@pytest.mark.parametrize("number", [0, -3, 40000])
def test_sessions_write_refuses_a_lock_number_out_of_range_and_changes_nothing(workdir, number):
    write(workdir, minimal('  source {\n    eni_id = "eni-0000000000000001a"\n  }'))
    lock = workdir / "capture.lock.json"
    lock.write_text(json.dumps({"version": 1, "captures": {"test": {"eni-0000000000000001a": number}}}))
    before = lock.read_bytes()
    r = run("sessions", "--write", "-i", str(workdir / "capture.hcl"))
    assert r.exit_code == 2
    cause, fix = one_problem(r.stderr)
    assert f"captures.test.eni-0000000000000001a: session number {number} is outside 1-32766" in cause and "delete this entry" in fix
    assert lock.read_bytes() == before


def test_sessions_write_says_it_wrote_through_the_link(workdir):
    write(workdir, minimal('  source {\n    eni_id = "eni-0000000000000001a"\n  }'))
    real = workdir / "shared.lock.json"
    real.write_text(json.dumps({"version": 1, "captures": {}}))
    (workdir / "capture.lock.json").symlink_to(real)
    r = run("sessions", "--write", "-i", str(workdir / "capture.hcl"))
    assert r.exit_code == 0 and f"(through the link, to {real})" in r.stderr
    assert (workdir / "capture.lock.json").is_symlink() and "eni-0000000000000001a" in real.read_text()


# --- text from an input reaches the terminal inert -------------------------------------------------

def test_a_capture_label_is_shown_inert(workdir):
    write(workdir, minimal(name="p\x1b[31mrod\x00"))
    r = run("validate", "-i", str(workdir / "capture.hcl"))
    assert r.exit_code == 1 and "\x1b" not in r.stderr and "\x00" not in r.stderr
    assert 'capture "p<U+001B>[31mrod<U+0000>": capture name' in r.stderr


def test_a_syntax_errors_line_is_shown_inert(workdir):
    write(workdir, 'capture "x" {\n  region = "\x1b]0;owned\x07\u202eoof" "again"\n}\n')
    r = run("validate", "-i", str(workdir / "capture.hcl"))
    assert r.exit_code == 1 and "HCL syntax error" in r.stderr
    assert not any(c in r.stderr for c in "\x1b\x07\u202e") and "<U+001B>]0;owned<U+0007><U+202E>oof" in r.stderr


def test_lock_keys_are_shown_inert_by_sessions_write(workdir):
    write(workdir, minimal('  source {\n    eni_id = "eni-0000000000000001a"\n  }'))
    lock = workdir / "capture.lock.json"
    lock.write_text(json.dumps({"version": 1, "captures": {"te\u202est": {"eni-\x1b[2J": 7}}}))
    r = run("sessions", "--write", "-i", str(workdir / "capture.hcl"))
    assert r.exit_code == 0 and "te<U+202E>st eni-<U+001B>[2J: session number 7 -> (removed)" in r.stderr
    assert not any(c in r.stdout + r.stderr for c in "\x1b\u202e")


def test_what_the_account_says_is_shown_inert_by_validate_live():
    """AWS's refusal of a session is its own text (the Stubber test in tests/aws/test_preflight.py has its
    words); EC2's XML carries C1 controls (U+009B is a terminal's CSI) and U+202E, which reached the terminal."""
    from mirrorcap.account_checks.preflight import Finding
    from mirrorcap.cli.validate import live_lines
    said = "InvalidParameterValue: The instance type of the source network interface \u009b2J\u202eis not supported"
    (line,) = live_lines(Path("capture.hcl"), [Finding("error", "prod", "source[0] (eni-1)", f"AWS would refuse a session on eni-1: {said}",
                                                       "remove this source, or fix what AWS names")])
    assert not any(c in line for c in "\u009b\u202e") and "interface <U+009B>2J<U+202E>is not supported" in line
    assert line.startswith('error: capture.hcl: capture "prod" > source[0] (eni-1): AWS would refuse') and "\n  fix: remove" in line


# --- the lock: deep, or a link to nothing ------------------------------------------------------------

@pytest.mark.parametrize("args", [["validate"], ["sessions"], ["render", "--check"]])
def test_a_deep_lock_is_one_problem_not_a_traceback(workdir, args):
    write(workdir, minimal('  source {\n    eni_id = "eni-0000000000000001a"\n  }'))
    (workdir / "capture.lock.json").write_text("[" * 100_000 + "]" * 100_000)
    r = run(*args, "-i", str(workdir / "capture.hcl"))
    assert r.exit_code == (1 if args == ["validate"] else 2) and not isinstance(r.exception, RecursionError)
    cause, fix = one_problem(r.stderr)
    assert "capture.lock.json: not a readable JSON lock file: nested too deeply" in cause and "sessions --write" in fix


def test_validate_refuses_a_lock_that_links_to_nothing(workdir):
    write(workdir, minimal('  source {\n    eni_id = "eni-0000000000000001a"\n  }'))
    (workdir / "capture.lock.json").symlink_to(workdir / "gone.lock.json")
    r = run("validate", "-i", str(workdir / "capture.hcl"))
    assert r.exit_code == 1 and "OK" not in r.stdout
    cause, fix = one_problem(r.stderr)
    assert "which does not exist" in cause and "point the link at the lock file" in fix


# --- the command line: wrong before any AWS call (2), not "could not reach AWS" (3) after the work ----

NO_AWS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
          "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}
WINDOW = ["window", "--capture", "test", "--at", "now"]
WRONG_COMMAND_LINES = {
    "port 70000": (WINDOW + ["--port", "70000"], "--port: 70000 is not a port"),
    "port -1": (WINDOW + ["--port", "-1"], "--port: -1 is not a port"),
    "host not an address": (WINDOW + ["--host", "not-an-ip"], "--host: 'not-an-ip' is not an IP address"),
    "bpf tcp and and": (WINDOW + ["--bpf", "tcp and and"], "--bpf: tcpdump cannot use the filter: can't parse filter expression"),
    "display filter tcp and and": (WINDOW + ["--filter", "tcp and and"], "--filter: tshark cannot use the display filter: \"and\" was unexpected"),
    "display filter closing the window's": (WINDOW + ["--filter", "tcp) || (udp"], "--filter: tshark cannot use the display filter: "),
    "window role garbage": (WINDOW + ["--role-arn", "garbage"], "--role-arn: 'garbage' is not an IAM role ARN"),
    "bucket ../../x": (WINDOW + ["--bucket", "../../x"], "--bucket: '../../x' is not an S3 bucket name"),
    "check role garbage": (["check", "--role-arn", "garbage"], "--role-arn: 'garbage' is not an IAM role ARN"),
    "validate mtus": (["validate", "--source-mtu", "-1"], "--source-mtu: -1 is out of range (68 to 9001)"),
    "validate target mtu huge": (["validate", "--target-mtu", "99999999999999999999"], "--target-mtu: 99999999999999999999 is out of range"),
    "validate live mtu": (["validate", "--live", "--target-mtu", "0"], "--target-mtu: 0 is out of range"),
    "validate live role garbage": (["validate", "--live", "--role-arn", "garbage"], "--role-arn: 'garbage' is not an IAM role ARN"),
}


@pytest.mark.parametrize("case", sorted(WRONG_COMMAND_LINES))
def test_a_wrong_command_line_is_2_before_any_aws_call(workdir, case):
    args, words = WRONG_COMMAND_LINES[case]
    write(workdir, minimal("  archive {}"))
    r = run(*args, "-i", str(workdir / "capture.hcl"), *(["--out", str(workdir / "w.pcap")] if args[0] == "window" else []), env=NO_AWS)
    assert r.exit_code == 2, r.stderr
    cause, fix = one_problem(r.stderr)
    assert cause.startswith("mirrorcap: ") and f"command line: {words}" in cause, cause
    assert sorted(p.name for p in workdir.iterdir()) == ["capture.hcl"]


def test_preflight_names_an_unknown_action_before_credentials(workdir):
    write(workdir, minimal())
    r = run("preflight", "explode", "--stack", "test", "-i", str(workdir / "capture.hcl"), env=NO_AWS)
    assert r.exit_code == 2 and "'explode' is not an action" in r.stderr and "credentials" not in r.stderr
    assert "fix: use one of diff, deploy, destroy, output, state-bucket" in r.stderr


def test_preflight_shows_what_botocore_quotes_inert(workdir):
    """botocore's ProfileNotFound quotes AWS_PROFILE: U+202E and U+009B (a terminal's CSI) reached the terminal raw."""
    write(workdir, minimal())
    (workdir / "empty").write_text("")
    hostile = {**NO_AWS, "AWS_PROFILE": "p\u202eq\u009b2J", "AWS_CONFIG_FILE": str(workdir / "empty"),
               "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "empty")}
    r = run("preflight", "diff", "--stack", "test", "-i", str(workdir / "capture.hcl"), env=hostile)
    assert r.exit_code == 3 and "The config profile (p<U+202E>q<U+009B>2J) could not be found" in r.stderr, r.stderr
    assert not any(c in r.stderr for c in "\u202e\u009b")


# --- a reader that goes away ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["sessions"], ["validate"], ["--help"]])
def test_a_closed_pipe_ends_the_command_as_sigpipe_does_in_silence(workdir, args):
    """`mirrorcap sessions | head -1` once exited 1 (the table's "findings") when head had gone."""
    import os
    import subprocess
    import sys
    write(workdir, minimal('  source {\n    eni_id = "eni-0000000000000001a"\n  }'))
    assert run("sessions", "--write", "-i", str(workdir / "capture.hcl")).exit_code == 0
    read, written = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        r = subprocess.run([sys.executable, "-m", "mirrorcap", *args], cwd=workdir, stdout=written, stderr=subprocess.PIPE, text=True,
                           env={k: v for k, v in os.environ.items() if k != "MIRRORCAP_INVENTORY"})
    finally:
        os.close(written)
    assert (r.returncode, r.stderr) == (141, "")
