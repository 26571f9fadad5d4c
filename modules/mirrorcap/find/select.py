"""The one SELECT of `mirrorcap find`: DuckDB runs it over index files, Athena over the Glue table.

Both engines get the same text but for two parts: the relation (DuckDB's read_json of the
files, or the table) and the column naming each row's file (DuckDB's `filename`, Athena's
hidden `"$path"`); Athena's also keeps only the days (partitions) the query's time range
can touch. Every value in it comes from the parsed query (query.sql: integers, hex digits,
words from fixed sets) or a date: no text of the user's reaches the SQL.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from .hostindex import indexer
from .query import NS, Node, sql, time_bounds

# The flow columns every engine returns, in this order ("first"/"last": keywords in Athena).
COLUMNS = tuple(name for name, _kind in indexer().FLOW_SCHEMA if name != "kind")
ATHENA_PATH = '"$path"'  # Athena's hidden column: the s3:// URL of the object a row comes from


# Flows with the same first packet in the same file come out in one order on both engines: a file's
# flows differ in these (nulls, as both engines' default, last).
TIE_BREAK = "fam, sa, da, proto NULLS LAST, sp NULLS LAST, dp NULLS LAST"


def flows_sql(node: Node, relation: str, path_column: str, days: tuple[date | None, date | None] | None = None) -> str:
    """SELECT the flow rows of `relation` that may hold a packet of the query, each with its file, oldest first.
    days: (first, last) day partitions to read (either None: unbounded), for a table partitioned by `day`."""
    where = ["kind = 'flow'"]
    if days is not None:
        lo, hi = days
        where += ([f"day >= '{lo.isoformat()}'"] if lo is not None else []) + ([f"day <= '{hi.isoformat()}'"] if hi is not None else [])
    where.append(f"({sql(node)} OR fam = '{indexer().CUT}')")  # frames cut short: decided packet by packet
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    return f'SELECT {path_column} AS filename, {cols} FROM {relation} WHERE {" AND ".join(where)} ORDER BY "first", filename, {TIE_BREAK}'


def day_range(node: Node) -> tuple[date | None, date | None]:
    """The UTC days (a pcap's partition is the day it starts) whose pcaps can hold a packet of the query:
    from the day before its start (a pcap rotates at most daily: the one open at the start began at most
    a day earlier) to the day of its end, plus the seconds a pcap's name may run ahead of its first packet."""
    from ..archive import hostcode
    lo, hi = time_bounds(node)

    def day(ns: int) -> date:
        return datetime.fromtimestamp(ns // NS, timezone.utc).date()
    slack = int(hostcode.window().EARLY_SLACK.total_seconds()) * NS
    return (day(lo) - timedelta(days=1) if lo is not None else None), (day(hi + slack) if hi is not None else None)
