"""Inventory loading: defaults, and one clear error per kind of bad input."""

from __future__ import annotations

import os
import resource
import subprocess

import pytest

from helpers import BIN, EXAMPLE, env, eni, minimal, mirrorcap, sources, synth, write
from mirrorcap import aws_limits as L
from mirrorcap.errors import MirrorcapError
from mirrorcap.inventory.inputfile import MAX_BYTES
from mirrorcap.inventory import load


def test_example_inventory_loads_with_documented_values():
    inv = load(EXAMPLE)
    (prod,) = inv.captures
    assert prod.name == "prod" and prod.instance_type == "t3.small" and prod.vni == 12345
    assert prod.storage.size_gib == 300 and prod.storage.type == "st1" and prod.storage.kms_key_id is None
    assert [s.id for s in prod.sources] == ["i-0123456789abcdef0", "eni-0123456789abcdef0", "eni-0fedcba9876543210"]
    assert prod.backend.kind == "s3" and prod.backend.use_lockfile


def test_defaults_fill_a_minimal_capture(workdir):
    inv = load(write(workdir, minimal(sources(eni(1)))))
    c = inv.captures[0]
    assert c.instance_type == "t3.small"
    assert c.ami == "ami-0123456789abcdef0"
    assert (c.storage.size_gib, c.storage.type, c.storage.prevent_destroy) == (300, "st1", True)
    # default filter: the post's accept-all, both directions
    assert [(r.direction, r.action, r.protocol, r.source_cidr, r.destination_cidr) for r in c.filter_rules] == [
        ("ingress", "accept", None, "0.0.0.0/0", "0.0.0.0/0"), ("egress", "accept", None, "0.0.0.0/0", "0.0.0.0/0")]
    assert c.backend.kind == "local" and c.backend.path == "../../../terraform.test.tfstate"
    assert (c.host.rotate_seconds, c.host.retention_days) == (600, 15)


def test_tag_sources_and_auto_mirror(workdir):
    body = sources(eni(1)) + '''
  source {
    tags = { Service = "web", Environment = "prod" }
    vni  = 99
  }
  auto_mirror {
    ends_at = "2026-12-01T18:00:00+09:00"
  }'''
    c = load(write(workdir, minimal(body))).captures[0]
    assert [s.id for s in c.sources] == [eni(1)]  # tag sources are not numbered at synth time
    assert c.tag_sources[0].tags == (("Environment", "prod"), ("Service", "web")) and c.tag_sources[0].vni == 99
    assert c.vnis == (99, 4242)
    am = c.auto_mirror
    assert am.deploy_lambda and am.sweep_minutes == 15 and am.max_concurrency == 2
    assert am.ends_at.isoformat() == "2026-12-01T18:00:00+09:00"
    assert load(write(workdir, minimal(sources(eni(1))))).captures[0].auto_mirror is None


def test_filter_rules_get_numbers_per_direction_and_protocol_names(workdir):
    body = '''
  filter {
    rule {
      direction = "ingress"
      protocol = "tcp"
      destination_ports = [80, 443]
    }
    rule {
      direction = "ingress"
      protocol = "udp"
      source_ports = 53
    }
    rule {
      direction = "egress"
      rule_number = 7
    }
  }'''
    rules = load(write(workdir, minimal(body))).captures[0].filter_rules
    assert [(r.direction, r.rule_number, r.protocol) for r in rules] == [("ingress", 100, 6), ("ingress", 200, 17), ("egress", 7, None)]
    assert (rules[0].destination_ports.from_port, rules[0].destination_ports.to_port) == (80, 443)
    assert (rules[1].source_ports.from_port, rules[1].source_ports.to_port) == (53, 53)


def test_vnis_include_per_source_overrides(workdir):
    body = sources(eni(1)) + '\n  source {\n    eni_id = "%s"\n    vni = 7\n  }' % eni(2)
    assert load(write(workdir, minimal(body))).captures[0].vnis == (7, 4242)


def too_many_rules() -> str:
    rules = "\n".join('    rule {\n      direction = "ingress"\n    }' for _ in range(L.RULES_PER_FILTER + 1))
    return minimal("  filter {\n" + rules + "\n  }")


def three_captures_plus_one() -> str:
    return "\n".join(minimal(sources(eni(1)) + f'\n  backend "local" {{\n    path = "{n}.tfstate"\n  }}', name=n) for n in ("a", "b", "c", "d"))


