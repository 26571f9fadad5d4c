"""lockfile.read/write on real files: every way a lock can be wrong names the file, the place and the fix."""

from __future__ import annotations

import json
import os

import pytest

from mirrorcap.errors import MirrorcapError
from mirrorcap.numbering import lockfile


def test_missing_lock_is_empty_and_a_written_lock_reads_back(tmp_path):
    path = tmp_path / "capture.lock.json"
    assert lockfile.read(path) == {}
    numbers = {("prod", "eni-0123456789abcdef0"): 2, ("prod", "i-0123456789abcdef0"): 1}
    assert lockfile.write(path, numbers) is True
    assert lockfile.read(path) == numbers
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    mtime = path.stat().st_mtime_ns
    assert lockfile.write(path, numbers) is False and path.stat().st_mtime_ns == mtime  # unchanged: untouched


BROKEN = {
    # name: (file content, field named, words)
    "not json": ("{ nope", "", "not a readable JSON lock file"),
    "not an object": ("[1, 2]", "version", "expected a version 1 mirrorcap lock file"),
    "other version": (json.dumps({"version": 2, "captures": {}}), "version", "expected a version 1"),
    "captures not a map": (json.dumps({"version": 1, "captures": []}), "version", "expected a version 1"),
    "sources not a map": (json.dumps({"version": 1, "captures": {"prod": [1]}}), "captures.prod", "map of source ID to session number"),
    "number is a string": (json.dumps({"version": 1, "captures": {"prod": {"eni-1": "2"}}}), "captures.prod.eni-1", "'2' is not a session number"),
    "number is a bool": (json.dumps({"version": 1, "captures": {"prod": {"eni-1": True}}}), "captures.prod.eni-1", "True is not a session number"),
    "not utf-8": (b"\xff\xfe{}", "", "capture.lock.json"),
    # Once renumbered without a word: a lock change is a session change, so a number outside AWS's range is refused
    "number 0": (json.dumps({"version": 1, "captures": {"prod": {"eni-1": 0}}}), "captures.prod.eni-1", "session number 0 is outside 1-32766"),
    "number -3": (json.dumps({"version": 1, "captures": {"prod": {"eni-1": -3}}}), "captures.prod.eni-1", "session number -3 is outside"),
    "number 40000": (json.dumps({"version": 1, "captures": {"prod": {"eni-1": 40000}}}), "captures.prod.eni-1", "40000 is outside 1-32766"),
    # Once read last-wins
    "a source twice": ('{"version": 1, "captures": {"prod": {"eni-1": 1, "eni-1": 2}}}', "", "key 'eni-1' is given twice"),
    "a capture twice": ('{"version": 1, "captures": {"prod": {}, "prod": {"eni-1": 2}}}', "", "key 'prod' is given twice"),
    # Once a RecursionError traceback
    "nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, "", "nested too deeply to read"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_lock_is_a_clear_error(tmp_path, case):
    content, field, words = BROKEN[case]
    path = tmp_path / "capture.lock.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MirrorcapError) as exc:
        lockfile.read(path)
    (problem,) = exc.value.problems
    assert problem.file == str(path) and problem.field == field
    assert words in str(exc.value)
    assert "mirrorcap sessions --write" in problem.fix


@pytest.mark.parametrize("special", ["directory", "fifo"])
def test_a_lock_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, special):
    path = tmp_path / "capture.lock.json"
    path.mkdir() if special == "directory" else os.mkfifo(path)
    with pytest.raises(MirrorcapError) as exc:
        lockfile.read(path)
    assert str(path) in str(exc.value)


def test_a_lock_that_is_a_link_is_written_through_to_its_file(tmp_path):
    shared = tmp_path / "shared" / "prod.lock.json"
    shared.parent.mkdir()
    lockfile.write(shared, {("prod", "eni-1"): 1})
    link = tmp_path / "capture.lock.json"
    link.symlink_to(shared)
    assert lockfile.write(link, {("prod", "eni-1"): 1, ("prod", "eni-2"): 2}) is True
    assert link.is_symlink() and os.readlink(link) == str(shared)  # still a link, to the same file
    assert lockfile.read(shared) == {("prod", "eni-1"): 1, ("prod", "eni-2"): 2}


@pytest.mark.parametrize("where", ["nothing", "a directory"])
def test_a_lock_link_to_no_regular_file_is_refused_not_replaced(tmp_path, where):
    target = tmp_path / "elsewhere"
    if where == "a directory":
        target.mkdir()
    link = tmp_path / "capture.lock.json"
    link.symlink_to(target)
    with pytest.raises(MirrorcapError) as exc:
        lockfile.write(link, {("prod", "eni-1"): 1})
    assert "is a link to" in str(exc.value) and "fix: point the link at the lock file" in str(exc.value)
    assert link.is_symlink() and (target.is_dir() if where == "a directory" else not target.exists())


def test_a_lock_link_to_nothing_is_no_lock_yet_refused(tmp_path):
    """Read as no lock at all, it once let validate say OK (numbers recomputed) and `sessions --write` then refuse."""
    link = tmp_path / "capture.lock.json"
    link.symlink_to(tmp_path / "gone.lock.json")
    with pytest.raises(MirrorcapError) as exc:
        lockfile.read(link)
    (problem,) = exc.value.problems
    assert problem.file == str(link) and "which does not exist" in problem.message and "point the link at the lock file" in problem.fix
