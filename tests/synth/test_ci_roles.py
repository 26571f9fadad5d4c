"""The CI roles (`make ci-roles`) allow what Terraform calls, and little else: proven on the calls
themselves. One inventory holds the example capture and the fleet fixture (an NLB, an Auto Scaling
group, the archive and Athena, the re-mirroring Lambda), each with S3 state, in moto (tf_emulator).
Each stack goes through what the workflows run, every request recorded by moto's recorder:

  plan     `plan -lock=false` (the pull request's plan, plan role)
  apply    `apply` of that saved plan (the merge, apply role)
  refresh  `plan -lock=false` again (the next pull request, the daily drift check: plan role)
  change   a tag's value and a removed source, applied (apply role)
  destroy  `apply -destroy` (a removed capture, apply role)
  check    `mirrorcap check` (the drift check's own reads, plan role)

and the roles stack, synthesized by `mirrorcap ci-roles` from that inventory's synthesized stacks,
is applied to the same moto. Every recorded request is mapped to its IAM action and resource
(tests/iam_calls.py) and evaluated against the policies as IAM stored them (tests/iam_policy.py).

moto gaps: traffic mirror filter rules do not exist there (every plan is -target'ed past them,
their actions stay unproven: NOT_RECORDED); EC2 MonitorInstances, DeleteTrafficMirrorTarget
and DeleteTrafficMirrorFilter, an Auto Scaling instance refresh, are stood in for, and tagging a mirror target or filter fixed (tf_emulator); the pcap data's prevent_destroy is
lifted in the working copy so that the destroy runs to the end.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import requests

import iam_calls
import tf_emulator as T
from helpers import BIN, EXAMPLE, FIXTURES, ROOT, env, mirrorcap, synth
from iam_policy import actions_of, allows
from mirrorcap.inventory import load

TERRAFORM, TERRAFORM_VERSION = T.find_terraform()
MIRROR, NO_MIRROR = T.find_aws_mirror()

pytestmark = [
    pytest.mark.skipif(TERRAFORM is None, reason=f"needs terraform: {TERRAFORM_VERSION}"),
    pytest.mark.skipif(MIRROR is None, reason=f"needs the hashicorp/aws provider: {NO_MIRROR}"),
]

ACCOUNT = "123456789012"  # moto's
BUCKET = "example-terraform-state"  # the example's backend "s3" bucket; the fleet's state goes there too
REPOSITORY = "acme/network"
PLAN_PHASES, APPLY_PHASES = ("plan", "refresh", "check"), ("apply", "change", "destroy")
MOTO_INSTANCE_DRIFT = ["associate_public_ip_address", "vpc_security_group_ids"]

# Allowed although no recorded run called them (least privilege: anything else unrecorded fails).
NOT_RECORDED = {
    # IAM checks these with no call of their own: RunInstances and a launch template hand the host's role to
    # EC2, CreateFunction the Lambda's; EBS uses the caller's rights on the volume key (a grant, a data key).
    "iam:PassRole", "kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt",
    # moto has no traffic mirror filter rules (every run here is -target'ed past them).
    "ec2:CreateTrafficMirrorFilterRule", "ec2:ModifyTrafficMirrorFilterRule", "ec2:DeleteTrafficMirrorFilterRule",
    # Changed only when mirrorcap itself changes (an upgrade): the Lambda's code, the Athena workgroup's
    # settings, the index table's schema; no run here changes mirrorcap.
    "lambda:UpdateFunctionCode", "athena:UpdateWorkGroup", "glue:UpdateTable",
}
# What a read-only role may be allowed: the provider's identity lookup and reads.
READ_ONLY = re.compile(r"[a-z0-9-]+:(Describe|Get|List)[A-Za-z]*|sts:GetCallerIdentity")


def _moto_ids(text: str, ids: dict[str, str]) -> str:
    return T.MOTO_ID.sub(lambda m: ids.get(m.group(0), m.group(0)), text)


def inventory_text(em: T.Emulator) -> tuple[str, dict]:
    """The example and the fleet as one inventory, their IDs made in moto; and the example's lock."""
    from test_fleet_terraform import fleet_account
    prod = load(EXAMPLE).captures[0]
    ids = T.moto_account(em, prod)
    fleet_text = (FIXTURES / "fleet.hcl").read_text()
    fleet_text = fleet_text[:fleet_text.index("# A single host that archives")].rstrip()
    assert fleet_text.endswith("}")
    fleet_text = fleet_text[:-1] + f'  backend "s3" {{\n    bucket = "{BUCKET}"\n    region = "{prod.region}"\n  }}\n}}\n'
    fleet_ids = fleet_account(em, load(FIXTURES / "fleet.hcl").capture("fleet"))
    lock = json.loads((ROOT / "capture.lock.json").read_text())
    lock["captures"] = {c: {ids[s]: n for s, n in by.items()} for c, by in lock["captures"].items()}
    return _moto_ids(EXAMPLE.read_text(), ids) + "\n" + _moto_ids(fleet_text, fleet_ids), lock


