"""`mirrorcap find --engine athena`: the flows picked by Athena over the archive's Glue table, then
the same ranged GETs as the DuckDB path.

The SELECT is find/select.py's, run in the capture's workgroup (contract.ATHENA, created with
`archive {}`), which enforces where results go. Each row names its index object ("$path"); the
pcap is the one that index is for (contract.archived_pcap_key). Of each such index only the file
line is needed here (the pcap's format, byte order and link types): the index is fetched, never
the pcaps whole.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from ..archive import localfile
from ..contract import ATHENA, FLOWS_TABLE, INDEX_SUFFIX, archived_pcap_key, glue_database, resource_name
from ..errors import MirrorcapError, Problem
from .archive import Fetcher
from .hostindex import indexer
from .query import Node
from .search import Found, Source
from .select import ATHENA_PATH, COLUMNS, day_range, flows_sql

TIMEOUT_SECONDS = 600
FIRST_POLL, MAX_POLL = 0.25, 5.0  # seconds between GetQueryExecution calls, doubling
INTEGER_COLUMNS = {name for name, kind in indexer().FLOW_SCHEMA if kind != "text"}


def athena_sql(capture: str, node: Node) -> str:
    return flows_sql(node, f'"{glue_database(capture)}"."{FLOWS_TABLE}"', ATHENA_PATH, day_range(node))


def run(athena, capture, query_sql: str, *, timeout: float = TIMEOUT_SECONDS, sleep=time.sleep, clock=time.monotonic,
        progress=None) -> tuple[list[dict], dict]:
    """The result rows of `query_sql` in the capture's workgroup (as text, None for NULL) and the execution's statistics."""
    workgroup = resource_name(capture.name, ATHENA)
    try:
        qid = athena.start_query_execution(QueryString=query_sql, WorkGroup=workgroup,
                                           QueryExecutionContext={"Catalog": "AwsDataCatalog", "Database": glue_database(capture.name)},
                                           )["QueryExecutionId"]
    except ClientError as exc:
        err = exc.response.get("Error", {})
        message = str(err.get("Message", ""))
        if err.get("Code") == "InvalidRequestException" and "workgroup" in message.lower():
            raise MirrorcapError([Problem("AWS", "Athena workgroup", f"{workgroup} in {capture.region}: {message}",
                                          f"deploy the capture's stack with archive {{}} (make deploy STACK={capture.name}): "
                                          "it creates the workgroup, the Glue table and the result bucket")])
        raise
    if progress:
        progress(f"athena query {qid} in workgroup {workgroup}")
    deadline, wait = clock() + timeout, FIRST_POLL
    while True:
        execution = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
        status = execution["Status"]
        if status["State"] == "SUCCEEDED":
            break
        if status["State"] in ("FAILED", "CANCELLED"):
            reason = " ".join(str(status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage") or "").split())
            raise MirrorcapError([Problem("AWS", "Athena", f"query {qid} {status['State']}: {reason or 'no reason given'}",
                                          "read the reason: a scan over the workgroup's cutoff wants a narrower time range "
                                          "(after/before); access denied names the permission (docs/security.md)")])
        if clock() >= deadline:
            athena.stop_query_execution(QueryExecutionId=qid)
            raise MirrorcapError([Problem("AWS", "Athena", f"query {qid} still {status['State']} after {timeout:.0f} s: stopped",
                                          "narrow the time range (after/before), or run it again")])
        sleep(wait)
        wait = min(wait * 2, MAX_POLL)
    rows, names = [], None
    for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=qid):
        result = page["ResultSet"]
        if names is None:
            names = [c["Name"] for c in result["ResultSetMetadata"]["ColumnInfo"]]
        for row in result["Rows"]:
            values = [d.get("VarCharValue") for d in row["Data"]]
            if not rows and values == names:
                continue  # a SELECT's first row is its column names
            rows.append(dict(zip(names, values)))
    return rows, execution.get("Statistics", {})


def flow_row(row: dict) -> dict:
    """A result row (all text) as search.select_flows returns one: integers as integers."""
    out = {"filename": row["filename"]}
    for c in COLUMNS:
        v = row.get(c)
        if c in INTEGER_COLUMNS:
            out[c] = int(v) if v is not None else None
        else:
            out[c] = v
    return out


def athena_found(s3, rows: list[dict], cache: Path, scanned: int = 0, progress=None) -> Found:
    """The flows of `rows`, each source an archived pcap read by range, its index's file line fetched."""
    ix = indexer()
    flows = [flow_row(r) for r in rows]
    sources: dict[str, Source] = {}
    local_of: dict[str, str] = {}
    for n, url in enumerate(sorted({f["filename"] for f in flows})):
        u = urlparse(url)
        bucket, key = u.netloc, u.path.lstrip("/")
        pcap_key = archived_pcap_key(key)
        if u.scheme != "s3" or pcap_key is None:
            raise MirrorcapError([Problem("AWS", "Athena", f"a row names {url}, not an archived index",
                                          "the table's location is the archive's index prefix: deploy the stack again")])
        if progress:
            progress(f"index {n + 1}: {key}")
        # The cache path is made of a counter, not the key: nothing of S3's names a local file.
        local = cache / f"{n}{INDEX_SUFFIX}"
        with open(localfile.create(cache, [local.name]), "wb") as out:
            out.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        meta = ix.read_meta(str(local))
        sources[str(local)] = Source(None, local, meta, fetch=Fetcher(s3, bucket, pcap_key), name=pcap_key)
        local_of[url] = str(local)
    for f in flows:
        f["filename"] = local_of[f["filename"]]
        f["source"] = sources[f["filename"]].name
    return Found(flows, sources, index_bytes=scanned)
