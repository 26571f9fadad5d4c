"""`mirrorcap find QUERY --capture NAME` for a capture without an archive (or --instance): the query
runs on the host through Systems Manager (find/ssm.py), only the result comes back."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import AWS_UNREACHABLE, FINDINGS, OK, access, capture_named, fail, load_inventory


def find_on_host(node, capture: str, instance: str | None, inventory: Path, profile, role_arn, out: Path | None,
                 flows: bool, as_json: bool, max_bytes: int, progress) -> None:
    from ..account_checks.clients import client
    from ..errors import MirrorcapError
    from ..find import ssm
    from ..find.query import tree
    from ..find.search import flow_view, note
    from .flows import print_flows
    c = capture_named(load_inventory(inventory), capture, inventory)
    q = tree(node)
    try:
        session = access(profile, role_arn).session(c.region)
        if instance is None:
            instance = ssm.capture_host(client(session, "ec2", c.region), c.name)
        host = ssm.Host(client(session, "ssm", c.region), instance)
        if flows:
            summary, content = ssm.query(host, q, True, max_bytes, progress)
            _skipped(summary, note)
            rows = [json.loads(line) for line in content.decode().splitlines()] if content else []
            print_flows([flow_view(r) for r in rows], as_json)
            if out is None:
                raise typer.Exit(OK if rows else FINDINGS)
        summary, content = ssm.query(host, q, False, max_bytes, progress)
        if not flows:
            _skipped(summary, note)
    except ssm.SsmFailed as e:
        fail(MirrorcapError([e.problem]), AWS_UNREACHABLE)
    except ssm.Refused as e:
        raise MirrorcapError([e.problem]) from None
    if content is None:
        note(f"no packet matches on {instance} ({summary['files']} pcap(s), {summary['flows']} flow(s) looked at)")
        raise typer.Exit(FINDINGS)
    with open(out, "xb") as f:  # never overwrites (checked before, and again here)
        f.write(content)
    note(f"wrote {out}: {summary['packets']} packet(s) from {instance}'s {summary['files']} pcap(s); "
         f"{summary['gz_bytes']} B came through Systems Manager (gzip'd), sha256 checked")


def _skipped(summary: dict, note) -> None:
    for name, why in summary.get("skipped_names", []):
        note(f"skipped {name} on the host: {why}")
    if summary.get("skipped", 0) > len(summary.get("skipped_names", [])):
        note(f"... and {summary['skipped'] - len(summary['skipped_names'])} more skipped")
    for name, unread in summary.get("damaged", []):
        # Found in part: the bytes that are no record were not read (the host's index says which).
        shown = str(name) if str(name).isprintable() else repr(str(name))[1:-1]
        note(f"{shown} on the host is damaged: {sum(int(e) - int(s) for s, e in unread)} byte(s) hold no readable record; "
             "the packets around them were searched, any in those bytes were not")