class Recorder:
    """moto's request recorder, phase by phase."""

    def __init__(self, em: T.Emulator):
        self.url = em.url
        self.calls: dict[str, list[iam_calls.Call]] = defaultdict(list)

    def __call__(self, phase: str, run):
        requests.post(f"{self.url}/moto-api/recorder/reset-recording", timeout=10)
        requests.post(f"{self.url}/moto-api/recorder/start-recording", timeout=10)
        try:
            return run()
        finally:
            requests.post(f"{self.url}/moto-api/recorder/stop-recording", timeout=10)
            recording = requests.get(f"{self.url}/moto-api/recorder/download-recording", timeout=30).text
            self.calls[phase] += iam_calls.calls_of(recording, ACCOUNT)


def working_copy(stack: Path, dest: Path, url: str) -> tuple[Path, list[str]]:
    """The stack against moto, its S3 backend included; the pcap data destroyable; and its -target list."""
    doc = json.loads((stack / "cdk.tf.json").read_text())
    override = T.emulator_override(MIRROR, url)
    # As in CI: the provider checks its credentials with STS (the workflows never skip it).
    del override["provider"]["aws"]["skip_credentials_validation"]
    override["provider"]["aws"]["endpoints"][0].update({s: url for s in ("elbv2", "autoscaling", "glue", "athena")})
    override["terraform"]["backend"] = {"s3": {
        **doc["terraform"]["backend"]["s3"], "endpoints": {"s3": url, "sts": url}, "use_path_style": True,
        "access_key": "testing", "secret_key": "testing", "skip_credentials_validation": True,
        "skip_requesting_account_id": True, "skip_metadata_api_check": True, "skip_region_validation": True}}
    resources: dict = {}
    for rtype, named in doc["resource"].items():
        for name, body in named.items():
            if body.get("lifecycle", {}).get("prevent_destroy"):
                resources.setdefault(rtype, {})[name] = {"lifecycle": {"prevent_destroy": False}}
    host = doc["resource"].get("aws_instance", {}).get("capture_instance")
    if host:  # moto reports a public IP and no security groups on the instance (test_terraform.py)
        resources.setdefault("aws_instance", {})["capture_instance"] = {
            "lifecycle": {"ignore_changes": [*host.get("lifecycle", {}).get("ignore_changes", []), *MOTO_INSTANCE_DRIFT]}}
    if resources:
        override["resource"] = resources
    T.working_copy(stack, dest, override)
    targets = [f"-target={t}.{n}" for t, named in doc["resource"].items() if t != "aws_ec2_traffic_mirror_filter_rule" for n in named]
    return dest, targets


