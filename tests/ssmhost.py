"""An SSM client that runs what it is sent, for `mirrorcap find --capture` through Systems Manager.

send_command runs the command's lines with bash as the SSM agent's aws:runShellScript does (as
root: here root of a private user and mount namespace), on this checkout's rendered host files
(rendered/prod/files/usr/local over /usr/local), the env file the user data writes (pointing at
a directory of real pcaps) and a private /var/lib (the host's spool). get_command_invocation
returns what the command printed, cut where SSM cuts it (the first 24,000 characters of stdout,
8,000 of stderr), with Success or Failed by its exit code; the first poll answers InvocationDoesNotExist, as SSM
does right after a send. botocore's Stubber and moto cannot run a command (moto's
SendCommand records it and answers with no output), so every answer here is the real script's.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import uuid
from pathlib import Path

from botocore.exceptions import ClientError

from helpers import ROOT

RENDERED = ROOT / "rendered" / "prod"
STDOUT_MAX, STDERR_MAX = 24_000, 8_000  # GetCommandInvocation: StandardOutputContent, StandardErrorContent
NAMESPACE = r"""set -e
t=$1
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$t/etc.up,workdir=$t/etc.work" /etc
mount -t overlay overlay -o "lowerdir=$2/usr/local:/usr/local,upperdir=$t/usr.up,workdir=$t/usr.work" /usr/local
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$t/lib.up,workdir=$t/lib.work" /var/lib
set +e
exec bash "$3"
"""


def can_run() -> str | None:
    """Why commands cannot run here (no unshare, no overlayfs in a user namespace), or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    r = subprocess.run(["unshare", "-rm", "--propagation", "private", "true"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"no private user and mount namespace here: {r.stderr.strip()}"


class RunningSsm:
    def __init__(self, tmp: Path, pcap_dir: Path, instance_id: str, files: Path = RENDERED / "files", deny: str | None = None):
        self.tmp, self.files, self.instance_id, self.deny = tmp, files, instance_id, deny
        for d in ("etc.up/mirrorcap", "etc.work", "usr.up", "usr.work", "lib.up", "lib.work"):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        env = [line for line in (RENDERED / "mirrorcap.env").read_text().splitlines()
               if not line.startswith(("MIRRORCAP_CAPTURE_DIR=", "MIRRORCAP_CAPTURE_GROUP="))]
        # the namespace maps only root: the spool's group is root's here, the pcap group on a host
        env += [f"MIRRORCAP_CAPTURE_DIR={pcap_dir}", "MIRRORCAP_CAPTURE_GROUP=root"]
        (tmp / "etc.up/mirrorcap/mirrorcap.env").write_text("\n".join(env) + "\n")
        self.sent: list[list[str]] = []
        self.invocations: dict[str, dict] = {}
        self.polled: set[str] = set()
        self._n = itertools.count()

    @property
    def spool(self) -> Path:
        return self.tmp / "lib.up" / "mirrorcap" / "find"

    def send_command(self, **kw):
        if self.deny:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": self.deny}}, "SendCommand")
        assert kw["DocumentName"] == "AWS-RunShellScript" and set(kw["Parameters"]) <= {"commands", "executionTimeout"}
        if kw["InstanceIds"] != [self.instance_id]:
            raise ClientError({"Error": {"Code": "InvalidInstanceId", "Message": "Instances [[%s]] not in a valid state for account"
                                         % kw["InstanceIds"][0]}}, "SendCommand")
        lines = kw["Parameters"]["commands"]
        self.sent.append(lines)
        script = self.tmp / f"_script{next(self._n)}.sh"
        script.write_text("\n".join(lines) + "\n")
        r = subprocess.run(["unshare", "-rm", "--propagation", "private", "bash", "-c", NAMESPACE, "-",
                            str(self.tmp), str(self.files), str(script)],
                           capture_output=True, text=True, timeout=300)
        cid = str(uuid.uuid4())
        self.invocations[cid] = {"CommandId": cid, "InstanceId": self.instance_id, "DocumentName": "AWS-RunShellScript",
                                 "Status": "Success" if r.returncode == 0 else "Failed", "ResponseCode": r.returncode,
                                 "StatusDetails": "Success" if r.returncode == 0 else "Failed",
                                 "StandardOutputContent": r.stdout[:STDOUT_MAX], "StandardErrorContent": r.stderr[:STDERR_MAX]}
        return {"Command": {"CommandId": cid, "DocumentName": "AWS-RunShellScript", "Status": "Pending"}}

    def get_command_invocation(self, CommandId, InstanceId):  # noqa: N803 - boto3's names
        if CommandId not in self.polled and len(self.polled) == 0:
            self.polled.add(CommandId)
            raise ClientError({"Error": {"Code": "InvocationDoesNotExist", "Message": ""}}, "GetCommandInvocation")
        self.polled.add(CommandId)
        return dict(self.invocations[CommandId])
