"""The review copy of a stack (cdktf.out/review/<capture>.tf): cdktn's HCL
rendering, corrected where it would not be what Terraform runs from cdk.tf.json.

- An empty list argument (`egress = []` on the mirror security group: "no
  rule, and remove any") is dropped by the renderer; in HCL an absent argument
  means "not managed", so a reviewer would miss an added rule. It is put back.
- `ignore_changes` and `depends_on` hold references, quoted in JSON as JSON
  must; quoted in HCL they are a deprecated form Terraform warns about.
tests/test_synth.py plans both files with Terraform and compares every argument.
"""

from __future__ import annotations

import re

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