BAD = {
    # name: (inventory text, field that must be named, words of the message)
    "syntax error": ('capture "x" {\n  region = \n}\n', "capture.hcl:2:", "HCL syntax error"),
    "unknown field": (minimal('  instance_typ = "t3.small"'), 'capture "test" > instance_typ', "did you mean `instance_type`"),
    "missing subnet": (minimal().replace('subnet_id = "subnet-0123456789abcdef0"', ""), 'capture "test" > subnet_id', "required field is missing"),
    "bad eni id": (minimal('  source {\n    eni_id = "eni-123"\n  }'), 'capture "test" > source[0] > eni_id', "is not an ENI ID"),
    "bad instance id": (minimal('  source {\n    instance_id = "i-xyz"\n  }'), "source[0] > instance_id", "is not an instance ID"),
    "bad sg id": (minimal().replace('mirror_source_cidrs = ["10.1.0.0/16"]', 'mirror_source_security_group_ids = ["sg-1"]'),
                  "network > mirror_source_security_group_ids[0]", "is not a security group ID"),
    "vni out of range": (minimal().replace("vni       = 4242", "vni = 16777216"), 'capture "test" > vni', "out of range (1 to 16777215)"),
    "invalid cidr": (minimal().replace('"10.1.0.0/16"', '"10.1.0.0/33"'), "network > mirror_source_cidrs[0]", "is not a CIDR block"),
    "cidr host bits": (minimal().replace('"10.1.0.0/16"', '"10.1.2.3/16"'), "mirror_source_cidrs[0]", 'has host bits set'),
    "duplicate sources": (minimal(sources(eni(1), eni(1))), "source[1] > eni_id", "is already listed as source[0]"),
    "over 10 sources on an ENI target": (minimal(sources(*[eni(i) for i in range(11)])), 'capture "test" > source',
                                          "TrafficMirrorSourcesPerTargetLimitExceeded"),
    "over 10 filter rules": (too_many_rules(), "filter > rule", "at most 10 rules per filter"),
    "source in over 3 sessions": (three_captures_plus_one(), "source", "AWS allows 3 sessions per source ENI"),
    "both eni and instance": (minimal(f'  source {{\n    eni_id = "{eni(1)}"\n    instance_id = "i-0123456789abcdef0"\n  }}'),
                              "source[0]", "exactly one of eni_id, instance_id or tags"),
    "no mirror source allowed": (minimal().replace('mirror_source_cidrs = ["10.1.0.0/16"]', ""), "network > mirror_source_cidrs",
                                 "drop all VXLAN traffic"),
    "st1 too small": (minimal("  storage {\n    size_gib = 100\n  }"), "storage > size_gib", "out of range (125 to 16384)"),
    "packet length": (minimal(f'  source {{\n    eni_id = "{eni(1)}"\n    packet_length = 9000\n  }}'), "packet_length", "out of range (1 to 8500)"),
    "string where number": (minimal().replace("vni       = 4242", 'vni = "4242"'), 'capture "test" > vni', "expected a whole number"),
    "ports without tcp/udp": (minimal('  filter {\n    rule {\n      direction = "ingress"\n      destination_ports = 443\n    }\n  }'),
                              "rule[0] > destination_ports", "only apply to TCP and UDP"),
    "duplicate rule numbers": (minimal('  filter {\n    rule {\n      direction = "egress"\n      rule_number = 5\n    }\n'
                                       '    rule {\n      direction = "egress"\n      rule_number = 5\n    }\n  }'),
                               "rule[1] > rule_number", "also used by rule[0]"),
    "unencrypted state": (minimal('  backend "s3" {\n    bucket = "my-state"\n    encrypt = false\n  }'), 'backend "s3" > encrypt', "encrypted at rest"),
    "open vxlan ingress": (minimal().replace('"10.1.0.0/16"', '"0.0.0.0/0"'), "mirror_source_cidrs[0]", "lets anyone send VXLAN"),
    "bad capture name": (minimal(name="Prod_1"), 'capture "Prod_1"', "not usable as a stack name"),
    "no capture": ("# empty\n", "capture", "no `capture"),
    "tag source without auto_mirror": (minimal('  source {\n    tags = { Service = "web" }\n  }'), 'capture "test" > source',
                                       "add `auto_mirror {}`"),
    "empty tag selector": (minimal('  source {\n    tags = {}\n  }\n  auto_mirror {}'), "source[0] > tags", "would mirror every instance"),
    "tag source with a session number": (minimal('  source {\n    tags = { Service = "web" }\n    session_number = 3\n  }\n  auto_mirror {}'),
                                         "source[0] > session_number", "cannot be combined with `tags`"),
    "campaign end without time zone": (minimal('  source {\n    tags = { Service = "web" }\n  }\n  auto_mirror {\n    ends_at = "2026-12-01 18:00"\n  }'),
                                       "auto_mirror > ends_at", "with a time zone"),
    "template in a state path": (minimal('  backend "local" {\n    path = "state-${path.cwd}.tfstate"\n  }'),
                                 'backend "local" > path', "backend settings are not templates"),
    "quote in a state key": (minimal('  backend "s3" {\n    bucket = "my-state"\n    key = "a\\"b.tfstate"\n  }'),
                             'backend "s3" > key', "without quotes"),
    "free-space floor over the volume": (minimal("  host {\n    min_free_gib = 300\n  }"), "host > min_free_gib",
                                         "out of range (0 to 270)"),
    # Nonsense once accepted (each answered now with the field and the fix)
    "free-space floor leaving pcaps no room": (minimal('  storage {\n    size_gib = 125\n  }\n  host {\n    min_free_gib = 124\n  }'),
                                               "host > min_free_gib", "keep at most 112 GiB (90%) of the pcap volume's 125 GiB free"),
    "unknown region": (minimal().replace('"eu-west-1"', '"xx-nowhere-9"'), 'capture "test" > region',
                       "'xx-nowhere-9' is not an AWS region this mirrorcap knows"),
    "misspelt region": (minimal().replace('"eu-west-1"', '"eu-wset-1"'), 'capture "test" > region', "did you mean eu-west-1"),
    "unknown backend region": (minimal('  backend "s3" {\n    bucket = "my-state"\n    region = "us-nowhere-1"\n  }'),
                               'backend "s3" > region', "not an AWS region"),
    "t3.nano capture host": (minimal('  instance_type = "t3.nano"'), 'capture "test" > instance_type', "t3.nano is too small"),
    "state key starting with a slash": (minimal('  backend "s3" {\n    bucket = "my-state"\n    key = "/prod.tfstate"\n  }'),
                                        'backend "s3" > key', "not starting with '/'"),
    "state key with //": (minimal('  backend "s3" {\n    bucket = "my-state"\n    key = "a//prod.tfstate"\n  }'),
                          'backend "s3" > key', "no '//'"),
    "IP-shaped state bucket": (minimal('  backend "s3" {\n    bucket = "192.168.1.1"\n  }'), 'backend "s3" > bucket',
                               "S3's naming rules"),
    "state bucket with ..": (minimal('  backend "s3" {\n    bucket = "my..state"\n  }'), 'backend "s3" > bucket', "S3's naming rules"),
    "local state over /etc/passwd": (minimal('  backend "local" {\n    path = "/etc/passwd"\n  }'), 'backend "local" > path',
                                     "a relative path to a .tfstate file"),
    "local state reaching /etc/passwd": (minimal('  backend "local" {\n    path = "../../../../../../etc/passwd"\n  }'),
                                         'backend "local" > path', "a relative path to a .tfstate file"),
    "local state reaching /etc/cron.d": (minimal('  backend "local" {\n    path = "../../../../../../etc/cron.d/x.tfstate"\n  }'),
                                         'backend "local" > path', "leaves the project directory"),
    "local state one level above the project": (minimal('  backend "local" {\n    path = "state/../../../../../x.tfstate"\n  }'),
                                                'backend "local" > path', "leaves the project directory"),
    "a reader role of another partition": (minimal('  archive {\n    reader_role_arns = ["arn:aws-cn:iam::123456789012:role/r"]\n  }'),
                                           "archive > reader_role_arns[0]", "an ARN of the aws-cn partition; the capture's region eu-west-1 is in aws"),
    "a KMS key of another partition": (minimal('  storage {\n    kms_key_id = "arn:aws-us-gov:kms:eu-west-1:123456789012:alias/k"\n  }'),
                                       "storage > kms_key_id", "aws-us-gov partition"),
    "a state role of another partition": (minimal('  backend "s3" {\n    bucket = "my-state"\n    region = "cn-north-1"\n'
                                                  '    role_arn = "arn:aws:iam::123456789012:role/r"\n  }'),
                                          'backend "s3" > role_arn', "region cn-north-1 is in aws-cn"),
    "HCL nested thousands deep": (minimal("  tags = " + "[" * 3000 + "]" * 3000), "capture.hcl", "nested too deeply to read"),
    "HCL blocks nested thousands deep": (minimal("  host {\n" + "x {\n" * 3000 + "}\n" * 3000 + "  }"), "capture.hcl",
                                         "nested too deeply to read"),
    "47 tags": (minimal("  tags = {\n" + "".join(f'    T{i} = "v"\n' for i in range(47)) + "  }"), 'capture "test" > tags',
                "mirrorcap adds 4 of its own"),
    "tag with a character AWS refuses": (minimal('  tags = { Team = "a;b" }'), "tags.Team", "characters AWS tags do not allow: ';'"),
    "description over 255 characters": (minimal(f'  source {{\n    eni_id = "{eni(1)}"\n    description = "{"d" * 256}"\n  }}'),
                                         "source[0] > description", "256 characters long"),
    # Repeats python-hcl2 once resolved silently (the last one won), and syntax errors named where they are
    "an attribute given twice": (minimal().replace("vni       = 4242", "vni       = 12345\n  vni = 777"), "capture.hcl:8: vni",
                                 "given twice in one block"),
    "a tag given twice in a map": (minimal('  tags = { Team = "a", Team = "b" }'), "Team", "given twice in one map"),
    "a tag given twice in a block": (minimal('  tags {\n    Team = "a"\n    Team = "b"\n  }'), "Team", "given twice in one block"),
    "a byte-order mark": ("\ufeff" + minimal(), "capture.hcl:1:1", "starts with a UTF-8 byte-order mark (BOM)"),
    "a hexadecimal number": (minimal().replace("vni       = 4242", "vni       = 0x10"), "capture.hcl:7:15",
                             "0x10 is not a number HCL reads"),
    "digits with underscores": (minimal().replace("vni       = 4242", "vni       = 1_000"), "capture.hcl:7:15",
                                "1_000 is not a number HCL reads"),
    "description with a newline": (minimal(f'  source {{\n    eni_id = "{eni(1)}"\n    description = "web\\nnext"\n  }}'),
                                   "source[0] > description", "control characters"),
}


