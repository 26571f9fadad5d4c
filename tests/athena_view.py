"""The archive's Glue table as Athena reads it, rebuilt in DuckDB from the table's own definition.

Given the table's columns, partition keys and `storage.location.template` (from the synthesized
Terraform JSON, or the stack module that writes it), a local directory holding index files at
their archive keys becomes a DuckDB view of the same name: every object under a partition's
location (recursively, as Athena reads it), the data columns typed as Glue types them, the
partition columns taken from where the template puts them, and Athena's hidden "$path" as the
object's s3:// URL. Athena's SQL text then runs on it unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

HIVE_TO_DUCKDB = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "array<bigint>": "BIGINT[]"}


def index_rows_keys(index: Path) -> set[str]:
    """The keys of an index file's flow rows."""
    import gzip
    import json
    with gzip.open(index, "rt") as f:
        rows = [json.loads(line) for line in f]
    return {k for row in rows if row["kind"] == "flow" for k in row}


def create_view(con, *, database: str, table: str, columns, partition_keys, template: str, bucket: str, root: Path) -> str:
    """CREATE the view "database"."table" over `root` (the bucket's local copy); returns the glob it reads."""
    head = f"s3://{bucket}/"
    assert template.startswith(head), template
    parts = re.split(r"(\$\{\w+\})", template[len(head):])
    names = [p[2:-1] for p in parts if p.startswith("${")]
    assert sorted(names) == sorted(n for n, _ in partition_keys), (names, partition_keys)  # Athena requires every one
    glob = str(root) + "/" + "".join("*" if p.startswith("${") else p for p in parts) + "**"
    pattern = re.escape(str(root) + "/") + "".join("([^/]+)" if p.startswith("${") else re.escape(p) for p in parts)
    types = {n: t for n, t in partition_keys}
    struct = "{" + ", ".join(f"'{n}': '{HIVE_TO_DUCKDB[t]}'" for n, t in columns) + "}"
    select = [f'"{n}"' for n, _ in columns]
    select += [f"CAST(regexp_extract(filename, '{pattern}', {i + 1}) AS {HIVE_TO_DUCKDB[types[n]]}) AS \"{n}\""
               for i, n in enumerate(names)]
    select.append(f"'{head}' || substr(filename, {len(str(root)) + 2}) AS \"$path\"")
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{database}"')
    con.execute(f'CREATE VIEW "{database}"."{table}" AS SELECT {", ".join(select)} FROM read_json(\'{glob}\', '
                f"format='newline_delimited', columns={struct}, filename=true, compression='gzip', auto_detect=false)")
    return glob


def athena_result_set(con, sql: str) -> dict:
    """`sql`'s answer in DuckDB, shaped as Athena's GetQueryResults returns it: every value as text
    (an array as Athena prints one, NULL as no value), the column names as the first row."""
    rel = con.execute(sql)
    names = [d[0] for d in rel.description]

    def cell(v):
        if v is None:
            return {}
        if isinstance(v, list):
            return {"VarCharValue": "[" + ", ".join(str(x) for x in v) + "]"}
        return {"VarCharValue": str(v)}
    rows = [{"Data": [{"VarCharValue": n} for n in names]}] + [{"Data": [cell(v) for v in row]} for row in rel.fetchall()]
    return {"rows": rows, "column_info": [{"Name": n, "Label": n, "Type": "varchar"} for n in names]}
