"""The AMI bake: packer/mirrorcap.pkr.hcl and the variables make bake gives it.

- `packer validate -syntax-only` and `packer fmt -check` where packer is on PATH
  (Debian ships it: tools/host-packages.sh); the full `packer validate`, which
  needs Packer >= 1.10 and the amazon plugin (`packer init`, a download), where
  both are installed. Debian's packer 1.6.6 bundles an amazon-ebs that predates
  metadata_options and imds_support, so there the full validate skips, saying so.
- Always: what the template must do (IMDSv2, encryption, AL2023, the tags, no
  key of its own) read from the file with python-hcl2, and its variables against
  a fresh `mirrorcap render` of the example (python -m mirrorcap.workflow.bake vars).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest

from helpers import EXAMPLE, ROOT, env, mirrorcap
from mirrorcap.errors import MirrorcapError
from mirrorcap.workflow.bake import baked_ami, packer_vars

PACKER_DIR = ROOT / "packer"
TEMPLATE = PACKER_DIR / "mirrorcap.pkr.hcl"
PLUGINS = PACKER_DIR / "plugins.pkr.hcl"
PACKER = shutil.which("packer")
_HCL = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
needs_packer = pytest.mark.skipif(PACKER is None, reason="packer is not on PATH (Debian: apt-get install packer)")


def parse(path: Path) -> dict:
    return hcl2.loads(path.read_text(), serialization_options=_HCL)


def variables() -> dict[str, dict]:
    return {name: body for block in parse(TEMPLATE)["variable"] for name, body in block.items()}


def source() -> dict:
    (block,) = parse(TEMPLATE)["source"]
    return block["amazon-ebs"]["capture"]


def packer_version() -> tuple[int, ...]:
    out = subprocess.run([PACKER, "version"], capture_output=True, text=True).stdout
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return tuple(map(int, m.groups())) if m else (0,)


def packer(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PACKER, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**env(), "CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"})


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The example inventory rendered afresh, and `make bake`'s vars step run on it."""
    work = tmp_path_factory.mktemp("bake")
    shutil.copy(EXAMPLE, work / "capture.hcl")
    shutil.copy(ROOT / "capture.lock.json", work / "capture.lock.json")
    r = mirrorcap("render", "--out", "rendered", cwd=work)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "mirrorcap.workflow.bake", "vars", "--capture", "prod"], cwd=work, env=env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "cdktf.out/bake/prod.pkrvars.json"
    return work


# ---------------------------------------------------------------------------
# Packer itself


@needs_packer
def test_packer_reads_the_template_and_refuses_a_broken_one(tmp_path):
    r = packer("validate", "-syntax-only", str(TEMPLATE))
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.pkr.hcl"
    broken.write_text(TEMPLATE.read_text().replace("build {", "build {{", 1))
    assert packer("validate", "-syntax-only", str(broken)).returncode != 0


@needs_packer
def test_packer_fmt_leaves_the_files_as_they_are():
    r = packer("fmt", "-check", "-diff", str(PACKER_DIR))
    assert r.returncode == 0, r.stdout + r.stderr


@needs_packer
def test_packer_validates_the_template_with_the_amazon_plugin(rendered):
    if packer_version() < (1, 10):
        pytest.skip(f"packer {'.'.join(map(str, packer_version()))} predates required_plugins and the amazon plugin's "
                    "metadata_options/imds_support: syntax checked only (Packer >= 1.10 with `packer init` validates fully)")
    installed = packer("plugins", "installed")
    if "github.com/hashicorp/amazon" not in installed.stdout:
        pytest.skip("the amazon plugin is not installed (`packer init packer/` downloads it)")
    wc = rendered / "packer"
    shutil.copytree(PACKER_DIR, wc)
    r = packer("validate", f"-var-file={rendered / 'cdktf.out/bake/prod.pkrvars.json'}", str(wc), cwd=rendered)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------
# What the template does (always)


def test_builds_from_the_latest_al2023_with_imdsv2_and_an_encrypted_ami():
    s = source()
    (flt,) = s["source_ami_filter"]
    assert flt["filters"]["name"] == "al2023-ami-2023.*-x86_64" and flt["filters"]["architecture"] == "x86_64"
    assert flt["owners"] == ["amazon"] and flt["most_recent"] is True
    (meta,) = s["metadata_options"]
    assert meta == {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}
    assert s["imds_support"] == "v2.0"  # instances launched from the AMI require IMDSv2 too
    assert s["encrypt_boot"] is True