def changed(text: str) -> str:
    """A tag's value changed (the example) or added (the fleet) on every resource (provider default_tags), a
    session's description changed, and one source removed from each capture."""
    out = text.replace('Team    = "sre"', 'Team    = "netops"').replace('description = "web-1"', 'description = "web-1, canary"')
    out = out.replace("  vni           = 4242\n", '  vni           = 4242\n  tags          = { Team = "netops" }\n')
    out = re.sub(r'  source \{\n    eni_id      = "eni-[0-9a-f]+"\n    description = "web-2"\n  \}\n', "", out, count=1)
    out = re.sub(r'  source \{\n    eni_id = "eni-[0-9a-f]+"\n  \}\n', "", out, count=1)
    assert out.count("source {") == text.count("source {") - 2 and out.count("netops") == 2 and "canary" in out
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    base = tmp_path_factory.mktemp("ci-roles")
    tf = T.Terraform(TERRAFORM, MIRROR, base / "tf-home")
    from moto.moto_api import recorder
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        filled = T.fill_moto_gaps(mp) + T.fill_moto_delete_gaps(mp) + T.fill_moto_tag_gaps(mp) + T.fill_moto_refresh_gap(mp)
        mp.setattr(recorder, "_location", str(base / "moto-recording"))  # not the test's working directory
        # moto appends each request in text mode from the server's request threads: an entry over the 8 KiB
        # buffer goes out in several writes, and Terraform's parallel requests interleaved two (a torn line).
        entry_lock, record = threading.Lock(), recorder._record_request

        def record_whole(*args, **kwargs):
            with entry_lock:
                return record(*args, **kwargs)
        mp.setattr(recorder, "_record_request", record_whole)
        with T.emulator() as em:
            print(f"emulator: {em.url}; moto gaps filled: {', '.join(filled) or 'none'}")
            rec = Recorder(em)
            inv = base / "inventory"
            inv.mkdir()
            text, lock = inventory_text(em)
            (inv / "capture.hcl").write_text(text)
            (inv / "capture.lock.json").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
            assert mirrorcap("sessions", "--write", cwd=inv).returncode == 0
            r = synth(inv, review_hcl=False)
            assert r.returncode == 0, r.stderr
            em.client("s3", "ap-northeast-1").create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"})
            stacks = {name: working_copy(inv / "cdktf.out" / "stacks" / name, base / f"wc-{name}", em.url) for name in ("prod", "fleet")}

            # The roles, from this inventory's synthesized stacks, applied with the admin's (moto's) credentials.
            roles = mirrorcap("ci-roles", "--repository", REPOSITORY, "--out", str(base / "roles"), cwd=inv)
            assert roles.returncode == 0, roles.stderr
            roles_dir = Path(roles.stdout.strip().splitlines()[-1])
            roles_dir = roles_dir if roles_dir.is_absolute() else inv / roles_dir
            roles_wc, _ = working_copy(roles_dir, base / "wc-roles", em.url)
            tf.ok(roles_wc, "init", "-input=false", "-no-color")
            tf.ok(roles_wc, "apply", "-input=false", "-no-color", "-auto-approve", timeout=300)
            iam = em.client("iam", "us-east-1")
            policies = {role: json.loads(json.dumps(iam.get_role_policy(RoleName=f"mirrorcap-{role}", PolicyName=f"mirrorcap-{role}")
                                                    ["PolicyDocument"])) for role in ("plan", "apply")}
            trusts = {role: iam.get_role(RoleName=f"mirrorcap-{role}")["Role"]["AssumeRolePolicyDocument"] for role in ("plan", "apply")}
            providers = [iam.get_open_id_connect_provider(OpenIDConnectProviderArn=p["Arn"])
                         for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]

            for name, (wc, targets) in stacks.items():
                tf.ok(wc, "init", "-input=false", "-no-color")
                rec("plan", lambda: tf.ok(wc, "plan", "-input=false", "-no-color", "-lock=false", "-out=tfplan", *targets, timeout=300))
                rec("apply", lambda: tf.ok(wc, "apply", "-input=false", "-no-color", "tfplan", timeout=600))
                rec("refresh", lambda: tf.run(wc, "plan", "-input=false", "-no-color", "-lock=false", *targets, timeout=300))
            check_env = {**env(), "AWS_ENDPOINT_URL": em.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                         "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
            checked = rec("check", lambda: subprocess.run([str(BIN / "mirrorcap"), "check", "--json"],
                                                          cwd=inv, env=check_env, capture_output=True, text=True, timeout=300))
            (inv / "capture.hcl").write_text(changed(text))
            assert mirrorcap("sessions", "--write", cwd=inv).returncode == 0
            r = synth(inv, review_hcl=False)
            assert r.returncode == 0, r.stderr
            for name in stacks:
                wc, targets = working_copy(inv / "cdktf.out" / "stacks" / name, base / f"wc-{name}", em.url)
                rec("change", lambda: tf.ok(wc, "apply", "-input=false", "-no-color", "-auto-approve", *targets, timeout=600))
                rec("destroy", lambda: tf.ok(wc, "apply", "-destroy", "-input=false", "-no-color", "-auto-approve", *targets, timeout=600))
    for phase, calls in rec.calls.items():
        print(f"{phase}: {len(calls)} requests, {len({c.action for c in calls})} actions")
    (base / "calls.json").write_text(json.dumps({p: [[c.action, c.resource, c.context] for c in cs] for p, cs in rec.calls.items()}))
    (base / "policies.json").write_text(json.dumps(policies))
    return {"calls": rec.calls, "policies": policies, "trusts": trusts, "providers": providers, "check": checked,
            "roles_doc": json.loads((roles_dir / "cdk.tf.json").read_text())}


def _denied(policy: dict, calls: list) -> list[str]:
    return sorted({str(c) for c in calls if not allows(policy, c)})


def test_the_plan_role_allows_every_call_of_a_plan_a_refresh_and_the_drift_check(recorded):
    assert recorded["check"].returncode in (0, 1), recorded["check"].stderr  # ran to a verdict (findings or none)
    calls = [c for phase in PLAN_PHASES for c in recorded["calls"][phase]]
    assert len(calls) > 100
    denied = _denied(recorded["policies"]["plan"], calls)
    assert not denied, "the plan role denies:\n" + "\n".join(denied)


def test_the_apply_role_allows_every_call_of_an_apply_a_change_and_a_destroy(recorded):
    calls = [c for phase in APPLY_PHASES for c in recorded["calls"][phase]]
    assert {"ec2:RunInstances", "ec2:DeleteTrafficMirrorSession", "ec2:TerminateInstances", "s3:PutObject"} <= {c.action for c in calls}
    denied = _denied(recorded["policies"]["apply"], calls)
    assert not denied, "the apply role denies:\n" + "\n".join(denied)


def test_the_plan_role_changes_nothing(recorded):
    plan = recorded["policies"]["plan"]
    assert sorted(a for a in actions_of(plan) if not READ_ONLY.fullmatch(a)) == []
    # and a plan with -lock=false wrote nothing: no call it made changes anything
    made = {c.action for phase in PLAN_PHASES for c in recorded["calls"][phase]}
    assert sorted(a for a in made if not READ_ONLY.fullmatch(a)) == []
    # the state: read, never written
    assert not allows(plan, iam_calls.Call("s3:PutObject", f"arn:aws:s3:::{BUCKET}/mirrorcap/prod.tfstate"))
    assert allows(plan, iam_calls.Call("s3:GetObject", f"arn:aws:s3:::{BUCKET}/mirrorcap/prod.tfstate"))


def test_the_policies_allow_nothing_terraform_never_called(recorded):
    calls = recorded["calls"]
    extra = []
    for role, phases in (("plan", PLAN_PHASES), ("apply", PLAN_PHASES + APPLY_PHASES)):
        made = {c.action for phase in phases for c in calls[phase]}
        extra += [f"{role}: {a}" for a in sorted(actions_of(recorded["policies"][role]) - made - NOT_RECORDED)]
    assert not extra, "allowed, and no recorded run called it:\n" + "\n".join(extra)
    stale = NOT_RECORDED & {c.action for cs in calls.values() for c in cs}
    assert stale == set(), "recorded after all: drop them from NOT_RECORDED"


def test_the_apply_role_reaches_only_the_captures_iam_and_never_the_ci_roles(recorded):
    apply = recorded["policies"]["apply"]
    role = f"arn:aws:iam::{ACCOUNT}:role/"
    assert allows(apply, iam_calls.Call("iam:PutRolePolicy", role + "mirrorcap-prod-host"))
    assert not allows(apply, iam_calls.Call("iam:PutRolePolicy", role + "admin"))
    for ci in ("mirrorcap-apply", "mirrorcap-plan"):
        assert not allows(apply, iam_calls.Call("iam:PutRolePolicy", role + ci))
        assert not allows(apply, iam_calls.Call("iam:UpdateAssumeRolePolicy", role + ci))


def test_the_roles_trust_github_for_this_repository_only(recorded):
    (provider,) = recorded["providers"]
    assert provider["Url"].removeprefix("https://") == "token.actions.githubusercontent.com"
    assert provider["ClientIDList"] == ["sts.amazonaws.com"]
    for role, test, subjects in (
            ("plan", "StringLike", [f"repo:{REPOSITORY}:pull_request", f"repo:{REPOSITORY}:ref:refs/heads/main",
                                    f"repo:{REPOSITORY}:ref:refs/heads/gh-readonly-queue/main/*"]),
            ("apply", "StringEquals", [f"repo:{REPOSITORY}:ref:refs/heads/main"])):
        (statement,) = recorded["trusts"][role]["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
        cond = statement["Condition"]
        assert cond["StringEquals"]["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
        sub = cond[test]["token.actions.githubusercontent.com:sub"]
        assert sorted([sub] if isinstance(sub, str) else sub) == sorted(subjects), role
