"""Run the real CDK Terrain app and check what Terraform would be given."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from helpers import EXAMPLE, ROOT, minimal, mirrorcap, sessions_of, stack_json, stack_values, synth, tree, write
from synthesized import ODD, prepare
from mirrorcap import aws_limits as L
from mirrorcap import stack_data
from mirrorcap.errors import MirrorcapError
from mirrorcap.inventory import load
from mirrorcap.host.render import user_data
from mirrorcap.host.render import user_data_template as user_data_tf
from tf_emulator import find_aws_mirror

def resources(doc: dict, kind: str) -> dict:
    return {k: {a: b for a, b in v.items() if a != "//"} for k, v in doc["resource"].get(kind, {}).items()}


def test_example_instance_is_private_imdsv2_encrypted_and_ssm_only(example):
    doc = stack_json(example, "prod")
    (inst,) = resources(doc, "aws_instance").values()
    assert inst["instance_type"] == "t3.small"
    assert inst["associate_public_ip_address"] is False
    assert "key_name" not in inst
    assert inst["metadata_options"]["http_tokens"] == "required"
    assert inst["metadata_options"]["http_put_response_hop_limit"] == 1
    assert inst["root_block_device"]["encrypted"] is True
    assert inst["ami"] == "ami-0123456789abcdef0" and "lifecycle" not in inst  # the baked AMI, as the inventory names it
    assert inst["vpc_security_group_ids"] == ["${aws_security_group.management_sg.id}"]
    (attach,) = resources(doc, "aws_iam_role_policy_attachment").values()
    assert attach["policy_arn"] == "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    assert "inline_policy" not in resources(doc, "aws_iam_role")["host_role"]


def test_example_mirror_eni_is_device_index_1_behind_its_own_security_group(example):
    doc = stack_json(example, "prod")
    eni = resources(doc, "aws_network_interface")["mirror_eni"]
    assert eni["security_groups"] == ["${aws_security_group.mirror_sg.id}"]
    att = resources(doc, "aws_network_interface_attachment")["mirror_eni_attachment"]
    assert att["device_index"] == 1 and att["network_interface_id"] == "${aws_network_interface.mirror_eni.id}"
    target = resources(doc, "aws_ec2_traffic_mirror_target")["mirror_target"]
    assert target["network_interface_id"] == "${aws_network_interface.mirror_eni.id}"


def test_example_security_groups_are_least_privilege(example):
    sgs = resources(stack_json(example, "prod"), "aws_security_group")
    mirror, mgmt = sgs["mirror_sg"], sgs["management_sg"]
    assert mirror["egress"] == []
    assert {(r["protocol"], r["from_port"], r["to_port"]) for r in mirror["ingress"]} == {("udp", 4789, 4789)}
    assert [r["cidr_blocks"] for r in mirror["ingress"] if r.get("cidr_blocks")] == [["10.0.16.0/20"]]
    assert [r["security_groups"] for r in mirror["ingress"] if r.get("security_groups")] == [["sg-0123456789abcdef0"]]
    assert mgmt["ingress"] == []
    assert [(r["protocol"], r["from_port"], r["to_port"], r["cidr_blocks"]) for r in mgmt["egress"]] == [("tcp", 443, 443, ["0.0.0.0/0"])]


def test_example_pcap_volume_st1_encrypted_protected_and_attached(example):
    doc = stack_json(example, "prod")
    vol = resources(doc, "aws_ebs_volume")["pcap_volume"]
    assert (vol["type"], vol["size"], vol["encrypted"]) == ("st1", 300, True)
    assert vol["lifecycle"] == {"prevent_destroy": True}
    assert vol["availability_zone"] == "${data.aws_subnet.capture_subnet.availability_zone}"
    att = resources(doc, "aws_volume_attachment")["pcap_volume_attachment"]
    assert att["volume_id"] == "${aws_ebs_volume.pcap_volume.id}" and att["stop_instance_before_detaching"] is True


def test_example_sessions_use_locked_numbers_and_vni(example):
    doc = stack_json(example, "prod")
    lock = json.loads((ROOT / "capture.lock.json").read_text())["captures"]["prod"]
    values = stack_values(example, "prod")
    by_source = sessions_of(doc, values)
    assert {k: s["session_number"] for k, s in by_source.items()} == lock and len(lock) == 3
    assert {s["virtual_network_id"] for s in by_source.values()} == {12345}
    # An instance source mirrors its primary ENI, looked up at plan time; an ENI source is its own ID.
    assert values["instance_sources"] == ["i-0123456789abcdef0"] and values["vnis"] == [12345]
    assert doc["data"]["aws_instance"]["source_instance"]["for_each"] == "${var.instance_sources}"
    s = doc["resource"]["aws_ec2_traffic_mirror_session"]["source"]
    assert s["network_interface_id"] == ("${contains(var.instance_sources, each.key) ? "
                                         "data.aws_instance.source_instance[each.key].network_interface_id : each.key}")
    # The map is a variable (stack_data.py): Terraform evaluates a resource's for_each per instance, a variable once.
    assert s["for_each"] == "${var.sessions}"
    assert {k: doc["variable"][k]["type"] for k in doc["variable"]} == \
        {k: t for k, (t, _) in stack_data.VARIABLES.items()}
    assert not any("default" in v for v in doc["variable"].values())  # no values: the plan fails, it plans nothing away
    assert by_source["eni-0fedcba9876543210"]["packet_length"] == 1500
    assert by_source["eni-0123456789abcdef0"]["packet_length"] is None  # whole packets
    assert s["traffic_mirror_target_id"] == "${aws_ec2_traffic_mirror_target.mirror_target.id}"
    assert s["traffic_mirror_filter_id"] == "${aws_ec2_traffic_mirror_filter.mirror_filter.id}"
    assert s["tags"] == {"Name": "mirrorcap-prod-${each.key}", "mirrorcap:source": "${each.key}"}
    rules = resources(doc, "aws_ec2_traffic_mirror_filter_rule")
    assert rules["filter_rule_ingress_100"]["destination_port_range"] == {"from_port": 443, "to_port": 443}
    assert rules["filter_rule_ingress_100"]["protocol"] == 6
    assert "protocol" not in rules["filter_rule_egress_100"]


def test_example_backend_provider_tags_and_outputs(example):
    doc = stack_json(example, "prod")
    assert doc["terraform"]["backend"]["s3"] == {"bucket": "example-terraform-state", "key": "mirrorcap/prod.tfstate",
                                                 "region": "ap-northeast-1", "encrypt": True, "use_lockfile": True}
    assert doc["terraform"]["required_providers"]["aws"] == {"source": "hashicorp/aws", "version": "6.69.1"}
    tags = doc["provider"]["aws"][0]["default_tags"][0]["tags"]
    assert tags == {"ManagedBy": "mirrorcap", "Purpose": "packet-capture", "Team": "sre", "mirrorcap:stack": "prod"}
    assert set(doc["output"]) == {"instance_id", "mirror_eni_id", "pcap_volume_id", "mirror_target_id", "mirror_filter_id", "session_ids",
                                  "alarm_topic_arn"}
    assert doc["output"]["session_ids"]["value"] == \
        "${{for source, session in aws_ec2_traffic_mirror_session.source : source => session.id}}"


USER_DATA = re.compile(r'^\$\{base64gzip\(templatefile\("\$\{path\.module\}/([^"/]+)", \{volume_id = aws_ebs_volume\.pcap_volume\.id, '
                       r'eni_id = aws_network_interface\.mirror_eni\.id\}\)\)\}$')


def user_data_template(workdir: Path, name: str) -> Path:
    (inst,) = resources(stack_json(workdir, name), "aws_instance").values()
    assert "user_data" not in inst
    m = USER_DATA.match(inst["user_data_base64"])
    assert m, inst["user_data_base64"]
    return workdir / "cdktf.out" / "stacks" / name / m.group(1)


def test_user_data_template_escapes_everything_but_the_two_ids(example):
    text = user_data_template(example, "prod").read_text()
    assert "MIRRORCAP_VOLUME_ID=${volume_id}\n" in text and "MIRRORCAP_MIRROR_ENI_ID=${eni_id}\n" in text
    # templatefile() interpolates ${...} and runs %{...}: bash's own must arrive escaped ($${, %%{).
    assert re.findall(r"(?<!\$)\$\{[^}]*\}", text) == ["${volume_id}", "${eni_id}"]
    assert not re.search(r"(?<!%)%\{", text)


def test_user_data_round_trips_through_terraform(example, tmp_path):
    """Terraform itself evaluates the synthesized base64gzip(templatefile(...)); the instance must get exactly the rendered script."""
    terraform = shutil.which("terraform") or shutil.which("tofu")
    if not terraform:
        pytest.skip("no terraform/tofu binary on this machine (the template escaping is checked above)")
    template = user_data_template(example, "prod")
    shutil.copy(template, tmp_path / template.name)  # path.module is the working directory in `terraform console`
    (inst,) = resources(stack_json(example, "prod"), "aws_instance").values()
    expr = inst["user_data_base64"][2:-1]  # the expression inside "${...}", as Terraform reads it from cdk.tf.json
    expr = expr.replace("aws_ebs_volume.pcap_volume.id", '"vol-0123456789abcdef0"').replace(
        "aws_network_interface.mirror_eni.id", '"eni-0fedcba987654321f"')
    r = subprocess.run([terraform, "console", "-no-color"], input=expr, capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1"})
    assert r.returncode == 0, r.stderr
    got = gzip.decompress(base64.b64decode(r.stdout.strip().strip('"'))).decode()
    capture = load(EXAMPLE).capture("prod")
    assert got == user_data(capture, "vol-0123456789abcdef0", "eni-0fedcba987654321f")


def test_the_user_data_only_sets_the_instance_and_boots_the_baked_image(example, edge):
    for inventory, name in ((example, "prod"), (edge, "blue")):
        text = user_data_template(inventory, name).read_text()
        assert "exec /usr/local/sbin/mirrorcap-boot" in text and "dnf" not in text and "mirrorcap-new" not in text
    assert 'MIRRORCAP_VNIS="1 16777215"' in user_data_template(edge, "blue").read_text()


def test_user_data_over_the_ec2_limit_is_refused(monkeypatch):
    inventory = load(EXAMPLE)
    user_data_tf(inventory, inventory.capture("prod"))  # fits today
    monkeypatch.setattr(L, "USER_DATA_MAX_BYTES", 256)
    with pytest.raises(MirrorcapError) as e:
        user_data_tf(inventory, inventory.capture("prod"))
    assert 'capture "prod" > ami' in str(e.value) and "over EC2's 256-byte limit" in str(e.value)


@pytest.mark.parametrize("fixture,stack,count", [("example", "prod", 24), ("edge", "blue", 22), ("edge", "green", 34)])
def test_review_hcl_parses_and_declares_the_same_resources(request, fixture, stack, count):
    out = request.getfixturevalue(fixture) / "cdktf.out"
    doc = json.loads((out / "stacks" / stack / "cdk.tf.json").read_text())
    text = (out / "review" / f"{stack}.tf").read_text()
    parsed = hcl2.loads(text, serialization_options=hcl2.SerializationOptions(strip_string_quotes=True))
    hcl_names = {(kind, name) for block in parsed["resource"] for kind, named in block.items() for name in named}
    json_names = {(kind, name) for kind, named in doc["resource"].items() for name in named}
    assert hcl_names == json_names and len(json_names) == count
    hcl_data = {(kind, name) for block in parsed["data"] for kind, named in block.items() for name in named}
    assert hcl_data == {(kind, name) for kind, named in doc["data"].items() for name in named}
    # the stacks are formatted in parallel: each file must be its own stack's
    assert f'"mirrorcap:stack" = "{stack}"' in text
    assert "  " in text  # formatted, not one-line


def test_synth_is_deterministic_across_directories(example, tmp_path):
    again = prepare(tmp_path)
    assert tree(again / "cdktf.out" / "stacks") == tree(example / "cdktf.out" / "stacks")


def test_the_review_copy_never_sits_where_terraform_runs(tmp_path):
    """`terraform plan` in cdktf.out/stacks/<capture> (as the README says) loads cdk.tf.json alone."""
    work = prepare(tmp_path)
    stack = work / "cdktf.out" / "stacks" / "prod"
    assert (work / "cdktf.out" / "review" / "prod.tf").is_file()
    assert sorted(p.name for p in stack.iterdir() if p.name.endswith((".tf", ".tf.json"))) == ["cdk.tf.json", stack_data.MOVED_FILE]
    # A copy an older mirrorcap left beside the JSON goes, in a make synth and in a cdktn deploy run alike.
    for review_hcl in (True, False):
        (stack / "cdk.tf").write_text('resource "null_resource" "stale" {}\n')
        assert synth(work, review_hcl=review_hcl).returncode == 0
        assert not (stack / "cdk.tf").exists() and (stack / "cdk.tf.json").exists()


def test_stale_lock_file_stops_synth(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "capture.hcl")
    result = synth(tmp_path)
    assert result.returncode == 1
    assert "capture.lock.json: captures: lock file is out of date" in result.stderr
    assert "mirrorcap sessions --write" in result.stderr
    assert not (tmp_path / "cdktf.out").exists()
    # Only the clean error: no traceback from the provider still loading in a thread.
    assert "Traceback" not in result.stderr and "Exception in thread" not in result.stderr, result.stderr


def terraform_evaluates_sessions(doc: dict, values: dict, workdir: Path, instance_enis: dict[str, str]) -> tuple[dict, dict]:
    """Terraform itself evaluates the session resource's for_each and arguments.

    No provider can be downloaded here, so the synthesized arguments go, unchanged,
    into the built-in terraform_data resource (same for_each, arguments as its
    input), with the few references outside the session (instance lookups, target,
    filter) as locals. Returns (input per source, the session_ids output).
    """
    terraform = shutil.which("terraform") or shutil.which("tofu")
    if not terraform:
        pytest.skip("no terraform/tofu binary on this machine (the synthesized expressions are checked above)")
    session = {k: v for k, v in doc["resource"]["aws_ec2_traffic_mirror_session"]["source"].items() if k != "//"}
    for_each = session.pop("for_each")
    text = json.dumps({
        "variable": doc["variable"],
        "locals": {"source_instance": {i: {"network_interface_id": e} for i, e in instance_enis.items()},
                   "target": {"id": "tmt-0123456789abcdef0"}, "filter": {"id": "tmf-0123456789abcdef0"}},
        "resource": {"terraform_data": {"source": {"for_each": for_each, "input": session}}},
        "output": {"session_ids": doc["output"]["session_ids"]},
    })
    for written, stand_in in (("data.aws_instance.source_instance", "local.source_instance"),
                              ("aws_ec2_traffic_mirror_target.mirror_target", "local.target"),
                              ("aws_ec2_traffic_mirror_filter.mirror_filter", "local.filter"),
                              ("aws_ec2_traffic_mirror_session.source", "terraform_data.source")):
        text = text.replace(written, stand_in)
    workdir.mkdir()
    (workdir / "main.tf.json").write_text(text)
    (workdir / stack_data.SESSIONS_FILE).write_text(json.dumps(values))
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        r = subprocess.run([terraform, *args, "-no-color"], cwd=workdir, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    state = json.loads(subprocess.run([terraform, "show", "-json"], cwd=workdir, env=env, capture_output=True, text=True,
                                      check=True).stdout)
    inputs = {r["index"]: r["values"]["input"] for r in state["values"]["root_module"]["resources"]}
    ids = {r["index"]: r["values"]["id"] for r in state["values"]["root_module"]["resources"]}
    outputs = state["values"]["outputs"]["session_ids"]["value"]
    assert outputs == ids
    return inputs, outputs


def test_terraform_evaluates_one_session_per_source(example, tmp_path):
    doc = stack_json(example, "prod")
    inputs, outputs = terraform_evaluates_sessions(doc, stack_values(example, "prod"), tmp_path / "tf",
                                                   {"i-0123456789abcdef0": "eni-0aaaaaaaaaaaaaaaa"})
    lock = json.loads((ROOT / "capture.lock.json").read_text())["captures"]["prod"]
    assert set(inputs) == set(outputs) == set(lock)
    for source, got in inputs.items():
        assert got["session_number"] == lock[source] and got["virtual_network_id"] == 12345
        assert got["traffic_mirror_target_id"] == "tmt-0123456789abcdef0"
        assert got["traffic_mirror_filter_id"] == "tmf-0123456789abcdef0"
        assert got["tags"] == {"Name": f"mirrorcap-prod-{source}", "mirrorcap:source": source}
        assert got["description"].startswith("mirrorcap prod: ")
    assert inputs["i-0123456789abcdef0"]["network_interface_id"] == "eni-0aaaaaaaaaaaaaaaa"  # the instance's primary ENI
    assert inputs["eni-0fedcba9876543210"]["network_interface_id"] == "eni-0fedcba9876543210"
    assert inputs["eni-0fedcba9876543210"]["packet_length"] == 1500
    assert inputs["eni-0123456789abcdef0"]["packet_length"] is None  # omitted: AWS mirrors whole packets



# Text that Terraform or cdktn would read as something else if it went into the
# stack as it is: expressions, directives, a cdktn token, quotes, a backslash,
# control characters, a heredoc's end marker on its own line, a leading bracket.
# The inventory file carries the headline case; the rest is put into the loaded
# inventory directly (SYNTH_ODD), so that validation, whatever it allows,
# is not what this proves.
def test_inventory_text_reaches_terraform_literally_without_a_provider(odd, tmp_path):
    """Terraform evaluates the synthesized sessions (built-in terraform_data): descriptions are the text as written."""
    inputs, _ = terraform_evaluates_sessions(stack_json(odd, "odd"), stack_values(odd, "odd"), tmp_path / "tf", {})
    assert inputs["eni-0123456789abcdef0"]["description"] == 'mirrorcap odd: web ${file("/etc/hostname")}'  # no file read
    assert inputs["eni-0123456789abcdef1"]["description"] == f"mirrorcap odd: {ODD['description']}"



MOCK_TEST = '''
mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "111122223333" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  # Fixed answers for every data source the stacks read: otherwise the mock makes
  # up random strings, and two plans of the same configuration would differ.
  mock_data "aws_subnet" {
    defaults = { availability_zone = "ap-northeast-1a", vpc_id = "vpc-0123456789abcdef0", cidr_block = "10.0.16.0/20" }
  }
  mock_data "aws_ami" {
    defaults = { root_device_name = "/dev/xvda" }
  }
  mock_data "aws_ssm_parameter" {
    defaults = { insecure_value = "ami-0123456789abcdef0", value = "ami-0123456789abcdef0" }
  }
  mock_data "aws_instance" {
    defaults = { network_interface_id = "eni-0aaaaaaaaaaaaaaaa" }
  }
  mock_data "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:ap-northeast-1:111122223333:key/0123abcd-0123-4567-89ab-0123456789ab" }
  }
}
run "read" {
  command = plan
}
'''


def terraform_reads(stack_dir: Path, review_hcl: bool, workdir: Path) -> tuple[dict, dict]:
    """What Terraform itself reads from the stack's cdk.tf.json, or from its review copy cdk.tf.

    `terraform test` plans a copy of the stack against a mock of the AWS provider
    from the local mirror (no credentials, no network). The copy pins the mirror's
    provider version and drops the backend; the provider block becomes a local,
    since a mock provider reports no tags_all to read default_tags back from.
    Returns (the default tags, each resource's planned arguments by address, Terraform's warnings).
    """
    terraform, (mirror, why) = shutil.which("terraform"), find_aws_mirror()
    if not terraform or not mirror:
        pytest.skip(why or "needs a terraform binary on PATH")
    version = mirror.version
    shutil.copytree(stack_dir, workdir)
    pinned = {"required_providers": {"aws": {"source": "hashicorp/aws", "version": version}}}
    if review_hcl:
        (workdir / "cdk.tf.json").unlink()
        text = (stack_dir.parent.parent / "review" / f"{stack_dir.name}.tf").read_text()
        # Inventory text never holds a newline in cdk.tf, so these lines are mirrorcap's own.
        text = text[text.index("\n}\n") + 3:]  # without its terraform block (pin, backend)
        assert text.count('\nprovider "aws" {\n') == 1 and text.count("\n  default_tags {\n") == 1
        text = text.replace('\nprovider "aws" {\n', "\nlocals {\n").replace("\n  default_tags {\n", "\n  default_tags = {\n")
        (workdir / "cdk.tf").write_text(text)
        (workdir / "pinned.tf.json").write_text(json.dumps({"terraform": pinned}))
        # The variables' values as the review copy shows them (HCL), not the JSON beside cdk.tf.json.
        (workdir / stack_data.SESSIONS_FILE).unlink()
        shutil.copy(stack_dir.parent.parent / "review" / f"{stack_dir.name}.tfvars", workdir / "review.auto.tfvars")
    else:
        doc = json.loads((workdir / "cdk.tf.json").read_text())
        (provider,) = doc.pop("provider")["aws"]
        doc["locals"] = {**doc.get("locals", {}), **provider, "default_tags": provider["default_tags"][0]}
        doc["terraform"] = pinned
        (workdir / "cdk.tf.json").write_text(json.dumps(doc))
    (workdir / "probe.tf.json").write_text(json.dumps({"output": {"tags": {"value": "${local.default_tags.tags}"}}}))
    (workdir / "tests").mkdir()
    (workdir / "tests" / "read.tftest.hcl").write_text(MOCK_TEST)
    cli_config = workdir.parent / f"{workdir.name}.tfrc"
    cli_config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror.root}"\n  }}\n}}\n')
    tf_env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    r = subprocess.run([terraform, "init", "-backend=false", "-input=false", "-no-color"], cwd=workdir, env=tf_env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([terraform, "test", "-json", "-verbose", "-no-color"], cwd=workdir, env=tf_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    messages = [json.loads(line) for line in r.stdout.splitlines()]
    (plan,) = [m["test_plan"] for m in messages if m["type"] == "test_plan"]
    planned = {c["address"]: c["change"]["after"] for c in plan["resource_changes"]}
    warnings = [m["@message"] for m in messages if m.get("@level") == "warn"]
    return plan["output_changes"]["tags"]["after"], planned, warnings


@pytest.mark.parametrize("review_hcl", [False, True], ids=["cdk.tf.json", "cdk.tf"])
def test_terraform_reads_inventory_text_literally(odd, tmp_path, review_hcl):
    tags, planned, _ = terraform_reads(odd / "cdktf.out" / "stacks" / "odd", review_hcl, tmp_path / "tf")
    assert tags == {**ODD["tags"], "ManagedBy": "mirrorcap", "mirrorcap:stack": "odd"}
    sessions = {k: v["description"] for k, v in planned.items() if k.startswith("aws_ec2_traffic_mirror_session.")}
    assert sessions == {'aws_ec2_traffic_mirror_session.source["eni-0123456789abcdef0"]': 'mirrorcap odd: web ${file("/etc/hostname")}',
                        'aws_ec2_traffic_mirror_session.source["eni-0123456789abcdef1"]': f"mirrorcap odd: {ODD['description']}"}
    rules = [planned[f"aws_ec2_traffic_mirror_filter_rule.filter_rule_{d}_100"]["description"] for d in ("ingress", "egress")]
    assert rules == ODD["rules"]
    variables = planned["aws_lambda_function.remirror"]["environment"][0]["variables"]
    assert json.loads(variables["MIRRORCAP_SELECTORS"])[0]["tags"] == ODD["selector"]


ESCAPED = {  # as written in the inventory's HCL: the text it stands for
    r'say \"hi\" $${literal} %%{ if } ${bare} back\\slash': 'say "hi" ${literal} %{ if } ${bare} back\\slash',
    r'\"all quoted\"': '"all quoted"',
    r'$${\"}': '${"}',  # (`"$${"}"` is a string `${` and then junk, to Terraform as to the inventory)
}


@pytest.fixture(scope="module")
def escaped(tmp_path_factory) -> Path:
    """An inventory whose descriptions use HCL's escapes, written as a user writes them."""
    work = tmp_path_factory.mktemp("escaped")
    body = "".join(f'  source {{\n    eni_id = "eni-{n:017x}"\n    description = "{hcl}"\n  }}\n' for n, hcl in enumerate(ESCAPED))
    rule = '  filter {\n    rule {\n      direction = "ingress"\n      description = "%s"\n    }\n  }\n' % next(iter(ESCAPED))
    write(work, minimal(body + rule))
    assert mirrorcap("sessions", "--write", cwd=work).returncode == 0
    r = synth(work)
    assert r.returncode == 0, r.stderr
    return work