def test_no_key_of_its_own_and_ssh_only_from_here_or_through_ssm():
    s = source()
    assert not {"ssh_keypair_name", "ssh_private_key_file", "ssh_password", "ssh_agent_auth"} & set(s)  # Packer's temporary key only
    assert s["temporary_security_group_source_public_ip"] is True
    assert set(s["dynamic"][0]) == {"temporary_iam_instance_profile_policy_document"}
    (validation,) = variables()["ssh_interface"]["validation"]
    assert "public_ip" in validation["condition"] and "session_manager" in validation["condition"]
    (build,) = parse(TEMPLATE)["build"]
    cleanup = build["provisioner"][1]["shell"]["inline"]
    assert any("/home/ec2-user/.ssh/authorized_keys" in c for c in cleanup)


def test_ami_tags_carry_the_mirrorcap_version_and_the_bake_checksum():
    (loc,) = parse(TEMPLATE)["locals"]
    assert loc["bake_sha256"] == "${sha256(file(var.bake_script))}"
    assert loc["tags"]["mirrorcap:version"] == "${var.mirrorcap_version}"
    assert loc["tags"]["mirrorcap:bake-sha256"] == "${local.bake_sha256}"
    s = source()
    assert s["tags"] == s["snapshot_tags"] == "${local.tags}"
    (build,) = parse(TEMPLATE)["build"]
    first = build["provisioner"][0]["shell"]
    assert first["script"] == "${var.bake_script}" and "sudo -n" in first["execute_command"]


def test_the_plugin_file_requires_the_amazon_plugin():
    (block,) = parse(PLUGINS)["packer"]
    (plugins,) = block["required_plugins"]
    assert plugins["amazon"]["source"] == "github.com/hashicorp/amazon"


# ---------------------------------------------------------------------------
# The variables make bake gives it, from a fresh render


def test_vars_are_exactly_the_required_variables_and_name_the_rendered_script(rendered):
    values = json.loads((rendered / "cdktf.out/bake/prod.pkrvars.json").read_text())
    declared = variables()
    required = {n for n, body in declared.items() if "default" not in body}
    assert set(values) == required
    assert values["capture"] == "prod" and values["region"] == "ap-northeast-1"
    script = rendered / values["bake_script"]
    assert values["bake_script"] == "rendered/prod/bake.sh" and script.is_file()
    text = script.read_bytes()
    # Packer hashes file() (UTF-8 text): for a UTF-8 file that is sha256sum's value
    assert hashlib.sha256(text.decode("utf-8").encode("utf-8")).hexdigest() == hashlib.sha256(text).hexdigest()
    from importlib.metadata import version
    assert values["mirrorcap_version"] == version("mirrorcap")
    assert values["manifest"] == "cdktf.out/bake/prod-manifest.json"


def test_vars_refuse_a_missing_render_and_an_unknown_capture(tmp_path):
    with pytest.raises(MirrorcapError, match=r"rendered/prod/bake.sh: not rendered\n  fix: run `mirrorcap render`"):
        packer_vars("prod", "eu-west-1", tmp_path / "rendered", "0.1.0")
    shutil.copy(EXAMPLE, tmp_path / "capture.hcl")
    shutil.copy(ROOT / "capture.lock.json", tmp_path / "capture.lock.json")
    r = subprocess.run([sys.executable, "-m", "mirrorcap.workflow.bake", "vars", "--capture", "nope"], cwd=tmp_path, env=env(),
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no capture named 'nope'" in r.stderr and "use one of: prod" in r.stderr


def test_the_baked_ami_is_read_from_packers_manifest(tmp_path):
    manifest = {"builds": [
        {"name": "capture", "builder_type": "amazon-ebs", "artifact_id": "ap-northeast-1:ami-0aaaaaaaaaaaaaaaa", "packer_run_uuid": "old"},
        {"name": "capture", "builder_type": "amazon-ebs", "artifact_id": "ap-northeast-1:ami-0123456789abcdef0", "packer_run_uuid": "new"},
    ], "last_run_uuid": "new"}
    assert baked_ami(manifest, "prod", "m.json") == ("ap-northeast-1", "ami-0123456789abcdef0")
    with pytest.raises(MirrorcapError, match="m.json: builds: no build recorded"):
        baked_ami({"builds": []}, "prod", "m.json")
    out = tmp_path / "cdktf.out" / "bake"
    out.mkdir(parents=True)
    (out / "prod-manifest.json").write_text(json.dumps(manifest))
    r = subprocess.run([sys.executable, "-m", "mirrorcap.workflow.bake", "result", "--capture", "prod"], cwd=tmp_path, env=env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'ami = "ami-0123456789abcdef0"' in r.stdout and 'in capture "prod" of capture.hcl' in r.stdout
