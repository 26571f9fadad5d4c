"""Rules written once (contract.py, numbering.lockfile, stack.literal, the host's archive script)
and read by every side that needs them."""

from __future__ import annotations

import importlib.util
import json

import pytest

from helpers import ROOT
from mirrorcap import backlog, contract
from mirrorcap.errors import MirrorcapError
from mirrorcap.host import render
from mirrorcap.numbering import lockfile
from mirrorcap.workflow import review


def test_a_session_description_reads_back_to_its_label():
    text = contract.session_description("prod", "web tier ${x}")
    assert text == "mirrorcap prod: web tier ${x}"
    assert contract.session_label("prod", text) == "web tier ${x}"
    assert contract.session_label("stage", text) == text  # another capture's: whole


def test_the_vni_is_the_sources_else_the_captures():
    assert contract.vni_of(7, 4242) == 7 and contract.vni_of(None, 4242) == 4242 and contract.vni_of(0, 1) == 0


def test_review_reads_the_lock_as_numbering_does(tmp_path):
    numbers = {("prod", "eni-1"): 3, ("prod", "i-2"): 5, ("stage", "eni-9"): 1}
    text = lockfile.render(numbers)
    path = tmp_path / "capture.lock.json"
    path.write_text(text)
    assert lockfile.read(path) == numbers
    assert review.parse_lock(text, "capture.lock.json") == {"prod": {"eni-1": 3, "i-2": 5}, "stage": {"eni-9": 1}}
    out_of_range = json.dumps({"version": 1, "captures": {"prod": {"eni-1": 0}}})
    for read in (lambda: review.parse_lock(out_of_range, "lock.json"), lambda: lockfile.parse(out_of_range, "lock.json")):
        with pytest.raises(MirrorcapError, match=r"lock.json: captures.prod.eni-1: session number 0 is outside 1-32766"):
            read()
    assert review.lock_path("./infra/mirror.hcl") == "infra/mirror.lock.json" == lockfile.path_for("infra/mirror.hcl").as_posix()


def test_the_archive_back_off_is_the_host_scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts" / "host"))  # its shared library, as on the host
    spec = importlib.util.spec_from_file_location("archive_script", ROOT / "scripts" / "host" / "mirrorcap-archive.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert backlog.archive_backoff_seconds() == tuple(script.BACKOFF_SECONDS)
    assert script.backoff_seconds(99) == max(backlog.archive_backoff_seconds())


def test_user_data_is_escaped_as_literal_text_is():
    from mirrorcap.stack.literal import escape
    assert render.template_escape is escape
    assert escape("a ${b} %{c}") == "a $${b} %%{c}"