@pytest.mark.parametrize("review_hcl", [False, True], ids=["cdk.tf.json", "cdk.tf"])
def test_hcl_escapes_reach_terraform_as_the_text_written(escaped, tmp_path, review_hcl):
    """`\\"` a quote and `$${` the text `${`, in Terraform as in the inventory (once `$${` arrived doubled)."""
    _, planned, _ = terraform_reads(escaped / "cdktf.out" / "stacks" / "test", review_hcl, tmp_path / "tf")
    sessions = {k: v["description"] for k, v in planned.items() if k.startswith("aws_ec2_traffic_mirror_session.")}
    assert sessions == {f'aws_ec2_traffic_mirror_session.source["eni-{n:017x}"]': f"mirrorcap test: {text}"
                        for n, text in enumerate(ESCAPED.values())}
    assert planned["aws_ec2_traffic_mirror_filter_rule.filter_rule_ingress_100"]["description"] == next(iter(ESCAPED.values()))


@pytest.mark.parametrize("fixture,stack", [("example", "prod"), ("edge", "blue"), ("edge", "green"), ("odd", "odd"),
                                           ("fleet", "fleet"), ("fleet", "solo")])
def test_the_review_copy_is_what_terraform_runs(request, tmp_path, fixture, stack):
    """Terraform plans the review HCL exactly as it plans cdk.tf.json: every resource, every argument
    (an `egress = []` dropped from the review copy would let a reviewer miss an added rule)."""
    stack_dir = request.getfixturevalue(fixture) / "cdktf.out" / "stacks" / stack
    from_json = terraform_reads(stack_dir, False, tmp_path / "json")
    from_hcl = terraform_reads(stack_dir, True, tmp_path / "hcl")
    assert from_hcl[0] == from_json[0]
    assert from_hcl[1].keys() == from_json[1].keys()
    for address, args in from_json[1].items():
        assert from_hcl[1][address] == args, address
    assert not [w for w in from_hcl[2] if "uoted references" in w], from_hcl[2]  # ignore_changes/depends_on unquoted


