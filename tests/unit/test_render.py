"""Rendered bootstrap: up to date in rendered/, shellcheck and systemd-analyze clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import EXAMPLE, FIXTURES, ROOT, minimal, mirrorcap, sources, eni, tree, write
from kinds import WALK, capture_as
from mirrorcap.inventory import load
from mirrorcap.host.render import rendered_tree
from mirrorcap.host.tree import write_tree
from typer.testing import CliRunner

from mirrorcap.cli import app


def test_committed_rendered_dir_is_up_to_date():
    result = mirrorcap("render", "--check", "--inventory", str(EXAMPLE), "--out", str(ROOT / "rendered"), cwd=ROOT)
    assert result.returncode == 0, result.stderr + "\nrun `mirrorcap render` and commit rendered/"


def test_render_check_notices_a_stale_file(tmp_path):
    out = tmp_path / "rendered"
    write_tree(rendered_tree(load(EXAMPLE)), out)
    (out / "prod" / "bake.sh").write_text("#!/bin/bash\n")
    result = mirrorcap("render", "--check", "--inventory", str(EXAMPLE), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 1 and "prod/bake.sh" in result.stderr


@pytest.fixture(scope="module")
def edge_tree(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("render")
    body = sources(eni(1)) + f'\n  source {{\n    eni_id = "{eni(2)}"\n    vni = 16777215\n  }}\n' \
        '  host {\n    capture_dir = "/srv/pcap-store"\n    rotate_seconds = 30\n    snaplen = 128\n  }'
    out = d / "rendered"
    write_tree(rendered_tree(load(write(d, minimal(body)))), out)
    return out / "test"


def test_edge_config_reaches_the_files(edge_tree):
    env = (edge_tree / "mirrorcap.env").read_text()
    assert 'MIRRORCAP_VNIS="4242 16777215"' in env and "MIRRORCAP_ROTATE_SECONDS=30" in env and "MIRRORCAP_SNAPLEN=128" in env
    unit = (edge_tree / "files/etc/systemd/system/mirrorcap-capture@.service").read_text()
    assert "ReadWritePaths=/srv/pcap-store" in unit and "RequiresMountsFor=/srv/pcap-store" in unit
    assert "MIRRORCAP_CAPTURE_DIR=/srv/pcap-store\n" in env  # the scripts read it from there


@pytest.mark.parametrize("which", ["example", "edge"])
def test_shellcheck_clean(which, edge_tree):
    """The rendered shell: bake and user data (the host's own scripts are plain files, checked in test_host_scripts)."""
    tree = ROOT / "rendered" / "prod" if which == "example" else edge_tree
    files = [str(tree / "bake.sh"), str(tree / "user-data.sh")]
    result = subprocess.run(["shellcheck", "--severity=info", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def verify_units(files_root: Path) -> subprocess.CompletedProcess:
    """systemd-analyze verify in a scratch root: the rendered files plus the system's own units."""
    root = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip())
    try:
        shutil.copytree(files_root, root, dirs_exist_ok=True, symlinks=True)
        shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        # The system's own commands the units run (merged /usr, as on Amazon Linux 2023 and bookworm).
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(shutil.which("kill", path="/usr/bin:/bin"), root / "usr/bin/kill")
        (root / "bin").symlink_to("usr/bin")
        units = sorted(str(p) for p in (root / "etc/systemd/system").iterdir() if p.is_file())  # drop-ins: loaded with theirs
        return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *units], capture_output=True, text=True)
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("which", ["example", "edge"])
def test_systemd_analyze_verify_clean(which, edge_tree):
    tree = ROOT / "rendered" / "prod" if which == "example" else edge_tree
    result = verify_units(tree / "files")
    assert result.returncode == 0 and result.stdout + result.stderr == ""


def test_systemd_analyze_would_catch_a_broken_unit(edge_tree, tmp_path):
    broken = tmp_path / "files"
    shutil.copytree(edge_tree / "files", broken)
    unit = broken / "etc/systemd/system/mirrorcap-storage.service"
    unit.write_text(unit.read_text().replace("Type=oneshot", "Type=oneshoot"))
    assert "Failed to parse service type" in verify_units(broken).stderr


