"""`mirrorcap preflight ACTION`: make's step before cdktn (diff, deploy, destroy, output, state-bucket)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import MirrorcapError
from .common import USAGE, InventoryOpt

ACTIONS = ("diff", "deploy", "destroy", "output", "state-bucket")


def preflight(
    action: str = typer.Argument(..., help="diff | deploy | destroy | output | state-bucket"),
    stack: str = typer.Option(None, "--stack"),
    inventory: Path = InventoryOpt,
    confirm: str = typer.Option(None, "--confirm", envvar="CONFIRM", help="destroy: the stack's name, typed ahead"),
) -> None:
    """Would cdktn run? Otherwise one line saying what to do, instead of a Node stack trace.

    Exit 0: it can; 1: something stands in the way (no state bucket, prevent_destroy); 2: usage, the
    inventory, terraform, an unconfirmed destroy; 3: no or refused AWS credentials, AWS unreachable."""
    from ..workflow.deploy import Stop, preflight as check
    from ..workflow.markdown import inert
    if action not in ACTIONS:  # before credentials: an unknown action once read as "no AWS credentials"
        print(inert(f"mirrorcap preflight: {action!r} is not an action\n  fix: use one of {', '.join(ACTIONS)}"), file=sys.stderr)
        raise typer.Exit(USAGE)
    try:
        check(action, stack, inventory, confirm, sys.stdin.isatty())
    except Stop as stop:
        print(inert(f"make {action}: {stop}"), file=sys.stderr)  # botocore's and AWS's words may quote input (a profile's name)
        raise typer.Exit(stop.code)
    except MirrorcapError as exc:
        print(f"make {action}: {exc.problems[0]}", file=sys.stderr)
        raise typer.Exit(USAGE)