def test_edge_two_stacks_share_a_source_with_distinct_numbers(edge):
    blue, green = stack_json(edge, "blue"), stack_json(edge, "green")
    shared = "eni-0123456789abcdef0"
    blue_values, green_values = stack_values(edge, "blue"), stack_values(edge, "green")
    assert (sessions_of(blue, blue_values)[shared]["session_number"], sessions_of(green, green_values)[shared]["session_number"]) == (1, 2)
    for doc in (blue, green):  # number tokens are made once and shared by every stack
        s = doc["resource"]["aws_ec2_traffic_mirror_session"]["source"]
        assert (s["session_number"], s["packet_length"]) == ("${each.value}", "${lookup(var.packet_lengths, each.key, null)}")
        assert s["virtual_network_id"].startswith("${lookup(var.source_vnis, each.key, ")  # else the capture's VNI
    vnis = {k: s["virtual_network_id"] for k, s in sessions_of(blue, blue_values).items()}
    assert vnis == {"i-0123456789abcdef0": 1, shared: 16777215}
    assert green["terraform"]["backend"]["local"]["path"] == "../../../terraform.green.tfstate"


def test_edge_storage_ami_kms_ipv6_and_rules(edge):
    doc = stack_json(edge, "blue")
    inst = resources(doc, "aws_instance")["capture_instance"]
    assert inst["ami"] == "ami-0123456789abcdef0" and "lifecycle" not in inst and "aws_ssm_parameter" not in doc.get("data", {})
    vol = resources(doc, "aws_ebs_volume")["pcap_volume"]
    assert (vol["type"], vol["size"], vol["iops"], vol["throughput"]) == ("gp3", 200, 6000, 250)
    assert vol["kms_key_id"].endswith("0a1b2c3d-1111-2222-3333-444455556666")
    assert inst["root_block_device"]["kms_key_id"] == vol["kms_key_id"]
    assert vol["lifecycle"] == {"prevent_destroy": False}
    mirror = resources(doc, "aws_security_group")["mirror_sg"]
    assert mirror["ingress"][0]["cidr_blocks"] == ["10.0.0.0/16"] and mirror["ingress"][0]["ipv6_cidr_blocks"] == ["2001:db8::/56"]
    egress = resources(doc, "aws_security_group")["management_sg"]["egress"][0]
    assert egress["cidr_blocks"] == ["10.0.0.0/16"] and egress["prefix_list_ids"] == ["pl-0123456789abcdef0"]
    rules = resources(doc, "aws_ec2_traffic_mirror_filter_rule")
    assert rules["filter_rule_ingress_10"]["rule_action"] == "reject"
    assert rules["filter_rule_ingress_200"]["source_port_range"] == {"from_port": 1024, "to_port": 65535}
    assert resources(doc, "aws_ec2_traffic_mirror_filter")["mirror_filter"]["network_services"] == ["amazon-dns"]
    backend = doc["terraform"]["backend"]["s3"]
    assert backend["dynamodb_table"] == "tf-locks" and "use_lockfile" not in backend
    assert backend["assume_role"] == {"role_arn": "arn:aws:iam::111122223333:role/deployer"}


