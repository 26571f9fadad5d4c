"""The Glue table and Athena workgroup of a capture with `archive {}` (tests/fixtures/fleet.hcl), and the
SQL `mirrorcap find --engine athena` sends, run in DuckDB on a view built from the synthesized table
over real indexes laid out at their archive keys: it finds exactly the flows the DuckDB path finds."""

from __future__ import annotations

import shutil
from pathlib import Path
from datetime import datetime, timedelta, timezone

import duckdb
import findtraffic
import pytest

from athena_view import create_view, index_rows_keys
from helpers import stack_json, terraform_evaluates
from mirrorcap.contract import ARCHIVE_INDEX_KEY, PCAP_PATTERN
from mirrorcap.find.athena import athena_sql
from mirrorcap.find.hostindex import indexer
from mirrorcap.find.query import parse
from mirrorcap.find.search import Source, select_flows

BUCKET_REF = "${aws_s3_bucket.archive.bucket}"
BUCKET = "mirrorcap-fleet-20261203abcdefghijklmnopqr"
T0 = datetime(2026, 11, 24, 23, 59, 40, tzinfo=timezone.utc)  # files on both sides of midnight UTC
HOSTS = ("i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2")
VNIS = (4242, 5000)  # the fleet capture's VNIs


def terraform_string(value: str) -> str:
    """A synthesized string as Terraform evaluates it here: the archive bucket's name in, `$${` -> `${`."""
    return value.replace(BUCKET_REF, BUCKET).replace("$${", "${")


@pytest.fixture(scope="module")
def doc(fleet):
    return stack_json(fleet, "fleet")


@pytest.fixture(scope="module")
def table(doc):
    (t,) = doc["resource"]["aws_glue_catalog_table"].values()
    return t


def test_the_table_is_an_external_json_table_over_the_index_prefix_with_projected_partitions(doc, table, fleet, tmp_path):
    (db,) = doc["resource"]["aws_glue_catalog_database"].values()
    assert db["name"] == "mirrorcap_fleet" and table["database_name"] == "${aws_glue_catalog_database.index_database.name}"
    assert table["name"] == "flows" and table["table_type"] == "EXTERNAL_TABLE"
    sd = table["storage_descriptor"]
    assert sd["ser_de_info"]["serialization_library"] == "org.openx.data.jsonserde.JsonSerDe"
    assert sd["input_format"] == "org.apache.hadoop.mapred.TextInputFormat"
    assert terraform_string(sd["location"]) == f"s3://{BUCKET}/index/fleet/"
    p = {k: terraform_string(v) for k, v in table["parameters"].items()}
    assert p["projection.enabled"] == "true" and p["EXTERNAL"] == "TRUE"
    # The VNIs are the stack's data (stack_data.py): Terraform joins them.
    got = terraform_evaluates(fleet / "cdktf.out" / "stacks" / "fleet", {"vnis": p["projection.vni.values"]}, tmp_path / "tf")
    assert p["projection.vni.type"] == "enum" and got["vnis"] == "4242,5000"
    assert (p["projection.day.type"], p["projection.day.format"], p["projection.day.range"]) == ("date", "yyyy-MM-dd", "NOW-91DAYS,NOW")
    assert (p["projection.day.interval"], p["projection.day.interval.unit"]) == ("1", "DAYS")
    # Each partition is a prefix of the index keys the hosts write (contract.ARCHIVE_INDEX_KEY), down to the day.
    day_prefix = ARCHIVE_INDEX_KEY.split("{instance}")[0].format(capture="fleet", vni="${vni}", date="${day}")
    assert p["storage.location.template"] == f"s3://{BUCKET}/{day_prefix}"
    assert [k["name"] for k in table["partition_keys"]] == ["vni", "day"]


