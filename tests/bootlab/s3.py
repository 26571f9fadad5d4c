"""S3 for the machine (a moto server under S3's real names, TLS from a lab CA the
machine trusts; the same server answers CloudWatch's monitoring.<region> endpoint)
and the instance role's credentials the IMDS hands out."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .lab import _pdeathsig, _sh

S3_ADDR = "198.51.100.3"  # TEST-NET-2: never a real address
ROLE = "mirrorcap-bootlab-host"
S3_CLIENT = r'''
import json, sys, boto3, urllib3
from botocore.config import Config
urllib3.disable_warnings()
addr, region, op, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
s3 = boto3.client("s3", region_name=region, endpoint_url="https://%s" % addr, verify=False,
                  aws_access_key_id="lab", aws_secret_access_key="lab", config=Config(s3={"addressing_style": "path"}))
if op == "dump":
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=kwargs["Bucket"]):
        for o in page.get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=kwargs["Bucket"], Key=o["Key"])["Body"].read().hex()
    print(json.dumps(out))
else:
    getattr(s3, op)(**kwargs)
    print("{}")
'''

CLOUDWATCH_CLIENT = r'''
import json, sys, boto3, urllib3
urllib3.disable_warnings()
addr, region, op, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
cw = boto3.client("cloudwatch", region_name=region, endpoint_url="https://%s" % addr, verify=False,
                  aws_access_key_id="lab", aws_secret_access_key="lab")
out = getattr(cw, op)(**kwargs)
out.pop("ResponseMetadata", None)
print(json.dumps(out, default=str))
'''


def _role_paths() -> dict[str, str]:
    """IMDS answers for the instance role's credentials (what the AWS CLI fetches by itself)."""
    creds = {"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC",
             "AccessKeyId": "ASIABOOTLABEXAMPLE00", "SecretAccessKey": "bootlab-secret", "Token": "bootlab-token",
             "Expiration": "2099-01-01T00:00:00Z"}
    return {"iam/security-credentials/": ROLE, f"iam/security-credentials/{ROLE}": json.dumps(creds)}


def _lab_certificate(d: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """(certificate, key, CA certificate) for `names`, signed by a lab CA made for it (openssl)."""
    cert, key, ca = d / "server.crt", d / "server.key", d / "ca.crt"
    if cert.exists():
        return cert, key, ca
    d.mkdir(parents=True, exist_ok=True)
    ca_key = d / "ca.key"
    _sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mirrorcap bootlab CA",
        "-keyout", str(ca_key), "-out", str(ca))
    _sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}", "-keyout", str(key),
        "-out", str(d / "server.csr"))
    (d / "ext.cnf").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    _sh("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"), "-out", str(cert))
    return cert, key, ca


class S3:
    """Machine's S3 (a mixin)."""

    def serve_s3(self, region: str, buckets: list[str] | tuple[str, ...] = ()) -> None:
        """Start S3 (moto server) for this machine under its real endpoint names; create `buckets`.
        Before boot or live: the CA and /etc/hosts go into the machine either way."""
        self.open()
        self.s3_region = region
        names = [f"s3.{region}.amazonaws.com", *(f"{b}.s3.{region}.amazonaws.com" for b in buckets),
                 f"monitoring.{region}.amazonaws.com"]
        cert, key, ca = _lab_certificate(self.workdir / "s3-tls", [f"s3.{region}.amazonaws.com", f"*.s3.{region}.amazonaws.com",
                                                                   f"monitoring.{region}.amazonaws.com"])
        self.write_file("/usr/local/share/ca-certificates/mirrorcap-bootlab-s3.crt", ca.read_text())
        hosts = self.read_file("/etc/hosts") if (self.pid or self._exists_offline("/etc/hosts")) else ""
        self.write_file("/etc/hosts", hosts + f"{S3_ADDR} {' '.join(names)}\n")
        if self.pid:
            self.run("update-ca-certificates", check=True)
        else:
            self._offline("update-ca-certificates")
        _sh("ip", "-n", self.netns, "addr", "add", f"{S3_ADDR}/32", "dev", "lo")
        log = self.workdir / "s3.log"
        with open(log, "wb") as out:
            self._s3 = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", str(Path(sys.executable).parent / "moto_server"),
                 "-H", "0.0.0.0", "-p", "443", "-c", str(cert), "-k", str(key)],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pdeathsig)
        self._track("s3", self._s3.pid)
        deadline = time.monotonic() + 30
        while b"Running on" not in log.read_bytes():
            if self._s3.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        for bucket in buckets:
            self._s3_call("create_bucket", Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})

    def set_s3_reachable(self, reachable: bool) -> None:
        """An S3 outage for the machine (its address is gone: connections fail at once), or its end."""
        _sh("ip", "-n", self.netns, "addr", "add" if reachable else "del", f"{S3_ADDR}/32", "dev", "lo")

    def s3_objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of `bucket` as the S3 server holds it."""
        return {k: bytes.fromhex(v) for k, v in self._s3_call("dump", Bucket=bucket).items()}

    def cloudwatch(self, op: str, **kwargs) -> dict:
        """A CloudWatch call (boto3) to the machine's moto server, from the host: what the machine published."""
        p = _sh("nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-c", CLOUDWATCH_CLIENT, "127.0.0.1",
                self.s3_region, op, json.dumps(kwargs, default=str), check=False, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"CloudWatch {op}: {p.stderr.strip()[-2000:]}")
        return json.loads(p.stdout)

    def _s3_call(self, op: str, **kwargs):
        """boto3 against the machine's S3, from the host in the machine's netns (its server is only there)."""
        # 127.0.0.1 (the server listens on every address of the netns): reachable during an outage too.
        p = _sh("nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-c", S3_CLIENT, "127.0.0.1",
                self.s3_region, op, json.dumps(kwargs), check=False, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"S3 {op}: {p.stderr.strip()[-2000:]}")
        return json.loads(p.stdout)
