"""`mirrorcap find --capture` on a host without an archive: the query runs on the host, through
Systems Manager (AWS-RunShellScript: no SSH, no inbound rule); only the result reaches the laptop.

The host's mirrorcap-find (scripts/host/mirrorcap-find.py) gets the parsed query as base64 of
JSON: the command line is fixed words, a hex ID, numbers and base64, checked here before it is
sent, so no text of the query reaches a shell. GetCommandInvocation returns only the first
24,000 characters of a command's stdout (StandardOutputContent), so the host keeps the result
in its spool and prints a summary; the result comes in --chunk pieces that each fit, fetched a
few at a time, checked against the summary's sha256.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass

from ..contract import FIND_COMMAND
from ..errors import Problem

DOCUMENT = "AWS-RunShellScript"
SAFE_LINE = re.compile(re.escape(FIND_COMMAND) + r" (--request [A-Za-z0-9+/=]+|--chunk [0-9a-f]{32} [0-9]+|--forget [0-9a-f]{32})")
MAX_BYTES = 64 << 20  # default cap of a result: ~3,700 chunks of 18 kB through SSM, a few minutes
IN_FLIGHT = 8  # chunk commands sent before the oldest is read: SSM's latency, not its bandwidth, is the limit
RUNNING = ("Pending", "InProgress", "Delayed")
PERMISSIONS = ("ssm:SendCommand (on the instance and on the AWS-RunShellScript document), ssm:GetCommandInvocation, "
               "ec2:DescribeInstances (README: Permissions)")


class SsmFailed(Exception):
    """What stopped the query on the host, as one problem (exit 3)."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


class Refused(Exception):
    """The host ran the request and would not give the result (too big, refused): a problem with the input (exit 2)."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


def request_line(tree: list, flows: bool, max_bytes: int) -> str:
    body = json.dumps(dict(v=1, query=tree, flows=flows, max_bytes=max_bytes), separators=(",", ":"))
    return f"{FIND_COMMAND} --request {base64.b64encode(body.encode()).decode()}"


@dataclass
class Host:
    """One instance, reached through SSM's Run Command."""

    ssm: object
    instance_id: str
    timeout: float = 300  # seconds one command may take, queued and run
    sleep: object = time.sleep
    clock: object = time.monotonic

    def send(self, line: str) -> str:
        if not SAFE_LINE.fullmatch(line):  # the one gate between our values and the host's shell
            raise AssertionError(f"not a mirrorcap-find command line: {line[:80]!r}")
        from botocore.exceptions import ClientError
        try:
            r = self.ssm.send_command(InstanceIds=[self.instance_id], DocumentName=DOCUMENT, Comment="mirrorcap find",
                                      TimeoutSeconds=max(30, int(self.timeout)),
                                      Parameters={"commands": [line], "executionTimeout": [str(int(self.timeout))]})
        except ClientError as e:
            raise SsmFailed(self._denied(e, "SendCommand")) from None
        return r["Command"]["CommandId"]

    def wait(self, command_id: str) -> dict:
        """The invocation once it ended, polled with backoff; SsmFailed when it did not run or timed out."""
        from botocore.exceptions import ClientError
        deadline, pause = self.clock() + self.timeout, 0.2
        while True:
            try:
                inv = self.ssm.get_command_invocation(CommandId=command_id, InstanceId=self.instance_id)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "InvocationDoesNotExist":  # not yet, right after sending
                    raise SsmFailed(self._denied(e, "GetCommandInvocation")) from None
                inv = {"Status": "Pending"}
            if inv["Status"] not in RUNNING:
                if inv["Status"] in ("Success", "Failed"):
                    return inv
                raise SsmFailed(Problem("AWS", f"SSM {self.instance_id}", f"the command ended {inv['Status']}: "
                                        f"{inv.get('StatusDetails', '')}", "check the instance is running and its SSM agent online "
                                        "(aws ssm describe-instance-information), then run find again"))
            if self.clock() > deadline:
                raise SsmFailed(Problem("AWS", f"SSM {self.instance_id}", f"no answer in {self.timeout:.0f} s",
                                        "check the SSM agent is online (aws ssm describe-instance-information); "
                                        "narrow the query (a time range) so the host reads less"))
            self.sleep(pause)
            pause = min(pause * 1.5, 2.0)

    def run(self, line: str) -> dict:
        return self.wait(self.send(line))

    def _denied(self, e, call: str) -> Problem:
        code = e.response.get("Error", {}).get("Code", "")
        msg = e.response.get("Error", {}).get("Message", "")
        if code == "InvalidInstanceId":
            fix = (f"{self.instance_id} is not managed by Systems Manager: it must be running, its SSM agent online and its role "
                   "hold AmazonSSMManagedInstanceCore (the stack grants it); see aws ssm describe-instance-information")
        elif "AccessDenied" in code or "Unauthorized" in code:
            fix = "grant the caller " + PERMISSIONS
        else:
            fix = "check the account, the region and the instance"
        return Problem("AWS", call, f"{code}: {msg}", fix)