def refused_code(args) -> int:
    """validate's job is finding an inventory's problems (1); for every other command they are bad input (2)."""
    return 1 if list(args)[:1] == ["validate"] else 2


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inventory_names_file_field_and_fix_and_writes_nothing(workdir, case):
    text, field, words = BAD[case]
    write(workdir, text)
    before = sorted(p.name for p in workdir.iterdir())

    for args in (["validate"], ["sessions", "--write"]):
        result = mirrorcap(*args, cwd=workdir)
        assert result.returncode == refused_code(args), result.stdout + result.stderr
        assert "capture.hcl" in result.stderr
        assert field in result.stderr, result.stderr
        assert words in result.stderr, result.stderr
        assert "fix:" in result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == before, "a failed command must write nothing"


def test_bad_inventory_fails_synth_before_writing_anything(workdir):
    write(workdir, BAD["bad eni id"][0])
    result = synth(workdir)
    assert result.returncode == 1
    assert "source[0] > eni_id" in result.stderr
    assert not (workdir / "cdktf.out").exists()


def test_every_problem_is_reported_in_one_pass(workdir):
    text = minimal('  source {\n    eni_id = "eni-1"\n  }').replace("vni       = 4242", "vni = -1")
    with pytest.raises(MirrorcapError) as exc:
        load(write(workdir, text))
    fields = [p.field for p in exc.value.problems]
    assert 'capture "test" > vni' in fields and 'capture "test" > source[0] > eni_id' in fields


