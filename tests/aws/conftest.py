"""What the live-account tests share: stacks synthesized once per run, to deploy into moto (synth_account.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import mirrorcap, synth


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory):
    """inventory text -> the directory holding it, its lock and its synthesized stacks (each text synthesized once)."""
    done: dict[str, Path] = {}

    def get(text: str) -> Path:
        if text not in done:
            work = tmp_path_factory.mktemp("synthesized")
            (work / "capture.hcl").write_text(text)
            r = mirrorcap("sessions", "--write", cwd=work)
            assert r.returncode == 0, r.stderr
            r = synth(work, review_hcl=False)
            assert r.returncode == 0, r.stderr
            done[text] = work
        return done[text]
    return get
