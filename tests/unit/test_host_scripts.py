"""The host's scripts as the plain files they are: linted, imported and run without rendering."""

from __future__ import annotations

import ast
import datetime as dt
import fnmatch
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import EXAMPLE, ROOT, eni, minimal
from mirrorcap import aws_limits, contract
from mirrorcap.host import manifest, render
from mirrorcap.inventory import load

HOST = ROOT / "scripts" / "host"
RENDERED = ROOT / "rendered" / "prod"
PLAIN = sorted(p for p in HOST.iterdir() if p.is_file() and p.suffix != ".j2")  # (not a __pycache__ a test importing them left)
SHELL = [p for p in PLAIN if p.suffix == ".sh"]
PYTHON = [p for p in PLAIN if p.suffix == ".py"]


def load_text(text: str):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "capture.hcl"
        p.write_text(text)
        return load(p)


def host_module():
    sys.path.insert(0, str(HOST))
    try:
        import mirrorcap_host
    finally:
        sys.path.remove(str(HOST))
    return mirrorcap_host


def host_script(name: str):
    """A host script imported as a module (its main() does not run), with the shared module beside it."""
    host_module()
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), HOST / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_what_must_be_baked_is_a_template():
    assert sorted(p.name for p in HOST.glob("*.j2")) == ["bake.sh.j2", "mirrorcap-archive.service.j2",
                                                         "mirrorcap-capture@.service.j2", "mirrorcap-retention.service.j2"]
    for p in PLAIN:
        assert "{{" not in p.read_text() and "{%" not in p.read_text(), p.name


def test_shellcheck_clean():
    assert [p.name for p in SHELL] == ["mirrorcap-boot.sh", "mirrorcap-capture-backoff.sh", "mirrorcap-decap.sh", "mirrorcap-lib.sh", "mirrorcap-recover.sh",
                                       "mirrorcap-retention.sh", "mirrorcap-storage.sh"]
    # -x: the scripts source mirrorcap-lib.sh, which is checked with them.
    result = subprocess.run(["shellcheck", "-x", "--severity=info", *map(str, SHELL)], capture_output=True, text=True, cwd=HOST)
    assert result.returncode == 0, result.stdout


