"""The SQL `mirrorcap find` sends Athena, and how the Athena runner reads Athena's answers (botocore
Stubber: the responses Athena's API documents, the states a query goes through)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber

from mirrorcap.errors import MirrorcapError
from mirrorcap.find.athena import athena_sql, flow_row, run
from mirrorcap.find.query import QueryError, parse
from mirrorcap.find.select import COLUMNS

VALID = ["tcp", "host 10.0.3.7 and (port 443 or icmp)", "src net 10.0.0.0/8 and not dst port 22", "ip6 and host fd00::7",
         "vni 77 or arp", "not (udp or vni 5)", "after 2026-11-24T23:59:50Z and before 2026-11-25T00:10Z",
         "around 2026-12-03T14:05Z ±2m and net 2001:db8::/32"]
# Every quoted literal Athena's SQL can hold: hex digits (addresses), a fixed word, a day.
LITERAL = re.compile(r"[0-9a-f]*|ip|ip6|arp|rarp|cut|flow|\d{4}-\d{2}-\d{2}")


@pytest.mark.parametrize("query", VALID)
def test_the_sql_holds_only_literals_it_makes_itself(query):
    text = athena_sql("web", parse(query))
    assert text.startswith('SELECT "$path" AS filename, ') and ' FROM "mirrorcap_web"."flows" WHERE kind = \'flow\'' in text
    for literal in re.findall(r"'([^']*)'", text):
        assert LITERAL.fullmatch(literal), literal
    # outside the literals: identifiers and keywords the module writes, numbers, operators; nothing else
    bare = re.sub(r"'[^']*'", "''", text)
    assert set(re.findall(r"[A-Za-z_$][A-Za-z_$0-9]*", bare)) <= {
        "SELECT", "AS", "filename", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "BETWEEN", "ORDER", "BY", "coalesce", "false",
        "length", "kind", "day", "NULLS", "LAST", "$path", "mirrorcap_web", "flows", *COLUMNS}


@pytest.mark.parametrize("hostile", ["host 10.0.3.7' OR '1'='1", "port 443) OR (1=1", "vni 7; DROP TABLE flows",
                                     "net 10.0.0.0/8' --", "tcp and kind = 'file'", "host 10.0.3.7\u2019"])
def test_hostile_text_does_not_parse(hostile):
    with pytest.raises(QueryError):
        parse(hostile)


def test_days_bound_the_partitions_read():
    text = athena_sql("web", parse("after 2026-11-25T00:00:05Z and before 2026-11-26T23:59:58Z"))
    assert "day >= '2026-11-24' AND day <= '2026-11-27'" in text  # the day before; the end's day plus the name's slack
    assert "day" not in athena_sql("web", parse("tcp")).split("WHERE")[1]


CAPTURE = SimpleNamespace(name="web", region="eu-west-1")
HEADER = [{"VarCharValue": c} for c in ("filename", *COLUMNS)]
ROW = ["s3://b/index/web/vni7/2026-11-24/i-0aaaaaaaaaaaaaaa1/vni7_2026-11-24T23-59-50Z.pcap.idx.json.gz", "ip", "17", "0a000307",
       "0a000308", None, None, "7", "1", "2", "3", "180", "GAEcUg=="]


def page(rows, token=None):
    p = {"ResultSet": {"Rows": [{"Data": r} for r in rows],
                       "ResultSetMetadata": {"ColumnInfo": [{"Name": c["VarCharValue"], "Type": "varchar"} for c in HEADER]}}}
    return {**p, "NextToken": token} if token else p


def cells(values):
    return [{"VarCharValue": v} if v is not None else {} for v in values]


def stubbed():
    client = boto3.client("athena", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def state(s, **extra):
    return {"QueryExecution": {"QueryExecutionId": "q1", "Status": {"State": s, **extra}, "Statistics": {"DataScannedInBytes": 99}}}


def test_it_polls_with_backoff_and_reads_every_page_once():
    client, stub = stubbed()
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"},
                      {"QueryString": "SELECT 1", "WorkGroup": "mirrorcap-web-athena",
                       "QueryExecutionContext": {"Catalog": "AwsDataCatalog", "Database": "mirrorcap_web"}})
    for s in ("QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"):
        stub.add_response("get_query_execution", state(s), {"QueryExecutionId": "q1"})
    stub.add_response("get_query_results", page([HEADER, cells(ROW)], token="t2"), {"QueryExecutionId": "q1"})
    stub.add_response("get_query_results", page([cells(ROW)]), {"QueryExecutionId": "q1", "NextToken": "t2"})
    waits = []
    with stub:
        rows, stats = run(client, CAPTURE, "SELECT 1", sleep=waits.append, clock=lambda: 0.0)
    stub.assert_no_pending_responses()
    assert waits == [0.25, 0.5, 1.0] and stats["DataScannedInBytes"] == 99
    assert len(rows) == 2  # the column names (first row of the first page) are not a row
    f = flow_row(rows[1])
    assert f["sp"] is None and f["vni"] == 7 and f["first"] == 1 and f["runs"] == "GAEcUg==" and f["filename"] == ROW[0]


def test_a_failed_query_is_one_line_with_athenas_reason():
    client, stub = stubbed()
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"})
    stub.add_response("get_query_execution", state("FAILED", StateChangeReason="Query exhausted resources\n  at this scale factor"))
    with stub, pytest.raises(MirrorcapError) as e:
        run(client, CAPTURE, "SELECT 1", sleep=lambda s: None)
    (p,) = e.value.problems
    assert p.message == "query q1 FAILED: Query exhausted resources at this scale factor"


def test_a_query_past_the_timeout_is_stopped():
    client, stub = stubbed()
    stub.add_response("start_query_execution", {"QueryExecutionId": "q1"})
    stub.add_response("get_query_execution", state("RUNNING"))
    stub.add_response("stop_query_execution", {}, {"QueryExecutionId": "q1"})
    with stub, pytest.raises(MirrorcapError) as e:
        run(client, CAPTURE, "SELECT 1", timeout=0, sleep=lambda s: None, clock=lambda: 5.0)
    stub.assert_no_pending_responses()
    assert "stopped" in e.value.problems[0].message


def test_a_missing_workgroup_names_the_deploy():
    client, stub = stubbed()
    stub.add_client_error("start_query_execution", "InvalidRequestException", "WorkGroup mirrorcap-web-athena is not found.")
    with stub, pytest.raises(MirrorcapError) as e:
        run(client, CAPTURE, "SELECT 1")
    assert "archive {}" in e.value.problems[0].fix and "make deploy STACK=web" in e.value.problems[0].fix
