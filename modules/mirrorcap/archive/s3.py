"""The archive bucket's reads: which bucket, which keys, the objects themselves.

The bucket is found by its tags, not by the stack's outputs: reading those
needs the Terraform state (and its backend's credentials), which someone who may
read pcaps need not have. ListBuckets (Prefix = contract.ARCHIVE_BUCKET_PREFIX,
in the capture's region) then GetBucketTagging on each: the one tagged
mirrorcap:stack = <capture> and Name = resource_name(capture, "archive").
--bucket skips the search (a reader role without s3:ListAllMyBuckets).
"""

from __future__ import annotations

import os
from pathlib import Path

from botocore.exceptions import ClientError

from ..contract import ARCHIVE, ARCHIVE_BUCKET_PREFIX, INDEX_SUFFIX, STACK_KEY, resource_name
from ..errors import MirrorcapError, Problem
from . import localfile
from .index import ArchivedPcap, local_parts, parse_key

DENIED = ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "403")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def denied_problem(capture, what: str, exc: ClientError) -> Problem:
    readers = ", ".join(capture.archive.reader_role_arns) if capture.archive and capture.archive.reader_role_arns else ""
    fix = (f"use a role archive > reader_role_arns allows ({readers}): --role-arn ..." if readers else
           "add your role to archive > reader_role_arns in the inventory and deploy, then pass it as --role-arn")
    return Problem("AWS", what, f"access denied: {_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}".strip(), fix)


def find_bucket(s3, capture) -> str:
    name, region = capture.name, capture.region
    want = {STACK_KEY: name, "Name": resource_name(name, ARCHIVE)}
    found, denied = [], None
    kwargs = {"Prefix": ARCHIVE_BUCKET_PREFIX, "BucketRegion": region}
    try:
        pages = s3.get_paginator("list_buckets").paginate(**kwargs)
        candidates = [b["Name"] for page in pages for b in page.get("Buckets", [])]
    except ClientError as exc:
        if _code(exc) in DENIED:
            raise MirrorcapError([Problem("AWS", "ListBuckets", f"access denied ({_code(exc)}): the archive bucket cannot be searched by tags",
                                          "pass the bucket's name as --bucket (the stack's output archive bucket), or allow s3:ListAllMyBuckets")])
        raise
    for bucket in candidates:
        try:
            tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
        except ClientError as exc:
            if _code(exc) in DENIED:
                denied = exc
            elif _code(exc) not in ("NoSuchTagSet", "NoSuchBucket"):
                raise
            continue
        if all(tags.get(k) == v for k, v in want.items()):
            found.append(bucket)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise MirrorcapError([Problem("AWS", "archive bucket", f"{len(found)} buckets are tagged as capture {name}'s archive: {', '.join(found)}",
                                      "pass the one to read as --bucket")])
    if denied is not None:
        raise MirrorcapError([denied_problem(capture, "GetBucketTagging", denied)])
    raise MirrorcapError([Problem("AWS", "archive bucket",
                                  f"no bucket in {region} named {ARCHIVE_BUCKET_PREFIX}... is tagged {STACK_KEY}={name}, Name={want['Name']}",
                                  f"deploy the capture's stack (make deploy STACK={name}), or pass the bucket as --bucket")])


def list_prefix(s3, bucket: str, capture: str, prefix: str) -> tuple[list[ArchivedPcap], list[str]]:
    """(the archived pcaps under a key prefix, the other keys there): only keys exactly as a host
    writes them are pcaps (index.parse_key); the others are never read."""
    out, others = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            p = parse_key(capture, obj["Key"], obj["Size"], obj["LastModified"])
            if p is None:
                key = obj["Key"]
                if key.endswith(INDEX_SUFFIX) and parse_key(capture, key[:-len(INDEX_SUFFIX)], 0, obj["LastModified"]):
                    continue  # an older host's index, beside its pcap (now under contract.INDEX_PREFIX): not a pcap
                others.append(key)
            else:
                out.append(p)
    return out, others


def download(s3, bucket: str, pcap: ArchivedPcap, root: Path) -> Path:
    """The pcap into a new file under `root` (localfile.create: exclusive, no link followed, 0640)."""
    parts = local_parts(pcap)
    with os.fdopen(localfile.create(root, parts), "wb") as f:
        s3.download_fileobj(bucket, pcap.key, f)
    return root.joinpath(*parts)