def test_capture_unit_is_hardened_and_never_gives_up(edge_tree):
    unit = (edge_tree / "files/etc/systemd/system/mirrorcap-capture@.service").read_text()
    # What each line does is proven in the boot lab (tests/host/); this guards the text cheaply.
    for line in ["Requires=mirrorcap-storage.service mirrorcap-decap.service", "Restart=always\n", "StartLimitIntervalSec=0\n",
                 "UMask=0027", "User=mirrorcap\n", "AmbientCapabilities=CAP_NET_RAW\n", "CapabilityBoundingSet=CAP_NET_RAW\n",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "StateDirectory=mirrorcap/capture-%i\n",
                 "RuntimeDirectoryPreserve=yes\n", "ExecReload=/bin/kill -HUP $MAINPID\n", "WantedBy=mirrorcap.target\n"]:
        assert line in unit
    assert "StartLimitBurst" not in unit
    script = (edge_tree / "files/usr/local/libexec/mirrorcap/capture").read_text()
    # Never root; buffered output, flushed only while tcpdump is stopped inside poll().
    assert '"-U"' not in script and '"-Z"' not in script and "signal.SIGSTOP" in script and "POLL_SYSCALLS" in script


def test_storage_unit_has_no_mount_namespace(edge_tree):
    """A namespacing option would make the volume's mount private to the unit (it was: PrivateTmp=)."""
    unit = (edge_tree / "files/etc/systemd/system/mirrorcap-storage.service").read_text()
    settings = [line.split("=")[0] for line in unit.splitlines() if "=" in line and not line.startswith("#")]
    namespacing = {"PrivateTmp", "PrivateDevices", "PrivateMounts", "ProtectHome", "ProtectSystem", "ReadWritePaths",
                   "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
                   "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "ProtectProc", "RootDirectory"}
    assert not namespacing & set(settings)


def two_captures_one_eni(a: str, b: str) -> str:
    return minimal(f'  source {{\n    eni_id = "{eni(1)}"\n{a}  }}', name="a") + minimal(f'  source {{\n    eni_id = "{eni(1)}"\n{b}  }}', name="b")


def test_render_refuses_what_validate_refuses_about_session_numbers(tmp_path):
    """One ENI in two captures with the same fixed session number: AWS evaluates one of them only."""
    write(tmp_path, two_captures_one_eni("    session_number = 5\n", "    session_number = 5\n"))
    for args in (["validate"], ["render", "--out", "rendered"]):
        result = mirrorcap(*args, cwd=tmp_path)
        assert result.returncode == (1 if args[0] == "validate" else 2) and "session_number" in result.stderr and "fix:" in result.stderr, (args, result.stderr)
    assert not (tmp_path / "rendered").exists()


def test_a_lock_edited_into_a_clash_is_renumbered_out_loud(tmp_path):
    write(tmp_path, two_captures_one_eni("", ""))
    (tmp_path / "capture.lock.json").write_text(json.dumps({"version": 1, "captures": {"a": {eni(1): 1}, "b": {eni(1): 1}}}))
    result = mirrorcap("sessions", "--write", cwd=tmp_path)
    assert result.returncode == 0
    assert f"capture.lock.json: b {eni(1)}: session number 1 -> 2" in result.stderr, result.stderr


def test_version():
    result = mirrorcap("--version", cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "mirrorcap 0.1.0"


def test_bad_inventory_renders_nothing(tmp_path):
    write(tmp_path, minimal("  host {\n    capture_dir = \"relative/dir\"\n  }"))
    result = mirrorcap("render", "--out", "rendered", cwd=tmp_path)
    assert result.returncode == 2 and "host > capture_dir" in result.stderr and "fix:" in result.stderr
    assert not (tmp_path / "rendered").exists()


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under `root`, links as their target (not followed), directories as None."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            found[str(p.relative_to(root))] = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
    return found


def test_render_out_dot_in_a_project_refuses_and_keeps_everything(tmp_path):
    """`--out .` once replaced a whole project (inventory, lock file, sources) with rendered files and exited 0."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    shutil.copy(EXAMPLE, project / "capture.hcl")
    shutil.copy(ROOT / "capture.lock.json", project / "capture.lock.json")
    (project / "src" / "tool.py").write_text("print('mine')\n")
    before = snapshot(tmp_path)
    result = mirrorcap("render", "--out", ".", cwd=project)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{project}: holds capture.hcl, which `mirrorcap render` does not write" in result.stderr
    assert "fix: pass --out a new or empty directory" in result.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["regular file", "symlink to an earlier render", "earlier render with a file of mine"])
def test_render_refuses_what_it_did_not_write_and_writes_nothing(tmp_path, kind):
    earlier, out = tmp_path / "earlier", tmp_path / "out"
    write_tree(rendered_tree(load(EXAMPLE)), earlier)
    if kind == "regular file":
        out.write_text("notes\n")  # was made a directory, with .out.old left behind and a traceback
    elif kind == "symlink to an earlier render":
        out.symlink_to(earlier)
    else:
        shutil.copytree(earlier, out)
        (out / "prod" / "files" / "etc" / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    result = mirrorcap("render", "--inventory", str(EXAMPLE), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"mirrorcap: {out}: ") and "fix:" in result.stderr
    assert snapshot(tmp_path) == before


def test_render_replaces_an_earlier_render_or_an_empty_directory_whole(tmp_path):
    out, empty = tmp_path / "rendered", tmp_path / "empty"
    write_tree(rendered_tree(load(EXAMPLE)), out)  # capture "prod"
    out.chmod(0o755)
    (out / "prod" / "bake.sh").unlink()  # an earlier render may have fewer files
    inventory = load(write(tmp_path, minimal(sources(eni(1)))))  # capture "test" only
    write_tree(rendered_tree(inventory), out)
    assert sorted(os.listdir(out)) == ["test"] and (out.stat().st_mode & 0o777) == 0o755
    empty.mkdir()
    write_tree(rendered_tree(inventory), empty)
    assert tree(empty) == tree(out)
    assert sorted(os.listdir(tmp_path)) == ["capture.hcl", "empty", "rendered"]  # no staging or .old left


@pytest.mark.parametrize("fixture,names", [(EXAMPLE, ["prod"]), (FIXTURES / "fleet.hcl", ["fleet", "solo"])], ids=["example", "fleet"])
def test_a_capture_changing_kind_is_rendered_whole_without_what_its_old_kind_needed(tmp_path, fixture, names):
    """single -> archive -> fleet -> archive -> single -> fleet -> single: each render leaves
    exactly the new layout (the archive's retention replaces the plain one, a fleet adds its
    files, going back removes them), and never touches a file no render writes."""
    runner, text, out = CliRunner(), fixture.read_text(), tmp_path / "rendered"
    inventory = tmp_path / "capture.hcl"
    for name in names:
        for kind in WALK:
            text = capture_as(text, name, kind)
            inventory.write_text(text)
            for args in (["sessions", "--write"], ["render", "--out", str(out)]):
                r = runner.invoke(app, [*args, "--inventory", str(inventory)])
                assert r.exit_code == 0, (name, kind, r.stderr)
            want = rendered_tree(load(inventory))
            assert {k: v.decode() for k, v in tree(out).items()} == {k: content for k, (content, _) in want.items()}, (name, kind)
            assert all((out / k).stat().st_mode & 0o777 == mode for k, (_, mode) in want.items())
    # A file of someone's among them is still refused, whatever the kind change
    (out / names[0] / "files" / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    inventory.write_text(capture_as(text, names[0], "fleet"))
    r = runner.invoke(app, ["render", "--out", str(out), "--inventory", str(inventory)])
    assert r.exit_code == 2 and "notes.txt, which `mirrorcap render` does not write" in r.stderr
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "capture.hcl"} == {k: v for k, v in before.items() if k != "capture.hcl"}
