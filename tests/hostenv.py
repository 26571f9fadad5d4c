"""The rendered host files and env file of the example inventory, and the root-only mark for tests that run them."""

from __future__ import annotations

import os

import pytest

from helpers import ROOT

RENDERED = ROOT / "rendered" / "prod" / "files"
ENV_FILE = ROOT / "rendered" / "prod" / "mirrorcap.env"  # what the user data writes to /etc/mirrorcap/mirrorcap.env

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="host tests need root (network namespaces)")