def test_remirror_lambda_only_where_opted_in(example, edge):
    assert "aws_lambda_function" not in stack_json(example, "prod")["resource"]
    assert "aws_lambda_function" not in stack_json(edge, "blue")["resource"]
    r = stack_json(edge, "green")["resource"]
    fn = r["aws_lambda_function"]["remirror"]
    env = fn["environment"]["variables"]
    assert env["MIRRORCAP_TARGET_ID"] == "${aws_ec2_traffic_mirror_target.mirror_target.id}"
    assert env["MIRRORCAP_FILTER_ID"] == "${aws_ec2_traffic_mirror_filter.mirror_filter.id}"
    assert json.loads(env["MIRRORCAP_SELECTORS"]) == [{"tags": {"Environment": "prod", "Service": "web"}, "packet_length": 128, "vni": None}]
    assert env["MIRRORCAP_ENDS_AT"] == "2026-12-01T18:00:00+09:00" and env["MIRRORCAP_VNI"] == "77"
    assert fn["handler"] == "mirrorcap.live.handler.handler" and fn["reserved_concurrent_executions"] == 2
    assert (edge / "cdktf.out" / "stacks" / "green" / fn["filename"]).is_file()
    patterns = {k: json.loads(v["event_pattern"]) for k, v in r["aws_cloudwatch_event_rule"].items() if "event_pattern" in v}
    assert patterns["remirror_on_running"]["detail"] == {"state": ["running"]}
    assert patterns["remirror_on_asg_launch"]["detail-type"] == ["EC2 Instance Launch Successful"]
    assert r["aws_cloudwatch_event_rule"]["remirror_sweep"]["schedule_expression"] == "rate(5 minutes)"
    assert {p["source_arn"] for p in r["aws_lambda_permission"].values()} == {
        f"${{aws_cloudwatch_event_rule.{k}.arn}}" for k in r["aws_cloudwatch_event_rule"]}


