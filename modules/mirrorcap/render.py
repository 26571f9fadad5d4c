"""Jinja2 rendering of the host bootstrap templates in scripts/."""

from __future__ import annotations

from pathlib import Path

import jinja2

from .config import Capture

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts"


def environment() -> jinja2.Environment:
    # StrictUndefined: a typo in a template fails the render instead of
    # silently producing an empty value on a production host.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(SCRIPTS_DIR)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


def env_file(capture: Capture, volume_id: str, eni_id: str) -> str:
    return environment().get_template("mirrorcap.env.j2").render(capture=capture, volume_id=volume_id, eni_id=eni_id)


def user_data(capture: Capture, volume_id: str, eni_id: str) -> str:
    env = env_file(capture, volume_id, eni_id)
    return environment().get_template("user-data.sh.j2").render(capture=capture, env_file=env)