def test_missing_file_is_a_clear_error_and_a_usage_error(workdir):
    """validate: 2 (usage) for no file at all, so CI tells a wrong path from an inventory with problems (1);
    a file that is there but unusable stays a finding (test_inventory_that_is_no_small_regular_file_is_refused_unread)."""
    result = mirrorcap("validate", "--inventory", "nope.hcl", cwd=workdir)
    assert result.returncode == 2 and "nope.hcl: file not found" in result.stderr and "fix:" in result.stderr
    (workdir / "gone.hcl").symlink_to(workdir / "nowhere.hcl")  # a dangling link: no file either
    result = mirrorcap("validate", "--inventory", "gone.hcl", cwd=workdir)
    assert result.returncode == 2 and "gone.hcl: file not found" in result.stderr
    write(workdir, minimal().replace("vni       = 4242", "vni = 0"))
    result = mirrorcap("validate", cwd=workdir)
    assert result.returncode == 1 and "vni" in result.stderr  # findings stay 1


def test_hundred_source_instance_type_accepts_eleven_sources(workdir):
    text = minimal(sources(*[eni(i) for i in range(11)])).replace('vni', 'instance_type = "m5.24xlarge"\n  vni', 1)
    assert len(load(write(workdir, text)).captures[0].sources) == 11