def test_remirror_policy_can_only_delete_and_create_its_own_sessions(edge):
    doc = stack_json(edge, "green")
    assert doc["resource"]["aws_iam_role_policy"]["remirror_policy"]["policy"] == \
        "${data.aws_iam_policy_document.remirror_permissions.json}"
    statements = doc["data"]["aws_iam_policy_document"]["remirror_permissions"]["statement"]
    by_sid = {s["sid"]: s for s in statements}
    assert {s["effect"] for s in statements} == {"Allow"}
    actions = {a for s in statements for a in s["actions"]}
    assert actions == {"ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTrafficMirrorSessions",
                       "ec2:CreateTrafficMirrorSession", "ec2:CreateTags", "ec2:DeleteTrafficMirrorSession",
                       "logs:CreateLogStream", "logs:PutLogEvents"}

    def condition(sid):
        return by_sid[sid].get("condition")
    assert condition("DeleteOnlyOwnedSessions") == [
        {"test": "StringEquals", "variable": "aws:ResourceTag/mirrorcap:remirror", "values": ["green"]}]
    assert condition("CreateOwnedSessionsOnThisTarget") == [
        {"test": "StringEquals", "variable": "aws:RequestTag/mirrorcap:remirror", "values": ["green"]}]
    assert condition("TagOnlyAtCreation") == [
        {"test": "StringEquals", "variable": "ec2:CreateAction", "values": ["CreateTrafficMirrorSession"]}]
    assert [s["sid"] for s in statements if s["resources"] == ["*"]] == ["Read"]
    # Any interface, but only in the capture's VPC: IAM itself refuses the rest of the account.
    arn = "arn:${data.aws_partition.current.partition}:ec2:us-east-1:${data.aws_caller_identity.account.account_id}"
    assert by_sid["FromInterfacesInTheCapturesVpc"]["resources"] == [f"{arn}:network-interface/*"]
    (vpc,) = condition("FromInterfacesInTheCapturesVpc")
    assert vpc["test"] == "StringEquals" and vpc["variable"] == "ec2:Vpc" and vpc["values"][0].startswith(f"{arn}:vpc/vpc-")
    assert [s["sid"] for s in statements if any(r.endswith("network-interface/*") for r in s["resources"])] == [
        "FromInterfacesInTheCapturesVpc"]
    assert by_sid["WithThisTargetAndFilter"]["resources"][0] == (
        "arn:${data.aws_partition.current.partition}:ec2:us-east-1:${data.aws_caller_identity.account.account_id}"
        ":traffic-mirror-target/${aws_ec2_traffic_mirror_target.mirror_target.id}")


