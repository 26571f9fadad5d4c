"""The re-mirroring Lambda's zip: built at synth, byte-identical for identical code.

Fixed timestamps and permissions and a sorted file list, so the same source
gives the same zip, the same asset hash and no diff in the plan.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # modules/mirrorcap
# The handler's whole import closure: the standard library and boto3 (in the
# Lambda runtime) aside, exactly these files.
FILES = ("__init__.py", "aws_limits.py", "sessions.py",
         "live/__init__.py", "live/model.py", "live/reconcile.py", "live/ec2.py", "live/handler.py")
HANDLER = "mirrorcap.live.handler.handler"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def build(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for rel in sorted(FILES):
            info = zipfile.ZipInfo(f"mirrorcap/{rel}", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (PACKAGE_ROOT / rel).read_bytes())
    return dest