@pytest.mark.parametrize("path, why", [
    ("/etc", "system directory"), ("/var/log/../../etc", "not normalized"), ("/var/log/./tcpdump", "not normalized"),
    ("/var/log", "system directory"), ("/usr/local/pcaps", "system directory"), ("/", "not an absolute directory"),
    ("/tmp/pcaps", "system directory"), ("/srv/pcaps/", "not an absolute directory"), ("relative/dir", "not an absolute"),
])
def test_capture_dir_refuses_system_and_unnormalized_paths(workdir, path, why):
    """The storage unit mounts the volume over capture_dir and chmods it: never a system directory."""
    with pytest.raises(MirrorcapError) as e:
        load(write(workdir, minimal(f'  host {{\n    capture_dir = "{path}"\n  }}')))
    (problem,) = e.value.problems
    assert problem.field.endswith("host > capture_dir") and why in problem.message and problem.fix


@pytest.mark.parametrize("path", ["/var/log/tcpdump", "/srv/pcaps", "/data/pcap-store", "/var/lib/mirrorcap"])
def test_capture_dir_accepts_dedicated_directories(workdir, path):
    assert load(write(workdir, minimal(f'  host {{\n    capture_dir = "{path}"\n  }}'))).captures[0].host.capture_dir == path


def test_strings_are_literal_text_even_when_they_start_with_an_interpolation(workdir):
    """Nothing in the inventory is evaluated: the stack escapes `${` for Terraform (test_synth.py checks what Terraform reads)."""
    body = f'  source {{\n    eni_id = "{eni(1)}"\n    description = "${{path.cwd}} tier"\n  }}'
    assert load(write(workdir, minimal(body))).captures[0].sources[0].description == "${path.cwd} tier"


def bounded(*args: str, cwd) -> subprocess.CompletedProcess:
    """The CLI with 30 s and 1 GiB of address space: reading /dev/zero or waiting on a FIFO fails the test, not the machine."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    return subprocess.run([str(BIN / "mirrorcap"), *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=30, preexec_fn=limit)


def make(path, kind: str) -> None:
    if kind == "link to /dev/zero":  # was read to 5.4 GB, then MemoryError
        path.symlink_to("/dev/zero")
    elif kind == "fifo":  # open() waited for a writer forever
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:  # oversized: a regular file one byte over the limit
        path.write_text("#" * MAX_BYTES + "\n")


def assert_refused_unread(result: subprocess.CompletedProcess, name: str, fix: str, kind: str) -> None:
    """One problem naming the file and what it is, then the fix."""
    assert result.returncode == refused_code(result.args[1:2]) and "Traceback" not in result.stderr, result.stderr
    (problem, fix_line) = result.stderr.splitlines()
    assert problem.startswith(f"mirrorcap: {name}") and fix_line.startswith(f"  fix: {fix}")
    assert ("over mirrorcap's 1,048,576-byte limit" if kind == "oversized" else "not a regular file") in problem


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "directory", "oversized"])
def test_inventory_that_is_no_small_regular_file_is_refused_unread(workdir, kind):
    make(workdir / "capture.hcl", kind)
    for args in (["validate"], ["sessions", "--write"], ["render"]):
        assert_refused_unread(bounded(*args, cwd=workdir), "capture.hcl", "pass --inventory the inventory itself", kind)
    assert os.listdir(workdir) == ["capture.hcl"], "a refused inventory must write nothing"


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "directory", "oversized"])
def test_lock_file_that_is_no_small_regular_file_is_refused_unread(workdir, kind):
    write(workdir, minimal(sources(eni(1))))
    make(workdir / "capture.lock.json", kind)
    before = os.lstat(workdir / "capture.lock.json")
    for args in (["validate"], ["sessions", "--write"]):
        assert_refused_unread(bounded(*args, cwd=workdir), "capture.lock.json", "restore it from version control", kind)
    assert sorted(os.listdir(workdir)) == ["capture.hcl", "capture.lock.json"]
    assert os.lstat(workdir / "capture.lock.json").st_mtime_ns == before.st_mtime_ns


def test_inventory_may_be_a_link_to_a_regular_file_of_up_to_the_limit(workdir):
    text = minimal(sources(eni(1)))
    (workdir / "real.hcl").write_text(text + "#" * (MAX_BYTES - len(text) - 1) + "\n")  # exactly the limit
    (workdir / "capture.hcl").symlink_to("real.hcl")
    result = mirrorcap("validate", cwd=workdir)
    assert result.returncode == 0, result.stderr


def test_a_thousand_described_sources_take_a_seventh_of_the_limit(workdir):
    """The size limit's headroom: 10 hosts of 100 sources, each with a description and a packet length."""
    def host(c: int) -> str:
        return "\n".join(f'  source {{\n    eni_id        = "{eni(c * 100 + i)}"\n    description   = "web-{c * 100 + i:04d}: frontend, '
                         f'eu-west-1a"\n    packet_length = 1500\n  }}' for i in range(100))
    text = "\n".join(minimal(host(c), name=f"c{c}").replace("vni", 'instance_type = "m5.24xlarge"\n  vni', 1) for c in range(10))
    assert 100_000 < len(text.encode()) < MAX_BYTES / 7
    assert sum(len(c.sources) for c in load(write(workdir, text)).captures) == 1000


