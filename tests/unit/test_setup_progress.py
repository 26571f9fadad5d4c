"""make setup on a fresh machine: tools/pip_progress.py says what pip is doing,
and speaks up while pip is silent (unpacking the big wheels), instead of minutes
of nothing. Run on a stand-in pip that talks, then goes quiet, then fails."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT

FAKE_PIP = """import sys, time
print("Looking in indexes: https://pypi.org/simple", flush=True)
print("Collecting six", flush=True)
print("  Downloading six-1.17.0-py2.py3-none-any.whl (11 kB)", flush=True)
print("Collecting cdktn-provider-aws==25.8.1 (from mirrorcap==0.1.0)", flush=True)
print("  Downloading cdktn_provider_aws-25.8.1-py3-none-any.whl (121.3 MB)", flush=True)
time.sleep(1.2)
print("Requirement already satisfied: six in ./lib", flush=True)
print("Installing collected packages: six, cdktn, cdktn-provider-aws", flush=True)
time.sleep(1.2)
if sys.argv[1:] == ["fail"]:
    print("ERROR: Could not install packages due to an OSError: No space left on device", flush=True)
    sys.exit(1)
print("Successfully installed cdktn cdktn-provider-aws six", flush=True)
"""


def progress(tmp_path, *args):
    pip = tmp_path / "pip.py"
    pip.write_text(FAKE_PIP)
    return subprocess.run([sys.executable, str(ROOT / "tools" / "pip_progress.py"), sys.executable, str(pip), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PIP_PROGRESS_SECONDS": "0.5"})


def test_it_says_what_pip_fetches_and_speaks_during_the_silences(tmp_path):
    r = progress(tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["setup: Collecting six", "setup: Collecting cdktn-provider-aws==25.8.1 (from mirrorcap==0.1.0)",
                         "setup: Downloading cdktn_provider_aws-25.8.1-py3-none-any.whl (121.3 MB)"]
    assert any(line.startswith("setup: ... downloading cdktn_provider_aws-25.8.1-py3-none-any.whl (") for line in lines)
    assert "setup: installing 3 packages into the venv" in lines
    assert any(line.startswith("setup: ... unpacking 3 packages into the venv") for line in lines)
    assert lines[-1].startswith("setup: installed (")
    assert not any("six-1.17.0" in line for line in lines)  # a download under a megabyte: no line of its own
    assert not any("Looking in indexes" in line or "already satisfied" in line for line in lines)  # the noise stays out


def test_a_failure_shows_pips_last_lines_and_its_exit_code(tmp_path):
    r = progress(tmp_path, "fail")
    assert r.returncode == 1
    assert "setup: pip failed (exit 1); its last lines:" in r.stderr and "No space left on device" in r.stderr
