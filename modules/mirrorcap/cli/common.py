"""What every command shares: the inventory option, how to reach AWS, how to fail."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer

from ..account_checks.clients import Access
from ..errors import MirrorcapError, Problem
from ..inventory import DEFAULT_INVENTORY, load
from ..inventory.model import Inventory
from ..numbering.plan import Numbering, numbers_for

InventoryOpt = typer.Option(DEFAULT_INVENTORY, "--inventory", "-i", help="inventory file (HCL)", envvar="MIRRORCAP_INVENTORY")
ProfileOpt = typer.Option(None, "--profile", help="AWS named profile (default: the standard credential chain)")
RoleOpt = typer.Option(None, "--role-arn", help="IAM role to assume for the account's calls (e.g. a read-only audit role)")


def access(profile: str | None, role_arn: str | None) -> Access:
    return Access(profile=profile, role_arn=role_arn)


def fail(exc: MirrorcapError, code: int = 1) -> None:
    print(f"mirrorcap: {exc}", file=sys.stderr)
    raise typer.Exit(code)


def aws_problem(exc: Exception) -> Problem:
    """What the account or the way to it said, as a problem: never a traceback, never the wrong cause."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        fix = ("grant the caller the EC2 Describe*/TrafficMirror* permissions this command needs"
               if "Unauthorized" in err.get("Code", "") or "AccessDenied" in err.get("Code", "") else "check the account and region")
        return Problem("AWS", exc.operation_name, f"{err.get('Code')}: {err.get('Message', '')}", fix)
    if isinstance(exc, NoCredentialsError):
        return Problem("AWS", "credentials", str(exc),
                       "configure AWS credentials (AWS_PROFILE, SSO login, or an instance role) for the capture's account")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return Problem("AWS", "network", str(exc), "check the network path to the AWS endpoint (proxy, VPC endpoint, DNS)")
    return Problem("AWS", type(exc).__name__, str(exc), "check the AWS configuration (profile, region, credentials)")


def aws_errors(fn):
    """No traceback for what the account says: missing credentials, denied calls, no network, an unusable endpoint."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            fail(MirrorcapError([aws_problem(exc)]))
        except MirrorcapError as exc:
            fail(exc)
    return wrapper


def load_numbered(inventory: Path) -> tuple[Inventory, Numbering]:
    """The inventory and its session numbers, or every problem with them and exit 1:
    validate, sessions and render refuse the same inputs."""
    try:
        inv = load(inventory)
        return inv, numbers_for(inv)
    except MirrorcapError as exc:
        fail(exc)
        raise  # not reached: fail() exits
