"""The fleet and archive blocks of the inventory: what a valid one becomes, what a wrong one says."""

from __future__ import annotations

import pytest

from helpers import mirrorcap, write
from mirrorcap import aws_limits as L
from mirrorcap.inventory import load

FLEET = '''
capture "web" {
  region = "eu-west-1"
  vpc_id = "vpc-0123456789abcdef0"
  ami    = "ami-0123456789abcdef0"
  vni    = 77
  network {
    mirror_source_cidrs = ["10.0.0.0/16"]
  }
%s
  source {
    tags = { Service = "web" }
  }
  auto_mirror {}
}
'''
FLEET_BLOCK = '''  fleet {
    subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    max_per_az = 3
  }'''
ARCHIVE_BLOCK = '''  archive {
    reader_role_arns = ["arn:aws:iam::111122223333:role/pcap-readers"]
  }'''


def test_a_fleet_is_an_nlb_target_without_a_source_limit(workdir):
    c, = load(write(workdir, FLEET % (FLEET_BLOCK + "\n" + ARCHIVE_BLOCK))).captures
    assert c.target_kind == "nlb" and c.subnet_id == ""
    assert c.fleet.subnet_ids == ("subnet-0123456789abcdef0", "subnet-0123456789abcdef1")
    assert (c.fleet.min_per_az, c.fleet.desired_per_az, c.fleet.max_per_az, c.fleet.cross_zone) == (1, 1, 3, False)
    assert c.max_sources_per_target == L.SESSIONS_PER_ACCOUNT
    assert c.archive.reader_role_arns == ("arn:aws:iam::111122223333:role/pcap-readers",)
    assert c.archive_retention_days == c.host.retention_days == 15


def test_a_single_host_may_archive_and_keeps_its_eni_target(workdir):
    text = FLEET % "  archive {\n    retention_days = 400\n  }"
    text = text.replace('vni    = 77', 'vni    = 77\n  subnet_id = "subnet-0123456789abcdef0"').replace(
        '  source {\n    tags = { Service = "web" }\n  }\n  auto_mirror {}\n', "")
    c, = load(write(workdir, text)).captures
    assert c.target_kind == "eni" and c.fleet is None and c.archive_retention_days == 400
    assert c.max_sources_per_target == L.SOURCES_PER_ENI_TARGET


BAD = {
    "fleet without archive": (FLEET % FLEET_BLOCK, 'capture "web" > fleet', "add `archive {}`"),
    "fleet with subnet_id": (FLEET.replace('vni    = 77', 'vni = 77\n  subnet_id = "subnet-0123456789abcdef0"') % (FLEET_BLOCK + ARCHIVE_BLOCK),
                             'capture "web" > subnet_id', "fleet.subnet_ids"),
    "fleet with a source limit": (FLEET.replace('vni    = 77', 'vni = 77\n  max_sources_per_target = 10') % (FLEET_BLOCK + ARCHIVE_BLOCK),
                                  "max_sources_per_target", "no source limit"),
    "min over max": (FLEET % (FLEET_BLOCK.replace("max_per_az = 3", "max_per_az = 1\n    min_per_az = 2") + ARCHIVE_BLOCK),
                     "fleet > desired_per_az", "min <= desired <= max"),
    "no subnets": (FLEET % ("  fleet {}\n" + ARCHIVE_BLOCK), "fleet > subnet_ids", "at least one subnet"),
    "subnet twice": (FLEET % (FLEET_BLOCK.replace('"subnet-0123456789abcdef1"', '"subnet-0123456789abcdef0"') + ARCHIVE_BLOCK),
                     "fleet > subnet_ids[1]", "listed twice"),
    "bad reader": (FLEET % (FLEET_BLOCK + ARCHIVE_BLOCK.replace(":role/", ":user/")), "archive > reader_role_arns[0]", "IAM role ARN"),
    "unknown fleet field": (FLEET % (FLEET_BLOCK.replace("max_per_az", "max_per_zone") + ARCHIVE_BLOCK), "fleet > max_per_zone",
                            "did you mean"),
    # Once accepted: a fleet of no hosts mirrors into nothing; a fleet in more AZs than a region has
    "no hosts": (FLEET % (FLEET_BLOCK.replace("max_per_az = 3", "min_per_az = 0\n    desired_per_az = 0") + ARCHIVE_BLOCK),
                 "fleet > desired_per_az", "0 hosts: the NLB would drop every mirrored packet"),
    "50 subnets": (FLEET % ("  fleet {\n    subnet_ids = [" + ", ".join(f'"subnet-{n:017x}"' for n in range(50)) + "]\n  }\n"
                            + ARCHIVE_BLOCK), "fleet > subnet_ids", "50 subnets: a fleet takes one per Availability Zone"),
    # Once passed validate and failed only at synth
    "fleet without a baked ami": ((FLEET % (FLEET_BLOCK + "\n" + ARCHIVE_BLOCK)).replace('  ami    = "ami-0123456789abcdef0"\n', ""),
                                  'capture "web" > ami', "missing: the capture host boots an AMI"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_wrong_fleet_or_archive_names_the_field_and_the_fix(workdir, case):
    text, field, words = BAD[case]
    write(workdir, text)
    result = mirrorcap("validate", cwd=workdir)
    assert result.returncode == 1, result.stdout
    assert field in result.stderr and words in result.stderr and "fix:" in result.stderr, result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["capture.hcl"]


def test_a_fleet_with_a_baked_ami_passes_validate(workdir):
    assert 'ami    = "ami-0123456789abcdef0"' in FLEET  # (it was once added a second time: a repeat is refused now)
    write(workdir, FLEET % (FLEET_BLOCK + "\n" + ARCHIVE_BLOCK))
    result = mirrorcap("validate", cwd=workdir)
    assert result.returncode == 0, result.stderr


def test_a_fleet_without_ami_renders_for_the_bake_though_validate_refuses_it(workdir):
    """make bake renders the bake.sh that makes the AMI before there is one: only deploying needs `ami`."""
    write(workdir, (FLEET % (FLEET_BLOCK + "\n" + ARCHIVE_BLOCK)).replace('  ami    = "ami-0123456789abcdef0"\n', ""))
    assert mirrorcap("sessions", "--write", cwd=workdir).returncode == 0
    result = mirrorcap("render", "--out", "rendered", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "rendered" / "web" / "bake.sh").is_file()
    assert mirrorcap("validate", cwd=workdir).returncode == 1
