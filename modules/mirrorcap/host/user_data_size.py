"""The user data's size, checked against EC2's limit before anything is synthesized: a capture
whose bootstrap does not fit is told to bake an AMI instead."""

from __future__ import annotations

import gzip

from .. import aws_limits as L
from ..errors import MirrorcapError, Problem
from ..inventory.model import Capture, Inventory

SAMPLE_IDS = ("vol-0123456789abcdef0", "eni-0123456789abcdef0")  # real IDs are this long
SAMPLE_BUCKET = "mirrorcap-archive-123456789012-eu-west-1-0123456789"  # a long real bucket name


def gzipped_size(text: str) -> int:
    # Level 6 and no timestamp: what Terraform's base64gzip() (Go's default level) produces, near enough.
    return len(gzip.compress(text.encode(), compresslevel=6, mtime=0))


def check_user_data_size(inventory: Inventory, capture: Capture, text: str) -> None:
    """`text`: the user data rendered with real-length IDs (SAMPLE_IDS, SAMPLE_BUCKET)."""
    size = gzipped_size(text)
    if size > L.USER_DATA_MAX_BYTES:
        raise MirrorcapError([Problem(
            inventory.path, f'capture "{capture.name}" > ami',
            f"the user data is {size} bytes gzipped, over EC2's {L.USER_DATA_MAX_BYTES}-byte limit",
            f"bake an AMI with rendered/{capture.name}/bake.sh (Packer, EC2 Image Builder) and set `ami`")])