def answer_of(inv: dict, instance_id: str) -> dict:
    """mirrorcap-find's summary line from an invocation; SsmFailed when it printed none."""
    out = inv.get("StandardOutputContent", "").strip().splitlines()
    try:
        summary = json.loads(out[-1]) if out else None
    except ValueError:
        summary = None
    if not isinstance(summary, dict) or "status" not in summary:
        err = (inv.get("StandardErrorContent", "").strip().splitlines() or [f"exit {inv.get('ResponseCode')}"])[-1][:300]
        raise SsmFailed(Problem("AWS", f"SSM {instance_id}", f"mirrorcap-find did not answer ({inv['Status']}): {err}",
                                "re-bake the host's image with this mirrorcap (make bake CAPTURE=...): it installs "
                                f"{FIND_COMMAND}"))
    return summary


def query(host: Host, tree: list, flows: bool, max_bytes: int, progress=None) -> tuple[dict, bytes | None]:
    """(the host's summary, the result's bytes: a pcap, or flow rows as JSON lines; None when nothing matched)."""
    if progress:
        progress(f"running the query on {host.instance_id} (Systems Manager)")
    summary = answer_of(host.run(request_line(tree, flows, max_bytes)), host.instance_id)
    status = summary["status"]
    if status == "nothing":
        return summary, None
    if status == "too_big":
        mib = summary["max_bytes"] / (1 << 20)
        raise Refused(Problem("command line", "QUERY", f"the packets it takes on {host.instance_id} pass {mib:g} MiB "
                              f"({summary['flows']} flows)", "narrow the query (a shorter time range, a host or a port), "
                              "list the flows first with --flows, raise --max-size, or give the capture an archive {} "
                              "and find through S3"))
    if status != "found":
        raise SsmFailed(Problem("AWS", f"SSM {host.instance_id}", f"mirrorcap-find refused the request: {summary.get('why')}",
                                "update mirrorcap and re-bake the host's image, so both speak the same request"))
    return summary, fetch(host, summary, progress)


def fetch(host: Host, summary: dict, progress=None) -> bytes:
    """The result, in chunks of the host's size, IN_FLIGHT commands at a time; checked, then forgotten on the host."""
    rid, total, step = summary["id"], summary["gz_bytes"], summary["chunk"]
    offsets = list(range(0, total, step))
    pending = iter(offsets)
    parts, got = [], 0
    sent = [host.send(f"{FIND_COMMAND} --chunk {rid} {off}") for off in itertools.islice(pending, IN_FLIGHT)]
    while sent:
        inv = host.wait(sent.pop(0))
        text = inv.get("StandardOutputContent", "").strip()
        if inv["Status"] != "Success" or text.startswith("{"):
            raise SsmFailed(Problem("AWS", f"SSM {host.instance_id}", f"the result's piece at {len(parts) * step} did not come: "
                                    f"{text[:200] or inv.get('StandardErrorContent', '')[:200]}", "run find again"))
        parts.append(base64.b64decode(text, validate=True))
        got += len(parts[-1])
        nxt = next(pending, None)
        if nxt is not None:
            sent.append(host.send(f"{FIND_COMMAND} --chunk {rid} {nxt}"))
        if progress and len(offsets) > 1:
            progress(f"fetched {len(parts)}/{len(offsets)} pieces ({got >> 10} of {total >> 10} KiB, gzip'd)")
    packed = b"".join(parts)
    content = gzip.decompress(packed) if packed else b""
    if len(packed) != total or hashlib.sha256(content).hexdigest() != summary["sha256"]:
        raise SsmFailed(Problem("AWS", f"SSM {host.instance_id}", "the fetched result is not what the host wrote "
                                f"({len(packed)} of {total} B, sha256 differs)", "run find again"))
    host.run(f"{FIND_COMMAND} --forget {rid}")
    return content


def capture_host(ec2, capture_name: str) -> str:
    """The running instance of a capture's stack (its tags, as `mirrorcap check` finds it)."""
    from ..contract import HOST, STACK_KEY, resource_name
    from ..remirror.ec2 import describe_instances
    found = describe_instances(ec2, [{"Name": f"tag:{STACK_KEY}", "Values": [capture_name]},
                                     {"Name": "tag:Name", "Values": [resource_name(capture_name, HOST)]},
                                     {"Name": "instance-state-name", "Values": ["running"]}])
    if not found:
        raise SsmFailed(Problem("AWS", "DescribeInstances", f"no running host tagged {STACK_KEY}={capture_name}",
                                f"deploy or start it (mirrorcap check --capture {capture_name} says which), or name one with --instance"))
    return sorted(i["InstanceId"] for i in found)[0]
