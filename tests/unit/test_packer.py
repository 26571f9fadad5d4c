"""The AMI bake: packer/mirrorcap.pkr.hcl and the variables make bake gives it.

- `packer validate -syntax-only` and `packer fmt -check` where packer is on PATH
  (Debian ships it: tools/host-packages.sh); the full `packer validate`, which
  needs Packer >= 1.10 and the amazon plugin (`packer init`, a download), where
  both are installed. Debian's packer 1.6.6 bundles an amazon-ebs that predates
  metadata_options and imds_support, so there the full validate skips, saying so.
- Always: what the template must do (IMDSv2, encryption, AL2023, the tags, no
  key of its own) read from the file with python-hcl2, and its variables against
  a fresh `mirrorcap render` of the example (mirrorcap bake vars).
"""

from __future__ import annotations

import fnmatch
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
    r = subprocess.run([sys.executable, "-m", "mirrorcap", "bake", "vars", "--capture", "prod"], cwd=work, env=env(),
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


# AL2023 AMI names as AWS publishes them side by side in one release (the
# standard image on each kernel line, the minimal and ECS images, arm64).
AL2023_NAMES = [
    "al2023-ami-2023.6.20250115.0-kernel-6.1-x86_64", "al2023-ami-2023.6.20250115.0-kernel-6.12-x86_64",
    "al2023-ami-2023.6.20250115.0-kernel-6.1-arm64", "al2023-ami-2023.6.20250115.0-kernel-6.12-arm64",
    "al2023-ami-minimal-2023.6.20250115.0-kernel-6.1-x86_64", "al2023-ami-ecs-hvm-2023.0.20250115-kernel-6.1-x86_64",
    "al2023-ami-2023.6.20250107.0-kernel-6.1-x86_64", "al2023-ami-2023.6.20250107.0-kernel-6.12-x86_64",
]


def ec2_name_filter(pattern: str, names: list[str]) -> list[str]:
    """EC2's filter wildcards: * any run of characters, ? one (no brackets in these names)."""
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def test_the_ami_filter_matches_one_kernel_line_only():
    (flt,) = source()["source_ami_filter"]
    kernel = variables()["kernel"]["default"]
    pattern = flt["filters"]["name"].replace("${var.kernel}", kernel)
    matched = ec2_name_filter(pattern, AL2023_NAMES)
    assert matched == ["al2023-ami-2023.6.20250115.0-kernel-6.1-x86_64", "al2023-ami-2023.6.20250107.0-kernel-6.1-x86_64"]
    assert ec2_name_filter(flt["filters"]["name"].replace("${var.kernel}", "6.12"), AL2023_NAMES) == [
        "al2023-ami-2023.6.20250115.0-kernel-6.12-x86_64", "al2023-ami-2023.6.20250107.0-kernel-6.12-x86_64"]
    # the filter this replaced took both lines, and most_recent picked either
    assert len({re.search(r"kernel-[\d.]+", n).group(0) for n in ec2_name_filter("al2023-ami-2023.*-x86_64", AL2023_NAMES)}) == 2
    # 6.1: the line the stack's AL2023 parameter (al2023-ami-kernel-default-x86_64) resolves to
    assert kernel == "6.1"
    (validation,) = variables()["kernel"]["validation"]
    assert "regex" in validation["condition"]


def test_builds_from_the_latest_al2023_with_imdsv2_and_an_encrypted_ami():
    s = source()
    (flt,) = s["source_ami_filter"]
    assert flt["filters"]["name"] == "al2023-ami-2023.*-kernel-${var.kernel}-x86_64" and flt["filters"]["architecture"] == "x86_64"
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
    # the capture's own VPC and subnet: no default VPC needed (the template has no default for either)
    assert (values["vpc_id"], values["subnet_id"]) == ("vpc-0123456789abcdef0", "subnet-0123456789abcdef0")
    assert "default" not in declared["vpc_id"] and "default" not in declared["subnet_id"]
    assert source()["vpc_id"] == "${var.vpc_id}" and source()["subnet_id"] == "${var.subnet_id}"


def test_a_fleet_bakes_in_its_first_subnet(tmp_path):
    from mirrorcap.inventory import load
    from mirrorcap.workflow.bake import build_subnet
    fleet = next(c for c in load(ROOT / "tests" / "fixtures" / "fleet.hcl").captures if c.fleet)
    assert build_subnet(fleet) == fleet.fleet.subnet_ids[0] and fleet.subnet_id == ""


@needs_packer
def test_packer_args_override_what_make_bake_writes(rendered, tmp_path):
    """make bake runs `packer build -var-file=<vars> $(PACKER_ARGS)`: a -var in PACKER_ARGS
    (a public subnet, public_ip) wins over the inventory's subnet, as packer/README.md says.
    `packer inspect` evaluates the variables; the template is copied without plugins.pkr.hcl,
    which an older Packer refuses."""
    (tmp_path / "t").mkdir()
    shutil.copy(TEMPLATE, tmp_path / "t" / TEMPLATE.name)
    varfile = f"-var-file={rendered / 'cdktf.out/bake/prod.pkrvars.json'}"
    r = packer("inspect", varfile, str(tmp_path / "t"), cwd=rendered)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'var.subnet_id: "subnet-0123456789abcdef0"' in r.stdout and 'var.ssh_interface: "session_manager"' in r.stdout
    r = packer("inspect", varfile, "-var", "subnet_id=subnet-0fedcba9876543210", "-var", "ssh_interface=public_ip",
               str(tmp_path / "t"), cwd=rendered)
    assert 'var.subnet_id: "subnet-0fedcba9876543210"' in r.stdout and 'var.ssh_interface: "public_ip"' in r.stdout


def test_vars_refuse_a_missing_render_and_an_unknown_capture(tmp_path):
    with pytest.raises(MirrorcapError, match=r"rendered/prod/bake.sh: not rendered\n  fix: run `mirrorcap render`"):
        packer_vars("prod", "eu-west-1", tmp_path / "rendered", "0.1.0", "vpc-0123456789abcdef0", "subnet-0123456789abcdef0")
    shutil.copy(EXAMPLE, tmp_path / "capture.hcl")
    shutil.copy(ROOT / "capture.lock.json", tmp_path / "capture.lock.json")
    r = subprocess.run([sys.executable, "-m", "mirrorcap", "bake", "vars", "--capture", "nope"], cwd=tmp_path, env=env(),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no capture named nope" in r.stderr and "use one of: prod" in r.stderr


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
    r = subprocess.run([sys.executable, "-m", "mirrorcap", "bake", "result", "--capture", "prod"], cwd=tmp_path, env=env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'ami = "ami-0123456789abcdef0"' in r.stdout and 'in capture "prod" of capture.hcl' in r.stdout


def _bake_vars(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirrorcap", "bake", "vars", "--capture", "prod", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True)


@pytest.fixture
def rendered_example(tmp_path) -> Path:
    shutil.copy(EXAMPLE, tmp_path / "capture.hcl")
    shutil.copy(ROOT / "capture.lock.json", tmp_path / "capture.lock.json")
    assert mirrorcap("render", "--out", "rendered", cwd=tmp_path).returncode == 0
    return tmp_path


def test_vars_refuse_an_out_that_is_a_directory_or_in_none_and_create_nothing(rendered_example, tmp_path_factory):
    """`--out /tmp` was an IsADirectoryError traceback; `--out /nonexistent/x.json` created /nonexistent."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    for out, words in ((elsewhere, "exists and is not a regular file"), (elsewhere / "no" / "x.json", "is not a directory")):
        r = _bake_vars(rendered_example, "--out", str(out))
        assert r.returncode == 2 and f"command line: --out: " in r.stderr and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(elsewhere.iterdir()) == [] and not (rendered_example / "cdktf.out").exists()


def test_vars_refuse_a_stale_render(rendered_example):
    script = rendered_example / "rendered" / "prod" / "bake.sh"
    script.write_text(script.read_text() + "# edited by hand\n")
    r = _bake_vars(rendered_example)
    assert r.returncode == 2 and "rendered/prod: stale: 1 file(s) differ from a fresh render, e.g. bake.sh" in r.stderr, r.stderr
    assert "fix: run `mirrorcap render --out rendered`" in r.stderr and not (rendered_example / "cdktf.out").exists()