def test_remirror_zip_is_deterministic_and_self_contained(edge, tmp_path):
    """The shipped zip alone (plus boto3, as in the Lambda runtime) imports the handler,
    and pulls in nothing of the CLI side (inventory, Jinja, CDK)."""
    import zipfile
    from mirrorcap.stack import lambda_zip as package
    a, b = package.build(tmp_path / "a.zip"), package.build(tmp_path / "b.zip")
    assert a.read_bytes() == b.read_bytes()
    fn = stack_json(edge, "green")["resource"]["aws_lambda_function"]["remirror"]
    shipped = edge / "cdktf.out" / "stacks" / "green" / fn["filename"]
    assert shipped.read_bytes() == a.read_bytes()
    zipfile.ZipFile(shipped).extractall(tmp_path / "code")
    probe = (
        "import sys; sys.path.insert(0, %r)\n"
        "import mirrorcap.live.handler as h\n"
        "mods = {n: getattr(m, '__file__', '') for n, m in sys.modules.items() if n.startswith('mirrorcap')}\n"
        "assert all(f.startswith(%r) for f in mods.values()), mods\n"
        "assert not {'jinja2', 'typer', 'hcl2', 'cdktn', 'mirrorcap.inventory'} & set(sys.modules)\n"
        "print(h.handler.__module__)\n") % (str(tmp_path / "code"), str(tmp_path / "code"))
    result = subprocess.run([os.sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "mirrorcap.live.handler"


# type.name followed by an attribute, an index (for_each) or a space (a for expression)
REFERENCE = re.compile(r"\b(data\.)?(aws_[a-z0-9_]+)\.([A-Za-z0-9_-]+)(?:\.[a-z_]+|\[|\s)")


@pytest.mark.parametrize("fixture,stack", [("example", "prod"), ("edge", "blue"), ("edge", "green")])
def test_every_reference_names_a_declared_resource(request, fixture, stack):
    # The stack writes references out (stack/refs.py) instead of reading them over jsii;
    # a typo there would otherwise only show at `terraform plan`.
    doc = stack_json(request.getfixturevalue(fixture), stack)
    text = json.dumps({k: v for k, v in doc.items() if k in ("resource", "data", "output")})
    found = {(bool(m.group(1)), m.group(2), m.group(3)) for m in REFERENCE.finditer(text)}
    assert len(found) > 10
    # a written-out reference passed into a function gets escaped into a literal string
    assert "$${aws_" not in text and "$${data." not in text
    for is_data, rtype, name in sorted(found):
        declared = doc["data" if is_data else "resource"].get(rtype, {})
        assert name in declared, f"{'data.' if is_data else ''}{rtype}.{name} is referenced but not declared"


def test_volumes_use_a_dedicated_rotated_key_by_default(example):
    doc = stack_json(example, "prod")
    key = doc["resource"]["aws_kms_key"]["pcap_key"]
    assert key["enable_key_rotation"] is True and key["lifecycle"]["prevent_destroy"] is True
    assert doc["resource"]["aws_kms_alias"]["pcap_key_alias"]["name"] == "alias/mirrorcap-prod-pcaps"
    assert doc["resource"]["aws_ebs_volume"]["pcap_volume"]["kms_key_id"] == "${aws_kms_key.pcap_key.arn}"
    assert doc["resource"]["aws_instance"]["capture_instance"]["root_block_device"]["kms_key_id"] == "${aws_kms_key.pcap_key.arn}"
    statements = {st["sid"]: st for st in doc["data"]["aws_iam_policy_document"]["pcap_key_policy"]["statement"]}
    root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.account.account_id}:root"
    assert all(st["principals"] == [{"type": "AWS", "identifiers": [root]}] for st in statements.values())
    use = {c["variable"]: c["values"] for c in statements["UseOnlyThroughEbs"]["condition"]}
    assert use["kms:ViaService"] == ["ec2.ap-northeast-1.amazonaws.com"] and "kms:Decrypt" in statements["UseOnlyThroughEbs"]["actions"]
    assert not any(a in ("kms:*", "kms:Decrypt") for a in statements["AccountAdministersTheKey"]["actions"])


@pytest.mark.parametrize("named, expected", [
    ("alias/pcaps", "${data.aws_kms_key.pcap_key.arn}"),
    ("0123abcd-0123-4567-89ab-0123456789ab", "${data.aws_kms_key.pcap_key.arn}"),
    ("arn:aws:kms:eu-west-1:111122223333:key/0123abcd-0123-4567-89ab-0123456789ab",
     "arn:aws:kms:eu-west-1:111122223333:key/0123abcd-0123-4567-89ab-0123456789ab"),
])
def test_a_named_key_is_resolved_to_its_arn(tmp_path, named, expected):
    """aws_ebs_volume.kms_key_id takes a key ARN: an alias or key ID is looked up at plan time."""
    write(tmp_path, minimal(f'  storage {{\n    kms_key_id = "{named}"\n  }}'))
    assert mirrorcap("sessions", "--write", cwd=tmp_path).returncode == 0
    assert synth(tmp_path, review_hcl=False).returncode == 0
    doc = stack_json(tmp_path, "test")
    assert doc["resource"]["aws_ebs_volume"]["pcap_volume"]["kms_key_id"] == expected
    assert doc["resource"]["aws_instance"]["capture_instance"]["root_block_device"]["kms_key_id"] == expected
    assert "pcap_key" not in doc["resource"]["aws_kms_key"]  # only the alarm topic's own key (stack/alarms.py)
    lookups = doc.get("data", {}).get("aws_kms_key", {})
    assert (lookups["pcap_key"]["key_id"] == named) if expected.startswith("${") else not lookups
