"""`mirrorcap state-bucket`: the S3 buckets for Terraform state the inventory names (`make state-bucket`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .common import AWS_UNREACHABLE, InventoryOpt, aws_problem, is_aws_error


def state_bucket(
    inventory: Path = InventoryOpt,
    capture: str = typer.Option(None, "--capture", help="only this capture's bucket"),
) -> None:
    """Create the Terraform state buckets the inventory's backend "s3" blocks name (once; safe to run again).

    Versioned, encrypted, public access blocked, owner-enforced, TLS only.

    Exit 0: done; 2: no such capture, no backend "s3", a bucket name taken; 3: AWS refused or unreachable."""
    from ..workflow.deploy import Stop, state_buckets
    from ..workflow.markdown import inert
    try:
        for line in state_buckets(inventory, capture):
            print(f"make state-bucket: {line}")
    except Stop as stop:
        print(inert(f"make state-bucket: {stop}"), file=sys.stderr)  # AWS's words may quote input
        raise typer.Exit(stop.code)
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        print(f"make state-bucket: {aws_problem(exc)}", file=sys.stderr)
        raise typer.Exit(AWS_UNREACHABLE)
