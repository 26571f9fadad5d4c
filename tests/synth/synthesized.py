"""What the synth tests share: synthesizing an inventory, and the odd-text inventory's values."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import EXAMPLE, ROOT, mirrorcap, synth


def prepare(tmp: Path, text: str | None = None) -> Path:
    if text is None:
        shutil.copy(EXAMPLE, tmp / "capture.hcl")
        shutil.copy(ROOT / "capture.lock.json", tmp / "capture.lock.json")
    else:
        (tmp / "capture.hcl").write_text(text)
        assert mirrorcap("sessions", "--write", cwd=tmp).returncode == 0
    result = synth(tmp)
    assert result.returncode == 0, result.stderr
    return tmp



ODD = {
    "tags": {"Team": "x${path.cwd}", "k${path.module}": "plain", "Note": 'line one\nEOF\n}\nresource "x" "y" {',
             "Quoted": 'say "hi"', '[q"k': "back\\slash"},
    "description": "${path.cwd} $${already} back\\slash ${TfToken[TOKEN.1]} %{ for x in [1] }${x}%{ endfor }",
    "rules": ['web ${file("/etc/hostname")}', '[say "hi"] %{ if true }x%{ endif }\ttab\r\n'],
    "selector": {"Service": "x${path.cwd}", 'q"k': 'v"'},
}
SYNTH_ODD = """
import dataclasses, json, sys
from mirrorcap.synth.pipeline import prepare, synth
odd = json.loads(sys.argv[1])
inputs = prepare("capture.hcl")
(c,) = inputs.inventory.captures
c = dataclasses.replace(
    c, tags=tuple(sorted(odd["tags"].items())),
    sources=(c.sources[0], dataclasses.replace(c.sources[1], description=odd["description"])),
    filter_rules=tuple(dataclasses.replace(r, description=d) for r, d in zip(c.filter_rules, odd["rules"])),
    tag_sources=(dataclasses.replace(c.tag_sources[0], tags=tuple(sorted(odd["selector"].items()))),))
synth(dataclasses.replace(inputs, inventory=dataclasses.replace(inputs.inventory, captures=(c,))), review_hcl=True)
"""
