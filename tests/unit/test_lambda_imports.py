"""The import rule of the re-mirroring Lambda's runtime (remirror/): what it may import
is what its zip can carry, and the zip is remirror/ plus exactly that closure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mirrorcap.stack import lambda_zip


def test_the_zip_is_remirror_and_the_allowed_closure_nothing_else():
    files = lambda_zip.files()
    live = {str(p.relative_to(lambda_zip.PACKAGE_ROOT)) for p in (lambda_zip.PACKAGE_ROOT / "remirror").glob("*.py")}
    assert live <= set(files)
    outside = set(files) - live
    # The package inits on the way, and the allowed modules the runtime actually imports.
    assert outside == {"__init__.py", "contract.py", "aws_limits.py", "numbering/__init__.py", "numbering/sessions.py"}
    assert not any(f.startswith(("stack/", "cli/", "inventory/", "account_checks/", "host/", "synth/")) for f in files)


@pytest.mark.parametrize("line", ["from ..inventory.model import Capture", "import jinja2", "from mirrorcap.stack import tags",
                                  "from ..numbering import plan", "from .. import capacity"])
def test_an_import_the_lambda_cannot_satisfy_fails_the_build(tmp_path, monkeypatch, line):
    copy = tmp_path / "mirrorcap"
    shutil.copytree(lambda_zip.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    handler = copy / "remirror" / "handler.py"
    handler.write_text(handler.read_text().replace("import boto3\n", f"import boto3\n{line}\n", 1))
    monkeypatch.setattr(lambda_zip, "PACKAGE_ROOT", copy)
    with pytest.raises(ImportError, match="remirror/handler.py imports"):
        lambda_zip.build(tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()


def test_allowed_imports_pass_in_every_spelling(tmp_path, monkeypatch):
    copy = tmp_path / "mirrorcap"
    shutil.copytree(lambda_zip.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    handler = copy / "remirror" / "handler.py"
    extra = "from .. import contract\nfrom mirrorcap.aws_limits import VXLAN_PORT\nimport botocore.exceptions\nfrom . import model\n"
    handler.write_text(handler.read_text().replace("import boto3\n", "import boto3\n" + extra, 1))
    monkeypatch.setattr(lambda_zip, "PACKAGE_ROOT", copy)
    assert "contract.py" in lambda_zip.files()
    assert Path(lambda_zip.build(tmp_path / "out.zip")).stat().st_size > 1000


def test_the_zip_names_the_runtime_package_as_the_deployed_handler_does(tmp_path):
    """remirror/ goes into the zip as mirrorcap/live/: the handler every deployed function names."""
    import zipfile
    names = zipfile.ZipFile(lambda_zip.build(tmp_path / "out.zip")).namelist()
    assert "mirrorcap/live/handler.py" in names and not any(n.startswith("mirrorcap/remirror/") for n in names)
    assert lambda_zip.HANDLER == "mirrorcap.live.handler.handler"
    assert {"mirrorcap/contract.py", "mirrorcap/numbering/sessions.py"} <= set(names)
