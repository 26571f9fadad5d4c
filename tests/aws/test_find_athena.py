"""`mirrorcap find --engine athena` against moto: Athena's answer is what the SQL the CLI sends returns
when DuckDB runs it on a view built from the synthesized Glue table over the same real indexes
(moto runs no query: its result queue is filled with that answer); the pcaps are then read by
range from the moto archive. The packets are exactly what tcpdump takes; the flows are the ones
the DuckDB engine lists over the same archive."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta, timezone

import boto3
import duckdb
import findtraffic
import pytest
from moto import mock_aws
from moto.athena.models import QueryResults, athena_backends
from moto.core import DEFAULT_ACCOUNT_ID
from typer.testing import CliRunner

from athena_view import athena_result_set, create_view
from helpers import stack_json, write
from mirrorcap.cli import app
from mirrorcap.contract import ARCHIVE_INDEX_KEY, ARCHIVE_KEY, ATHENA, PCAP_PATTERN, glue_database, resource_name
from mirrorcap.find.athena import athena_sql
from mirrorcap.find.hostindex import indexer
from mirrorcap.find.query import parse
from test_find_archive import expected
from test_window_archive import INVENTORY, REGION, VNI

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
T0 = datetime(2026, 11, 24, 23, 59, 50, tzinfo=timezone.utc)
BUCKET = "mirrorcap-web-athenalab"
HOSTS = ("i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2")
WORKGROUP = resource_name("web", ATHENA)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def table(synthesized):
    (t,) = stack_json(synthesized(INVENTORY), "web")["resource"]["aws_glue_catalog_table"].values()
    return t


@pytest.fixture
def archive(tmp_path, monkeypatch, table):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    inventory = write(tmp_path, INVENTORY)
    files, mirror = {}, tmp_path / "bucket"  # pcap key -> local pcap; the bucket's indexes as files
    ix = indexer()
    for h, instance in enumerate(HOSTS):
        for n in range(2):  # two files per host, 20 s each, across midnight UTC
            start = T0 + timedelta(seconds=20 * n)
            name = start.strftime(PCAP_PATTERN.replace("{vni}", str(VNI)))
            local = tmp_path / instance / name  # named as the host names it
            local.parent.mkdir(exist_ok=True)
            first_ns = int(start.timestamp()) * 10 ** 9 + h * 1_000_000
            findtraffic.write_pcap(local, findtraffic.packets(100 + 10 * h + n, 12000, first_ns, step_ns=200_000))
            ix.write(str(local))
            fields = dict(capture="web", vni=VNI, date=start.date().isoformat(), instance=instance, file=name)
            index_key = ARCHIVE_INDEX_KEY.format(**fields)
            (mirror / index_key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ix.index_path(str(local)), mirror / index_key)
            files[ARCHIVE_KEY.format(**fields)] = local
    con = duckdb.connect()
    template = table["parameters"]["storage.location.template"].replace("${aws_s3_bucket.archive.bucket}", BUCKET)
    create_view(con, database=glue_database("web"), table=table["name"], columns=[(c["name"], c["type"]) for c in
                table["storage_descriptor"]["columns"]], partition_keys=[(k["name"], k["type"]) for k in table["partition_keys"]],
                template=template.replace("$${", "${"), bucket=BUCKET, root=mirror)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for key, local in files.items():
            s3.upload_file(str(local), BUCKET, key)
        for index in mirror.rglob("*.idx.json.gz"):
            s3.upload_file(str(index), BUCKET, str(index.relative_to(mirror)))
        athena = boto3.client("athena", region_name=REGION)
        athena.create_work_group(Name=WORKGROUP, Configuration={"ResultConfiguration": {"OutputLocation": "s3://results/"}})
        yield dict(files=files, inventory=inventory, tmp=tmp_path, s3=s3, athena=athena, con=con)


def athena_answers(archive, query: str) -> str:
    """Queue Athena's answer to the SQL `query` compiles to (moto hands it to the next execution); that SQL."""
    text = athena_sql("web", parse(query))
    answer = athena_result_set(archive["con"], text)
    athena_backends[DEFAULT_ACCOUNT_ID][REGION].query_results_queue.append(QueryResults(answer["rows"], answer["column_info"]))
    return text


def sent(athena) -> list[dict]:
    return [athena.get_query_execution(QueryExecutionId=q)["QueryExecution"] for q in athena.list_query_executions()["QueryExecutionIds"]]


def find(archive, *args):
    return CliRunner().invoke(app, ["find", *args, "--capture", "web", "--inventory", str(archive["inventory"])])


