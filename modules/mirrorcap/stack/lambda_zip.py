"""The re-mirroring Lambda's zip: the remirror/ folder plus the mirrorcap modules it
may import, built at synth, byte-identical for identical code.

What the zip carries is not a hand-kept list: it is remirror/ and the import
closure of its modules, which may reach outside remirror/ only into ALLOWED (the
Lambda runtime has the standard library and boto3, nothing else of ours).
Fixed timestamps and permissions and a sorted file list, so the same source
gives the same zip, the same asset hash and no diff in the plan.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # modules/mirrorcap
RUNTIME = "remirror"
# Inside the zip the runtime's package is mirrorcap.live: the handler string is part of every
# deployed function's configuration, and a new one would change each stack's plan for no gain.
# Its modules import each other relatively, so the package's name is free to differ.
ZIP_PACKAGE = "live"
# Beyond remirror/: the shared names, AWS's limits and session numbering (the
# Lambda numbers sessions exactly as the stack does).
ALLOWED = ("mirrorcap.contract", "mirrorcap.aws_limits", "mirrorcap.numbering.sessions")
THIRD_PARTY = ("boto3", "botocore")  # in the Lambda runtime
HANDLER = f"mirrorcap.{ZIP_PACKAGE}.handler.handler"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _module(rel: str) -> str:
    """'remirror/ec2.py' -> 'mirrorcap.remirror.ec2'."""
    parts = ["mirrorcap", *Path(rel).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _file(module: str) -> str:
    rel = Path(*module.split(".")[1:])
    return str(rel / "__init__.py") if (PACKAGE_ROOT / rel).is_dir() else str(rel.with_suffix(".py"))


def imports(rel: str) -> set[str]:
    """Absolute names of every module `rel` imports (relative imports resolved)."""
    package = _module(rel) if rel.endswith("__init__.py") else _module(rel).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse((PACKAGE_ROOT / rel).read_text(), rel)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found.add(mod)
            # `from . import x` / `from mirrorcap import x` may name a module.
            found |= {f"{mod}.{a.name}" for a in node.names if (PACKAGE_ROOT / _file(f"{mod}.{a.name}")).exists()} \
                if mod.startswith("mirrorcap") else set()
    return found


def forbidden(module: str, rel: str) -> bool:
    top = module.split(".")[0]
    if top == "mirrorcap":
        return not (module.startswith(f"mirrorcap.{RUNTIME}") or module in ALLOWED or module == "mirrorcap"
                    or any(a.startswith(module + ".") for a in ALLOWED))
    return top not in sys.stdlib_module_names and top not in THIRD_PARTY and top != "__future__"


def files() -> list[str]:
    """remirror/ and its closure, as paths under modules/mirrorcap; raises on an import the Lambda cannot satisfy."""
    todo = sorted(str(p.relative_to(PACKAGE_ROOT)) for p in (PACKAGE_ROOT / RUNTIME).glob("*.py"))
    seen: set[str] = set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for module in imports(rel):
            if forbidden(module, rel):
                raise ImportError(f"{rel} imports {module}: the re-mirroring Lambda may import only the standard "
                                  f"library, {', '.join(THIRD_PARTY)}, mirrorcap.{RUNTIME} and {', '.join(ALLOWED)}")
            if module.startswith("mirrorcap"):
                parts = module.split(".")
                todo += [_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]  # each package's __init__ too
    return sorted(seen)


def zip_name(rel: str) -> str:
    """Where a source file goes in the zip: remirror/x.py as mirrorcap/live/x.py, the rest as it is."""
    head, _, rest = rel.partition("/")
    return f"mirrorcap/{ZIP_PACKAGE}/{rest}" if head == RUNTIME and rest else f"mirrorcap/{rel}"


def build(dest: Path) -> Path:
    contents = files()  # before anything is written: a forbidden import leaves no zip
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for rel in contents:
            info = zipfile.ZipInfo(zip_name(rel), date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (PACKAGE_ROOT / rel).read_bytes())
    return dest
