"""`mirrorcap ci-roles`: synthesize the GitHub Actions roles stack (`make ci-roles` then applies it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ..errors import MirrorcapError, Problem
from .common import InventoryOpt, fail


def stack_types(stacks: Path, captures: tuple[str, ...]) -> set[str]:
    """The resource and data source types of the synthesized capture stacks (`make synth`'s output)."""
    from ..stack.ci_actions import types_of
    types: set[str] = set()
    for name in captures:
        path = stacks / "stacks" / name / "cdk.tf.json"
        try:
            types |= types_of(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise MirrorcapError([Problem(str(path), f'capture "{name}"', f"no synthesized stack ({type(exc).__name__})",
                                          "run make synth first (make ci-roles does), with the same inventory")]) from None
    return types


def ci_roles(
    inventory: Path = InventoryOpt,
    repository: str = typer.Option(..., "--repository", help="the GitHub repository the workflows run in, OWNER/NAME"),
    branch: str = typer.Option("main", "--branch", help="the default branch: the apply and the drift check run on it"),
    environment: str = typer.Option("", "--environment", help="trust the apply role to this GitHub environment instead of the branch"),
    oidc_provider_arn: str = typer.Option("", "--oidc-provider-arn", help="the account's GitHub OIDC provider, when it has one "
                                          "(default: the stack creates it)"),
    stacks: Path = typer.Option(Path("cdktf.out"), "--stacks", help="where make synth wrote the capture stacks"),
    out: Path = typer.Option(Path("cdktf.out/ci-roles"), "--out", help="where the roles stack is written"),
) -> None:
    """Synthesize the CI roles stack: GitHub's OIDC provider, the read-only plan role and the apply role,
    their actions computed from the synthesized capture stacks' resource types (`make ci-roles` applies it).

    Exit 0: written (its directory is printed); 2: a bad option, an invalid inventory, a capture without
    remote state, or stacks not synthesized."""
    from ..ci_settings import settings
    from ..inventory import load
    from ..stack.ci_actions import unknown
    try:
        inv = load(inventory)
        s = settings(inv, repository=repository, branch=branch, environment=environment, oidc_provider_arn=oidc_provider_arn)
        types = stack_types(stacks, s.captures)
        if unknown(types):
            raise MirrorcapError([Problem(str(stacks), "resource types", f"mirrorcap does not know the permissions of "
                                          f"{', '.join(sorted(unknown(types)))}", "add them to modules/mirrorcap/stack/ci_actions.py "
                                          "and prove them (tests/synth/test_ci_roles.py)")])
    except MirrorcapError as exc:
        fail(exc)
    from ..synth.pipeline import skip_token_creation_stacks, target_versions
    skip_token_creation_stacks()
    from cdktn import App
    from ..stack.ci_roles import STACK, CiRolesStack
    app = App(outdir=str(out), context={"targetVersions": target_versions()})
    CiRolesStack(app, s, types)
    app.synth()
    print(out / "stacks" / STACK)
    sys.stdout.flush()
