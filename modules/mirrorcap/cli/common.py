"""What every command shares: the exit codes, the inventory and AWS options, how a problem ends a command.

The exit codes are errors.EXIT_CODES (the one table): EXIT_CODES_HELP prints it as the epilog of every --help.

Nothing heavy is imported here or by the command modules at import time (boto3, hcl2, jinja2,
cdktn...): `mirrorcap --help` stays fast, each command loads what it uses when it runs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NoReturn

import typer

from ..errors import AWS_UNREACHABLE, EXIT_CODES, FINDINGS, NOTHING_TO_APPLY, OK, USAGE, MirrorcapError, Problem
from ..project import DEFAULT_INVENTORY

# The codes, re-exported: the commands take them from here with the helpers below.
__all__ = ["OK", "FINDINGS", "USAGE", "AWS_UNREACHABLE", "NOTHING_TO_APPLY"]

if TYPE_CHECKING:
    from ..account_checks.clients import Access
    from ..inventory.model import Inventory
    from ..numbering.plan import Numbering

# Click rewraps help text unless a paragraph starts with \b: the table keeps its lines.
EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())
CONTEXT = {"help_option_names": ["-h", "--help"]}

InventoryOpt = typer.Option(DEFAULT_INVENTORY, "--inventory", "-i", help="inventory file (HCL)", envvar="MIRRORCAP_INVENTORY")
ProfileOpt = typer.Option(None, "--profile", help="AWS named profile (default: the standard credential chain)")
RoleOpt = typer.Option(None, "--role-arn", help="IAM role to assume for the account's calls (e.g. a read-only audit role)")


def sub_app(help: str) -> typer.Typer:
    """A group of commands (review, bake), with the same help options and exit-code table."""
    return typer.Typer(help=help, no_args_is_help=True, context_settings=CONTEXT, epilog=EXIT_CODES_HELP)


def access(profile: str | None, role_arn: str | None) -> Access:
    """The way to the account; a --role-arn that is no role's ARN is the command line's problem (2),
    not botocore's parameter check after the work (3)."""
    import re
    from ..account_checks.clients import Access
    from ..inventory.load import ROLE_ARN
    if role_arn is not None and not re.fullmatch(ROLE_ARN, role_arn):
        raise MirrorcapError([Problem("command line", "--role-arn", f"{role_arn!r} is not an IAM role ARN",
                                      "pass arn:aws:iam::<account>:role/<name>, or leave --role-arn out (the credentials' own identity)")])
    return Access(profile=profile, role_arn=role_arn)


def fail(exc: MirrorcapError, code: int = USAGE) -> NoReturn:
    print(f"mirrorcap: {exc}", file=sys.stderr)
    raise typer.Exit(code)


def is_aws_error(exc: BaseException) -> bool:
    """A botocore error (only loaded by a command that reached for AWS, so only then imported here)."""
    if "botocore" not in sys.modules:
        return False
    from botocore.exceptions import BotoCoreError, ClientError
    return isinstance(exc, (BotoCoreError, ClientError))


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


def problems_of(exc: BaseException) -> tuple[list[Problem], int]:
    """An error's problems and its exit code: AWS's are 3, the rest are the input's (2)."""
    if isinstance(exc, MirrorcapError):
        return exc.problems, USAGE
    return [aws_problem(exc)], AWS_UNREACHABLE


@contextlib.contextmanager
def reported(code: int = USAGE) -> Iterator[None]:
    """Inside: a MirrorcapError ends the command with `code` (default 2), an AWS error with 3;
    each printed as its problems (file, field, fix), never a traceback."""
    try:
        yield
    except MirrorcapError as exc:
        fail(exc, code)
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        fail(MirrorcapError([aws_problem(exc)]), AWS_UNREACHABLE)


def missing_inventory(inventory: Path) -> Problem:
    return Problem(str(inventory), "", "file not found", "create it (copy capture.hcl from the repository) "
                   "or pass --inventory PATH (or set MIRRORCAP_INVENTORY)")


def load_inventory(inventory: Path) -> Inventory:
    """The inventory, or every problem with it and exit 2 (a missing file too)."""
    if not inventory.exists():  # a file that is there but unusable (a fifo, too big...) is load's to name
        fail(MirrorcapError([missing_inventory(inventory)]))
    from ..inventory import load
    with reported():
        return load(inventory)


def load_numbered(inventory: Path, code: int = USAGE) -> tuple[Inventory, Numbering]:
    """The inventory and its session numbers, or every problem with them and exit `code`
    (2; validate's 1: there, the problems are what was asked for). A missing file is always 2."""
    if not inventory.exists():
        fail(MirrorcapError([missing_inventory(inventory)]))
    from ..inventory import load
    from ..numbering.plan import numbers_for
    with reported(code):
        inv = load(inventory)
        return inv, numbers_for(inv)


def capture_named(inv: Inventory, name: str, inventory: Path, field: str = "--capture"):
    c = next((x for x in inv.captures if x.name == name), None)
    if c is None:
        fail(MirrorcapError([Problem(str(inventory), field, f"no capture named {name}",
                                     "use one of: " + ", ".join(x.name for x in inv.captures))]))
    return c