def test_the_workgroup_enforces_encrypted_results_in_its_own_expiring_bucket_and_a_scan_cap(doc):
    wg = doc["resource"]["aws_athena_workgroup"]["athena"]
    conf = wg["configuration"]
    assert wg["name"] == "mirrorcap-fleet-athena" and conf["enforce_workgroup_configuration"] is True
    assert 10 << 20 <= conf["bytes_scanned_cutoff_per_query"] <= 100 << 30
    result = conf["result_configuration"]
    assert result["output_location"] == "s3://${aws_s3_bucket.athena_results.bucket}/"
    assert result["encryption_configuration"] == {"encryption_option": "SSE_KMS", "kms_key_arn": "${aws_kms_key.pcap_key.arn}"}
    r = doc["resource"]
    assert r["aws_s3_bucket_public_access_block"]["athena_results_public_access"]["restrict_public_buckets"] is True
    enc = r["aws_s3_bucket_server_side_encryption_configuration"]["athena_results_encryption"]["rule"][0]
    assert enc["apply_server_side_encryption_by_default"]["kms_master_key_id"] == "${aws_kms_key.pcap_key.arn}"
    (rule,) = r["aws_s3_bucket_lifecycle_configuration"]["athena_results_lifecycle"]["rule"]
    assert rule["status"] == "Enabled" and rule["expiration"][0]["days"] <= 7
    assert "aws:SecureTransport" in str(doc["data"]["aws_iam_policy_document"]["athena_results_bucket_policy"])


def test_a_capture_without_archive_has_no_table(example):
    assert "aws_glue_catalog_table" not in stack_json(example, "prod")["resource"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """Real pcaps (generated frames, written as tcpdump writes them), indexed by the real indexer: the local
    copies (what --dir reads) and the bucket's copy with each index at its archive key."""
    tmp = tmp_path_factory.mktemp("athena")
    local, bucket = tmp / "pcaps", tmp / "bucket"
    local.mkdir()
    ix = indexer()
    sources, key_of = [], {}
    for h, instance in enumerate(HOSTS):
        for v, vni in enumerate(VNIS):
            for n in range(2):  # 20 s each, the first before midnight, the second after
                start = T0 + timedelta(seconds=20 * n)
                name = start.strftime(PCAP_PATTERN.replace("{vni}", str(vni)))
                pcap = local / instance / name  # named as the host names it: the index records its VNI
                pcap.parent.mkdir(exist_ok=True)
                first_ns = int(start.timestamp()) * 10 ** 9 + h * 1_000_000
                findtraffic.write_pcap(pcap, findtraffic.packets(300 + 10 * h + 5 * v + n, 3000, first_ns, step_ns=7_000_000))
                meta, _ = ix.write(str(pcap))
                index = Path(ix.index_path(str(pcap)))
                key = ARCHIVE_INDEX_KEY.format(capture="fleet", vni=vni, date=start.date().isoformat(), instance=instance, file=name)
                (bucket / key).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(index, bucket / key)
                sources.append(Source(pcap, index, meta))
                key_of[str(index)] = key
    return dict(bucket=bucket, sources=sources, key_of=key_of)


QUERIES = [
    "tcp",
    "host 10.0.3.7 and (port 443 or icmp)",
    "vni 5000 and udp",
    "not vni 4242 and ip6",
    "net 10.0.0.0/16 and not port 22",
    "arp or (ip6 and dst port 53)",
    # times on both sides of midnight: the pcap open at midnight started the day before
    "tcp and after 2026-11-25T00:00:05Z",
    "after 2026-11-24T23:59:55Z and before 2026-11-25T00:00:03Z",
    "icmp and before 2026-11-24T23:59:50Z",
    "around 2026-11-25T00:00:10Z ±2s and not arp",
]


@pytest.mark.parametrize("query", QUERIES)
def test_athenas_sql_in_duckdb_over_the_synthesized_table_finds_what_the_duckdb_path_finds(table, layout, query):
    node = parse(query)
    con = duckdb.connect()
    columns = [(c["name"], c["type"]) for c in table["storage_descriptor"]["columns"]]
    partitions = [(k["name"], k["type"]) for k in table["partition_keys"]]
    create_view(con, database="mirrorcap_fleet", table=table["name"], columns=columns, partition_keys=partitions,
                template=terraform_string(table["parameters"]["storage.location.template"]), bucket=BUCKET, root=layout["bucket"])
    # The table's columns are the keys of the index's flow rows (vni: a partition, the file's own)
    assert {n for n, _ in columns} | {n for n, _ in partitions if n != "day"} == index_rows_keys(layout["sources"][0].index)
    rel = con.execute(athena_sql("fleet", node))
    names = [d[0] for d in rel.description]
    got = [dict(zip(names, row)) for row in rel.fetchall()]
    want = select_flows(layout["sources"], node)

    def same(rows, path):
        return sorted(((path(r["filename"]), *(r[c] for c in names[1:])) for r in rows), key=repr)
    assert len(want) > 0
    assert same(got, lambda url: url.removeprefix(f"s3://{BUCKET}/")) == same(want, layout["key_of"].__getitem__)
    assert [r["first"] for r in got] == sorted(r["first"] for r in got)
