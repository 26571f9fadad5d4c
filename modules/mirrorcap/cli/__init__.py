"""`mirrorcap`: the one command line. Commands are thin: parse options, call the package, print.

One module per command (review and bake are groups of steps, one module each); common.py holds
what they share: the inventory and AWS options, how a problem ends a command, and the exit codes
(errors.EXIT_CODES, the same for every command, printed at the end of every --help).

Importing this package loads Typer and nothing heavy: each command imports boto3, the HCL parser,
Jinja2 or cdktn when it runs (tests/unit/test_cli_imports.py holds it to that).
"""

from __future__ import annotations

import os
import sys

import typer

from . import bake, capacity, check, ci_roles, find, index, preflight, render, review, sessions, state_bucket, synth, validate, window
from .common import CONTEXT, EXIT_CODES_HELP

# A reader that goes away (`mirrorcap sessions | head -1`) ends the command as SIGPIPE ends
# any CLI, 128 + 13, in silence: click's own answer is exit 1, this table's "findings".
BROKEN_PIPE = 141


class _App(typer.Typer):
    def __call__(self, *args, **kwargs):
        try:
            super().__call__(*args, **kwargs)
        except SystemExit as exc:
            # How click (typer's own copy too) marks an EPIPE it caught; rich's help leaves the error as the context.
            if type(sys.stdout).__name__ == "PacifyFlushWrapper" or isinstance(exc.__context__, BrokenPipeError):
                raise SystemExit(BROKEN_PIPE) from None
            try:
                sys.stdout.flush()  # what is still buffered meets the closed pipe here, not at interpreter exit
            except BrokenPipeError:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left for exit's flush to fail on
                raise SystemExit(BROKEN_PIPE) from None
            raise exc


app = _App(help="Packet capture on AWS with VPC Traffic Mirroring.", no_args_is_help=True,
           context_settings=CONTEXT, epilog=EXIT_CODES_HELP)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version
        print(f"mirrorcap {version('mirrorcap')}")
        raise typer.Exit()


@app.callback()
def main(_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit")) -> None:
    """Packet capture on AWS with VPC Traffic Mirroring."""


for command in (validate.validate, sessions.sessions, render.render, synth.synth, capacity.capacity, check.check, window.window, find.find, index.index):
    app.command(epilog=EXIT_CODES_HELP)(command)
# make's steps around cdktn and Packer (make diff|deploy|destroy|output|state-bucket, make bake)
app.command(epilog=EXIT_CODES_HELP)(preflight.preflight)
app.command("state-bucket", epilog=EXIT_CODES_HELP)(state_bucket.state_bucket)
app.command("ci-roles", epilog=EXIT_CODES_HELP)(ci_roles.ci_roles)
app.add_typer(bake.bake_app, name="bake")
app.add_typer(review.review_app, name="review")  # the pull-request workflow's own steps (workflows/github/)
