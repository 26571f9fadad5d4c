"""The destroy configuration of a removed capture names the state its stack used: its backend block
is the one cdktn writes for the same inventory backend (the stack's own code, stack/capture_stack.py),
for every setting a backend "s3" block takes."""

from __future__ import annotations

import json

from cdktn import App, TerraformStack

from helpers import FIXTURES
from mirrorcap.inventory import load
from mirrorcap.inventory.model import Backend
from mirrorcap.stack.capture_stack import _backend
from mirrorcap.workflow import removal


def test_the_destroy_configuration_has_the_backend_cdktn_writes(tmp_path):
    edge = [c.backend for c in load(FIXTURES / "edge.hcl").captures if c.backend.kind == "s3"]
    every = Backend(kind="s3", bucket="state-bucket", key="teams/x.tfstate", region="eu-west-1", use_lockfile=False,
                    dynamodb_table="locks", encrypt=True, kms_key_id="arn:aws:kms:eu-west-1:111122223333:key/abc",
                    role_arn="arn:aws:iam::111122223333:role/deployer")
    plain = Backend(kind="s3", bucket="state-bucket", key="mirrorcap/x.tfstate", region="ap-northeast-1")
    app = App(outdir=str(tmp_path))
    for n, b in enumerate([*edge, every, plain]):
        stack = TerraformStack(app, f"s{n}")
        _backend(stack, b)
        written = json.loads(json.dumps(stack.to_terraform()))["terraform"]["backend"]
        assert removal.backend_block(b) == written, b
    assert edge  # the fixture has an S3 backend with a lock table and a role