def test_athena_finds_what_tcpdump_takes_reading_only_ranges(archive):
    lo, hi = T0 + timedelta(seconds=12), T0 + timedelta(seconds=15)
    query = f"host 10.0.3.7 and (port 443 or icmp) and after {iso(lo)} and before {iso(hi)}"
    text = athena_answers(archive, query)
    out = archive["tmp"] / "found.pcap"
    r = find(archive, query, "--engine", "athena", "--out", str(out))
    assert r.exit_code == 0, r.output
    (execution,) = sent(archive["athena"])
    assert execution["Query"] == text and execution["WorkGroup"] == WORKGROUP
    assert execution["QueryExecutionContext"]["Database"] == glue_database("web")
    # the days before and of the query's range only (the pcap open at `lo` may have started the day before)
    assert "day >= '2026-11-24' AND day <= '2026-11-25'" in text
    ix = indexer()
    data = out.read_bytes()
    got = [(ts, data[f:f + c]) for _o, ts, _lt, c, _l, f in ix.records(data, ix.header(data))]
    want = expected(archive["files"], "host 10.0.3.7 and (port 443 or icmp)", int(lo.timestamp()) * 10 ** 9, int(hi.timestamp()) * 10 ** 9)
    assert len(want) > 10 and sorted(got) == want and [t for t, _ in got] == sorted(t for t, _ in got)
    fetched = int(re.search(r"\((\d+) B of them fetched from S3 by range\)", r.output).group(1))
    assert 0 < fetched < sum(p.stat().st_size for p in archive["files"].values())  # ranges, not whole files
    duck = find(archive, query, "--bucket", BUCKET, "--out", str(archive["tmp"] / "duck.pcap"))
    assert duck.exit_code == 0, duck.output
    assert (archive["tmp"] / "duck.pcap").read_bytes() == data  # the DuckDB engine's answer, byte for byte
    assert int(re.search(r"\((\d+) B of them fetched from S3 by range\)", duck.output).group(1)) == fetched  # the same ranges


def test_athena_lists_the_flows_the_duckdb_engine_lists(archive):
    query = f"(udp or arp) and after {iso(T0 - timedelta(minutes=1))}"
    athena_answers(archive, query)
    r = find(archive, query, "--engine", "athena", "--flows", "--json")
    assert r.exit_code == 0, r.output
    duck = find(archive, query, "--bucket", BUCKET, "--flows", "--json")
    assert duck.exit_code == 0, duck.output
    flows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(flows) > 20 and {f["fam"] for f in flows} == {"ip", "ip6", "arp"}
    assert r.stdout == duck.stdout  # the same flows, in the same order, each naming its archived pcap
    assert all(f["file"] in archive["files"] for f in flows)


@pytest.mark.parametrize("hostile", [
    "host 10.0.3.7' OR '1'='1",
    "port 443) OR (1=1",
    "vni 77; DROP TABLE flows",
    "host 10.0.3.7 -- and port 22",
    "net 10.0.0.0/8' UNION SELECT * FROM x --",
    'tcp and "$path" like \'%\'',
])
def test_a_hostile_query_never_reaches_athena(archive, hostile):
    r = find(archive, hostile, "--engine", "athena", "--flows")
    assert r.exit_code == 2 and "fix:" in r.output
    assert sent(archive["athena"]) == []


def test_a_failed_query_exits_3_with_athenas_state(archive, monkeypatch):
    from moto.athena import models
    monkeypatch.setattr(models.Execution, "advance", lambda self: setattr(self, "status", "FAILED"))
    r = find(archive, "tcp", "--engine", "athena", "--flows")
    assert r.exit_code == 3, r.output
    assert re.search(r"Athena: query \S+ FAILED", r.output)


def test_without_the_workgroup_it_names_the_fix(archive):
    archive["athena"].delete_work_group(WorkGroup=WORKGROUP)
    r = find(archive, "tcp", "--engine", "athena", "--flows")
    assert r.exit_code == 3, r.output
    assert WORKGROUP in r.output and "archive {}" in r.output and "make deploy STACK=web" in r.output


def test_engine_athena_needs_a_capture_and_no_bucket(archive, tmp_path):
    r = CliRunner().invoke(app, ["find", "tcp", "--dir", str(tmp_path), "--engine", "athena", "--flows"])
    assert r.exit_code == 2 and "--capture" in r.output
    r = find(archive, "tcp", "--engine", "athena", "--bucket", BUCKET, "--flows")
    assert r.exit_code == 2 and "--bucket" in r.output
    assert sent(archive["athena"]) == []