def test_python_is_39_and_pyflakes_clean():
    assert [p.name for p in PYTHON] == ["mirrorcap-archive-health.py", "mirrorcap-archive.py", "mirrorcap-capture.py",
                                        "mirrorcap-find.py", "mirrorcap-health-listener.py", "mirrorcap-health.py", "mirrorcap-metrics.py", "mirrorcap-settings.py", "mirrorcap-window.py",
                                        "mirrorcap_host.py", "mirrorcap_index.py", "mirrorcap_query.py"]
    for p in PYTHON:
        ast.parse(p.read_text(), feature_version=(3, 9))  # Amazon Linux 2023's system Python
    result = subprocess.run([sys.executable, "-m", "pyflakes", *map(str, PYTHON)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rendered_tree_installs_the_plain_files_as_they_are():
    (capture,) = load(EXAMPLE).captures
    sources = {dest: src for src, dest, _ in manifest.HOST_FILES}
    for f in render.host_files(capture):
        if not sources[f.path].endswith(".j2"):
            assert f.content == (HOST / sources[f.path]).read_text() == (RENDERED / "files" / f.path.lstrip("/")).read_text()


@pytest.mark.parametrize("path, args, code", [("usr/local/libexec/mirrorcap/capture", [], 2),
                                              ("usr/local/sbin/mirrorcap-health", ["--help"], 0),
                                              ("usr/local/bin/mirrorcap-window", ["--help"], 0),
                                              ("usr/local/sbin/mirrorcap-find", ["--help"], 0)])
def test_each_python_script_finds_the_shared_module_where_the_host_has_it(path, args, code):
    """Run from rendered/, which lays the files out as the host does: the import path is the host's."""
    assert contract.HOST_LIB == "/usr/local/lib/mirrorcap"
    result = subprocess.run(["python3", str(RENDERED / "files" / path), *args], capture_output=True, text=True)
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr
    if args == ["--help"]:  # the help starts with what the script is (its docstring's first line)
        summary = ast.get_docstring(ast.parse((RENDERED / "files" / path).read_text())).split("\n")[0]
        assert summary.split(": ", 1)[-1][:40] in " ".join(result.stdout.split()), result.stdout


def test_units_name_the_installed_scripts_and_the_capture_identity():
    """What systemd cannot read from the env file: ExecStart= paths are the host layout, User=/Group= rendered."""
    (capture,) = load(EXAMPLE).captures
    files = {f.path: f for f in render.host_files(capture)}
    units = [f for f in files.values() if f.path.startswith(manifest.UNITS + "/") and f.path.endswith(".service")]
    assert len(units) == 8
    for unit in units:
        for exe in re.findall(r"^ExecStart=(\S+)", unit.content, re.M):
            assert exe.startswith(contract.LIBEXEC + "/") and files[exe].mode == "0755", (unit.path, exe)
        for key, value in re.findall(r"^(User|Group)=(.*)$", unit.content, re.M):
            assert value == {"User": contract.CAPTURE_USER, "Group": contract.CAPTURE_GROUP}[key], unit.path


def test_every_setting_a_script_reads_is_in_the_env_file():
    """No MIRRORCAP_* variable that only a test would set: the env file the user data writes has them all."""
    env = (RENDERED / "mirrorcap.env").read_text()
    # With the settings of a capture that archives and of a fleet (whose storage and
    # decap hand MIRRORCAP_VOLUME_ID and MIRRORCAP_MIRROR_ENI_ID to the plain scripts).
    fleet = load_text(minimal(f'\n  archive {{}}\n  fleet {{\n    subnet_ids = ["subnet-0aaaaaaaaaaaaaaa1"]\n  }}\n'
                              f'  source {{\n    eni_id = "{eni(1)}"\n  }}\n', name="fleet")
                      .replace('  subnet_id = "subnet-0123456789abcdef0"\n', ""))
    others = "".join(render.env_file(c, "", "", "b") for c in fleet.captures)
    written = set(re.findall(r"^(MIRRORCAP_\w+)=", env + others, re.M))
    for p in PLAIN:
        read = set(re.findall(r"MIRRORCAP_[A-Z_]+", p.read_text())) - {"MIRRORCAP_ENV"}  # the user data's heredoc marker
        assert read <= written, (p.name, read - written)
    assert 'MIRRORCAP_PCAP_PATTERN="%s"' % contract.PCAP_PATTERN in env
    assert f"MIRRORCAP_VXLAN_PORT={aws_limits.VXLAN_PORT}\n" in env
    assert f"MIRRORCAP_VXLAN_OVERHEAD={aws_limits.VXLAN_OVERHEAD_BYTES}\n" in env
    host = host_module()
    assert host.read_env(RENDERED / "mirrorcap.env")["MIRRORCAP_PCAP_PATTERN"] == contract.PCAP_PATTERN
    assert host.read_env(RENDERED / "mirrorcap.env")["MIRRORCAP_VXLAN_IFACE"] == contract.VXLAN_IFACE
    # The env file's path: once per host library (Python, shell), each the contract's; no unit names it.
    assert host.ENV_FILE == contract.ENV_FILE
    assert host.BOOTSTRAP_LOCK == contract.BOOTSTRAP_LOCK
    assert f"ENV_FILE={contract.ENV_FILE}\n" in (HOST / "mirrorcap-lib.sh").read_text()
    named = [p.name for p in PLAIN if contract.ENV_FILE in p.read_text() and p.name not in ("mirrorcap_host.py", "mirrorcap-lib.sh")]
    assert named == [], named


# --- pcap names: one pattern (contract.PCAP_PATTERN), every derivation agrees -----------

MOMENTS = [dt.datetime(2026, 1, 1, 0, 0, 0), dt.datetime(2026, 11, 25, 3, 30, 7), dt.datetime(2030, 12, 31, 23, 59, 59)]
VNIS = [1, 12, 12345, 16777215]


def real_name(vni: int, at: dt.datetime) -> str:
    """What tcpdump -G -w writes: libc strftime over the capture's -w pattern."""
    host = host_module()
    return time.strftime(host.pcap_pattern(contract.PCAP_PATTERN, vni), at.timetuple())


NOT_PCAPS = ["notes.txt", "vni12_2026-01-01T00-00-00Z.pcapng", "vni12_latest.pcap", "vni12_2026-01-01T00-00-00Z.pcap.tmp",
             "x_vni12_2026-01-01T00-00-00Z.pcap", "sub.pcap"]


def retention_glob(vni: str) -> str:
    """Retention's own derivation (shell), its one-line function run by bash."""
    (line,) = [l for l in (HOST / "mirrorcap-retention.sh").read_text().splitlines() if l.startswith("pcap_glob() {")]
    script = f'PATTERN=$1\n{line}\npcap_glob "$2"'
    return subprocess.run(["bash", "-c", script, "bash", contract.PCAP_PATTERN, vni],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_names_are_the_runbooks():
    assert real_name(12345, MOMENTS[1]) == "vni12345_2026-11-25T03-30-07Z.pcap"


def test_python_derivations_agree_on_real_names():
    host = host_module()
    pattern = contract.PCAP_PATTERN
    for vni in VNIS:
        for at in MOMENTS:
            name = real_name(vni, at)
            assert host.pcap_start(pattern, name) == (vni, at.replace(tzinfo=dt.timezone.utc))
            assert fnmatch.fnmatchcase(name, host.pcap_glob(pattern))
            assert fnmatch.fnmatchcase(name, host.pcap_glob(pattern, vni))
            assert not any(fnmatch.fnmatchcase(name, host.pcap_glob(pattern, other)) for other in VNIS if other != vni)
    for name in NOT_PCAPS:
        assert host.pcap_start(pattern, name) is None
        assert not fnmatch.fnmatchcase(name, host.pcap_glob(pattern))


def test_retention_derives_the_same_globs():
    host = host_module()
    assert retention_glob("*") == host.pcap_glob(contract.PCAP_PATTERN)
    for vni in VNIS:
        assert retention_glob(str(vni)) == host.pcap_glob(contract.PCAP_PATTERN, vni)


def test_window_and_health_find_exactly_the_pcaps(tmp_path):
    names = {real_name(vni, at): (vni, at) for vni in (12, 12345) for at in MOMENTS}
    for name in [*names, *NOT_PCAPS]:
        (tmp_path / name).write_bytes(b"x")
    window = host_script("mirrorcap-window.py")
    found = window.pcaps(str(tmp_path), contract.PCAP_PATTERN)
    assert {Path(f["path"]).name: (f["vni"], f["start"]) for f in found} == {
        n: (vni, at.replace(tzinfo=dt.timezone.utc)) for n, (vni, at) in names.items()}
    assert {f["vni"] for f in window.pcaps(str(tmp_path), contract.PCAP_PATTERN, 12)} == {12}
    health = host_script("mirrorcap-health.py")
    report = health.Report()
    health.check_newest_pcap(report, str(tmp_path), contract.PCAP_PATTERN, "12", 10 ** 9, time.time())
    (check,) = report.checks
    assert check["status"] == "ok" and check["file"] == real_name(12, MOMENTS[-1])


def test_settings_reads_back_exactly_the_env_file_the_user_data_writes(tmp_path):
    """mirrorcap-settings takes the env file out of the instance's current user data (a deploy
    changed it): for every kind of capture, exactly what render wrote; another capture's, nothing."""
    settings = host_script("mirrorcap-settings.py")
    fleet = load_text(minimal(f'\n  archive {{}}\n  fleet {{\n    subnet_ids = ["subnet-0aaaaaaaaaaaaaaa1"]\n  }}\n'
                              f'  source {{\n    eni_id = "{eni(1)}"\n  }}\n', name="fleet")
                      .replace('  subnet_id = "subnet-0123456789abcdef0"\n', ""))
    for capture in [*load(EXAMPLE).captures, *fleet.captures]:
        text = render.user_data(capture, "vol-0123456789abcdef0", "eni-0123456789abcdef0", "bucket")
        assert settings.env_block(text, capture.name) == render.env_file(capture, "vol-0123456789abcdef0",
                                                                          "eni-0123456789abcdef0", "bucket")
        assert settings.env_block(text, "other") is None
    assert settings.env_block("#!/bin/bash\necho hello\n", "prod") is None


@pytest.mark.parametrize("argv", [
    ["--at", "now", "--window", "99999999999d"],
    ["--at", "now", "--before", "9" * 400],
    ["--at", "0001-01-01T00:00:00Z"],
    ["--at", "9999-12-31T23:59:59Z"],
    ["--at", "0001-01-01T00:00:00+05:00"],
    ["--at", "9999-12-31T23:00:00-05:00"],
])
def test_window_refuses_moments_and_spans_past_the_calendar(tmp_path, capsys, argv):
    """A span or moment that overflows the calendar is a usage error (exit 2, one line), not a traceback."""
    window = host_script("mirrorcap-window.py")
    env = tmp_path / "mirrorcap.env"
    env.write_text(f"MIRRORCAP_CAPTURE_DIR={tmp_path}\nMIRRORCAP_PCAP_PATTERN={contract.PCAP_PATTERN}\n")
    assert window.main([*argv, "--env-file", str(env)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mirrorcap-window: ") and err.count("\n") == 1 and "Traceback" not in err
