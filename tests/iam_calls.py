"""What IAM would be asked for each request moto recorded (its recorder: /moto-api/recorder/...).

A request names its service in the SigV4 credential scope and its operation in the
`Action` parameter (query and EC2 protocols), the `X-Amz-Target` header (JSON), the
`/operation/<name>` path (RPC v2) or its method and route (REST: Lambda, S3), matched
against botocore's service model. The IAM action is `<prefix>:<operation>` except where
AWS's Service Authorization Reference names it otherwise (S3 above all).

`Call.resource` is the ARN IAM checks, where it is scoped in the CI roles' policies
(S3 objects and buckets, IAM roles and instance profiles); "*" elsewhere.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qs, unquote, urlsplit

# SigV4 signing name -> IAM service prefix, where they differ.
IAM_PREFIX = {"monitoring": "cloudwatch"}

# Operation -> IAM action name, where the Service Authorization Reference differs from the API.
ACTION_NAME = {
    ("s3", "HeadBucket"): "ListBucket", ("s3", "ListObjects"): "ListBucket", ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjectVersions"): "ListBucketVersions", ("s3", "HeadObject"): "GetObject",
    ("s3", "DeleteObjects"): "DeleteObject",
    ("s3", "GetBucketLifecycleConfiguration"): "GetLifecycleConfiguration",
    ("s3", "PutBucketLifecycleConfiguration"): "PutLifecycleConfiguration",
    ("s3", "DeleteBucketLifecycle"): "PutLifecycleConfiguration",
    ("s3", "GetBucketEncryption"): "GetEncryptionConfiguration", ("s3", "PutBucketEncryption"): "PutEncryptionConfiguration",
    ("s3", "DeleteBucketEncryption"): "PutEncryptionConfiguration",
    ("s3", "GetPublicAccessBlock"): "GetBucketPublicAccessBlock", ("s3", "PutPublicAccessBlock"): "PutBucketPublicAccessBlock",
    ("s3", "DeletePublicAccessBlock"): "PutBucketPublicAccessBlock",
    ("s3", "GetBucketAccelerateConfiguration"): "GetAccelerateConfiguration", ("s3", "GetBucketCors"): "GetBucketCORS",
    ("s3", "GetBucketReplication"): "GetReplicationConfiguration",
    ("s3", "GetObjectLockConfiguration"): "GetBucketObjectLockConfiguration",
    ("s3", "DeleteBucketOwnershipControls"): "PutBucketOwnershipControls", ("s3", "DeleteBucketTagging"): "PutBucketTagging",
    ("s3", "GetBucketNotificationConfiguration"): "GetBucketNotification",
    ("s3", "PutBucketNotificationConfiguration"): "PutBucketNotification",
    ("lambda", "Invoke"): "InvokeFunction",
}


@dataclass(frozen=True)
class Call:
    action: str  # e.g. "ec2:DescribeInstances"
    resource: str = "*"
    context: tuple[tuple[str, str], ...] = ()  # condition keys the request sets (s3:prefix)
    method: str = ""
    url: str = ""

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}" if self.resource != "*" else self.action


@lru_cache(maxsize=None)
def _model(signing_name: str):
    import botocore.session
    session = botocore.session.get_session()
    for name in session.get_available_services():
        model = session.get_service_model(name)
        if model.signing_name == signing_name and name not in ("s3control", "elb", "ec2-instance-connect", "ebs"):
            return model
    raise LookupError(f"no botocore service signs as {signing_name!r}")


@lru_cache(maxsize=None)
def _routes(signing_name: str) -> list[tuple[str, re.Pattern, frozenset, int, str]]:
    """(method, path regex, query keys required, specificity, operation) for a REST service."""
    model = _model(signing_name)
    out = []
    for op in model.operation_names:
        http = model.operation_model(op).http
        path, _, query = http["requestUri"].partition("?")
        shape = model.operation_model(op).input_shape
        required = [shape.members[n].serialization for n in (shape.required_members if shape else [])]
        keys = frozenset({q.split("=")[0] for q in query.split("&") if q and not q.startswith("x-id=")}
                         | {s["name"] for s in required if s.get("location") == "querystring"}
                         | {s["name"].lower() for s in required if s.get("location") == "header"})
        pattern = re.sub(r"\\\{[^}]+\\\+\\\}", ".+", re.sub(r"\\\{[^}+]+\\\}", "[^/]+", re.escape(path.rstrip("/") or "/")))
        literal = len(re.sub(r"\{[^}]+\}", "", path))
        out.append((http["method"], re.compile(pattern + "/?"), keys, len(keys) * 1000 + literal, op))
    return out


def _operation(signing_name: str, method: str, path: str, query: dict, headers: dict, body: bytes) -> str:
    target = headers.get("X-Amz-Target") or headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    m = re.search(r"/operation/([A-Za-z]+)$", path)
    if m:
        return m.group(1)
    if "Action" in query:
        return query["Action"][0]
    ctype = headers.get("Content-Type", headers.get("content-type", ""))
    if "x-www-form-urlencoded" in ctype:
        form = parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return form["Action"][0]
    if "x-id" in query:  # the AWS SDKs name the S3 operation where its route is ambiguous
        return query["x-id"][0]
    present = set(query) | {h.lower() for h in headers}
    found = [(spec, op) for meth, rx, keys, spec, op in _routes(signing_name)
             if meth == method and rx.fullmatch(path) and keys <= present]
    if not found:
        raise LookupError(f"no {signing_name} operation for {method} {path}?{'&'.join(query)}")
    return max(found)[1]


def _signing_name(headers: dict) -> str:
    auth = headers.get("Authorization") or headers.get("authorization") or ""
    m = re.search(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request", auth)
    if not m:
        raise LookupError(f"unsigned request (no SigV4 credential scope): {auth[:80]!r}")
    return m.group(1)


def _resource(prefix: str, operation: str, path: str, form: dict, account: str) -> str:
    if prefix == "s3":
        bucket, _, key = unquote(path).lstrip("/").partition("/")
        return f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"
    if prefix == "iam":
        if "InstanceProfile" in operation and "InstanceProfileName" in form:
            return f"arn:aws:iam::{account}:instance-profile/{form['InstanceProfileName'][0]}"
        if "RoleName" in form:
            return f"arn:aws:iam::{account}:role/{form['RoleName'][0]}"
        if "OpenIDConnectProviderArn" in form:
            return form["OpenIDConnectProviderArn"][0]
    return "*"


def call_of(entry: dict, account: str) -> Call:
    """One line of moto's recording as the IAM action (and, where scoped, resource) it needs."""
    headers = entry["headers"]
    body = entry.get("body") or ""
    raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
    url = urlsplit(entry["url"])
    query = parse_qs(url.query, keep_blank_values=True)
    signing = _signing_name(headers)
    prefix = IAM_PREFIX.get(signing, signing)
    op = _operation(signing, entry["method"], url.path, query, headers, raw)
    ctype = headers.get("Content-Type", headers.get("content-type", ""))
    form = {**query, **(parse_qs(raw.decode("utf-8", "replace")) if "x-www-form-urlencoded" in ctype else {})}
    context = (("s3:prefix", query["prefix"][0]),) if prefix == "s3" and "prefix" in query else ()
    return Call(f"{prefix}:{ACTION_NAME.get((prefix, op), op)}", _resource(prefix, op, url.path, form, account), context,
                entry["method"], entry["url"])


def calls_of(recording: str, account: str) -> list[Call]:
    return [call_of(json.loads(line), account) for line in recording.splitlines() if line.strip()]