def test_an_inventory_is_parsed_once_per_process_and_read_again_each_time(workdir):
    """A command that asks for the inventory twice (find, the deploy checks) parses it once; a file
    changed in between is read as it is now, and a bad one is refused every time."""
    path = write(workdir, minimal(sources(eni(1))))
    first = load(path)
    assert load(path) is first  # the same text, not parsed again
    write(workdir, minimal(sources(eni(1), eni(2))))
    assert [s.id for s in load(path).captures[0].sources] == [eni(1), eni(2)]
    write(workdir, minimal(sources(eni(1))))
    assert load(path) is first
    write(workdir, minimal(sources(eni(1))).replace("vni", "vni = 1\n  vni", 1))
    for _ in range(2):
        with pytest.raises(MirrorcapError, match="given twice"):
            load(path)


def test_a_campaign_that_has_ended_is_a_warning(workdir):
    write(workdir, minimal('  source {\n    tags = { Service = "web" }\n  }\n  auto_mirror {\n    ends_at = "2020-01-01T00:00:00Z"\n  }'))
    result = mirrorcap("validate", cwd=workdir)
    assert result.returncode == 0 and "auto_mirror > ends_at: 2020-01-01T00:00:00+00:00 has passed" in result.stderr


def test_a_capture_without_its_ami_renders_for_the_first_bake_but_is_not_deployed(workdir):
    """make bake renders before there is an AMI; validate and synth refuse until `ami` names it."""
    from mirrorcap.synth.pipeline import prepare
    text = minimal(sources(eni(1)), name="first").replace('  ami       = "ami-0123456789abcdef0"\n', "")
    write(workdir, text)
    assert load(workdir / "capture.hcl").captures[0].ami is None
    rendered = mirrorcap("render", "--out", str(workdir / "rendered"), cwd=workdir)
    assert rendered.returncode == 0, rendered.stderr
    assert (workdir / "rendered/first/bake.sh").exists()
    refused = mirrorcap("validate", cwd=workdir)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        'mirrorcap: capture.hcl: capture "first" > ami: missing: the capture host boots an AMI with its bake.sh baked in',
        '  fix: bake it (make bake CAPTURE=first prints the line), then write ami = "ami-..." here']
    with pytest.raises(MirrorcapError) as e:
        prepare(workdir / "capture.hcl")
    assert 'capture "first" > ami: missing' in str(e.value)


def test_arns_of_the_regions_partition_and_state_inside_the_project_are_accepted(workdir):
    c, = load(write(workdir, minimal('  archive {\n    reader_role_arns = ["arn:aws:iam::123456789012:role/r"]\n  }\n'
                                     '  backend "local" {\n    path = "../../../state/test.tfstate"\n  }'))).captures
    assert c.archive.reader_role_arns == ("arn:aws:iam::123456789012:role/r",) and c.backend.path == "../../../state/test.tfstate"
    c, = load(write(workdir, minimal().replace('"eu-west-1"', '"cn-north-1"').replace(
        "  network {", '  archive {\n    reader_role_arns = ["arn:aws-cn:iam::123456789012:role/r"]\n  }\n  network {'))).captures
    assert c.archive.reader_role_arns == ("arn:aws-cn:iam::123456789012:role/r",)
