"""The rendered host files of the example inventory, and the root-only mark for tests that run them."""

from __future__ import annotations

import os

import pytest

from helpers import ROOT

RENDERED = ROOT / "rendered" / "prod" / "files"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="host tests need root (network namespaces)")
