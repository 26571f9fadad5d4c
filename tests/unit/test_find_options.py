"""`mirrorcap find`'s options checked before anything is read, and where a query is answered
(find/options.py), and the verb refusing through them (exit 2, one line, nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mirrorcap.cli import app
from mirrorcap.find.options import option_problem, query_problem, source
from mirrorcap.find.query import QueryError, parse

OK = dict(flows=True, as_json=False, out=None, out_exists=False, out_dir_exists=False, directory=Path("caps"),
          capture=None, instance=None, engine="duckdb", bucket=None)


def problem(**changes):
    p = option_problem(**{**OK, **changes})
    return None if p is None else (p.field, p.message)


def test_options_a_query_can_be_answered_with_pass():
    assert problem() is None
    assert problem(flows=False, out=Path("x.pcap"), out_dir_exists=True) is None
    assert problem(directory=None, capture="prod", engine="athena") is None
    assert problem(directory=None, capture="prod", instance="i-0123456789abcdef0") is None
    assert problem(directory=None, capture="prod", bucket="b") is None


@pytest.mark.parametrize("changes,field,says", [
    (dict(flows=False), "--out", "nowhere to put the packets"),
    (dict(as_json=True, flows=False, out=Path("x"), out_dir_exists=True), "--json", "--json lists flows"),
    (dict(out=Path("x.pcap"), out_exists=True, out_dir_exists=True), "--out", "x.pcap exists"),
    (dict(out=Path("no/x.pcap")), "--out", "no is not a directory"),
    (dict(directory=None), "--dir / --capture", "say where to look"),
    (dict(capture="prod"), "--dir / --capture", "say where to look"),
    (dict(instance="i-1"), "--instance", "--instance needs --capture"),
    (dict(engine="spark"), "--engine", "unknown engine 'spark'"),
    (dict(engine="athena"), "--engine", "athena queries a capture's archive"),
    (dict(directory=None, capture="prod", engine="athena", bucket="b"), "--bucket", "athena reads the bucket"),
    (dict(directory=None, capture="prod", engine="athena", instance="i-1"), "--instance", "athena reads the archive"),
])
def test_each_impossible_combination_is_named_with_its_option(changes, field, says):
    got = problem(**changes)
    assert got is not None and got[0] == field and says in got[1], got


def test_the_first_problem_a_user_meets_is_the_one_named():
    # no --out and no --dir/--capture: where the packets go comes first, as the help reads
    assert problem(flows=False, directory=None)[0] == "--out"
    assert problem(directory=None, engine="spark")[0] == "--dir / --capture"


def test_a_query_that_does_not_parse_points_at_where_it_stops():
    with pytest.raises(QueryError) as e:
        parse("tcp and port")
    p = query_problem(e.value)
    assert p.field == "QUERY" and p.fix.endswith("^") and "tcp and port" in p.fix


def test_the_source_reads_the_inventory_only_when_the_answer_turns_on_it():
    def unread() -> bool:
        raise AssertionError("the inventory was read")
    assert source(capture=None, instance=None, engine="duckdb", archived=unread) == "dir"
    assert source(capture="prod", instance=None, engine="athena", archived=unread) == "athena"
    assert source(capture="prod", instance="i-1", engine="duckdb", archived=unread) == "ssm"
    assert source(capture="prod", instance=None, engine="duckdb", archived=lambda: True) == "archive"
    assert source(capture="prod", instance=None, engine="duckdb", archived=lambda: False) == "ssm"


def test_the_verb_refuses_through_the_checks_and_writes_nothing(tmp_path):
    out = tmp_path / "taken.pcap"
    out.write_bytes(b"mine")
    r = CliRunner().invoke(app, ["find", "tcp", "--dir", str(tmp_path), "--out", str(out)])
    assert r.exit_code == 2 and "--out" in r.output and "exists" in r.output, r.output
    assert out.read_bytes() == b"mine"
    r = CliRunner().invoke(app, ["find", "tcp", "--dir", str(tmp_path), "--flows", "--engine", "athena"])
    assert r.exit_code == 2 and "athena queries a capture's archive" in r.output, r.output
