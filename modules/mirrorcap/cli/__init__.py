"""`mirrorcap` command line. Commands are thin: parse options, call the package, print.

One module per command; common.py holds what they share (the inventory
option, AWS access, how a problem ends a command).
"""

from __future__ import annotations

import typer

from ..workflow.command import review_app
from . import capacity, check, find, index, render, sessions, validate, window

app = typer.Typer(help="Packet capture on AWS with VPC Traffic Mirroring.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version
        print(f"mirrorcap {version('mirrorcap')}")
        raise typer.Exit()


@app.callback()
def main(_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit")) -> None:
    """Packet capture on AWS with VPC Traffic Mirroring."""

for command in (validate.validate, sessions.sessions, render.render, capacity.capacity, check.check, window.window, find.find, index.index):
    app.command()(command)
app.add_typer(review_app, name="review")  # the pull-request workflow's own steps (workflows/github/)
