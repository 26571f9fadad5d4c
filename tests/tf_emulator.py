"""Real Terraform and the real hashicorp/aws provider, offline, for test_terraform.py.

Nothing here downloads anything: the provider comes from a local filesystem
mirror (found, never fetched), and "AWS" is moto listening on 127.0.0.1.

- `find_terraform()`, `find_aws_mirror()`: what this machine carries, or why not.
- `Terraform`: runs the binary with a CLI configuration that installs
  hashicorp/aws from the mirror only (direct installation excluded).
- `working_copy()`: a synthesized stack copied to a scratch directory, with an
  `override.tf.json` for what the test changes (provider pin, backend,
  endpoints); the synthesized `cdk.tf.json` itself is never edited.
- `schema_differences()`: tells "the mirror's provider is older than the pin and
  lacks this argument" from a real defect in the synthesized stack.
- `emulator()`: moto's own ThreadedMotoServer on 127.0.0.1 (moto[server]).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PROVIDER = "registry.terraform.io/hashicorp/aws"
MIN_TERRAFORM = (1, 10)  # cdktf.json targetVersions: S3 native locking (use_lockfile)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def os_arch() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{platform.system().lower()}_{arch}"


# ---------------------------------------------------------------------------
# What the machine carries


def find_terraform() -> tuple[str | None, str]:
    """(path, version) of a usable terraform binary, or (None, why not)."""
    path = shutil.which("terraform")
    if not path:
        return None, "no `terraform` binary on PATH"
    r = subprocess.run([path, "version", "-json"], capture_output=True, text=True,
                       env={**clean_env(), "TF_CLI_CONFIG_FILE": os.devnull})
    try:
        version = json.loads(r.stdout)["terraform_version"]
    except (ValueError, KeyError):
        return None, f"`{path} version -json` did not answer: {r.stderr.strip() or r.stdout.strip()}"
    if _version(version) < MIN_TERRAFORM:
        return None, f"terraform {version} at {path} is older than {'.'.join(map(str, MIN_TERRAFORM))} (cdktf.json targetVersions)"
    return path, version


def plugin_dirs() -> list[Path]:
    """Where a hashicorp/aws mirror may be: $MIRRORCAP_TF_PLUGIN_DIRS (colon-separated),
    /opt/tf-plugins, then Terraform's own implied local mirror directories on Unix."""
    extra = [Path(p) for p in os.environ.get("MIRRORCAP_TF_PLUGIN_DIRS", "").split(os.pathsep) if p]
    home = Path.home()
    xdg_data = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    xdg_dirs = os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    implied = [home / ".terraform.d" / "plugins", Path(xdg_data) / "terraform" / "plugins",
               *(Path(d) / "terraform" / "plugins" for d in xdg_dirs.split(":") if d)]
    return [*extra, Path("/opt/tf-plugins"), *implied]


@dataclass(frozen=True)
class Mirror:
    root: Path  # the filesystem_mirror path (holds registry.terraform.io/...)
    version: str
    packed: bool  # zip archives (Terraform unpacks them) rather than unpacked directories


def find_aws_mirror() -> tuple[Mirror | None, str]:
    """The newest hashicorp/aws for this platform in a local filesystem mirror, or (None, where we looked)."""
    plat = os_arch()
    found: list[Mirror] = []
    for root in plugin_dirs():
        base = root / PROVIDER
        if not base.is_dir():
            continue
        for d in base.iterdir():  # unpacked layout: <version>/<os_arch>/terraform-provider-aws_*
            if d.is_dir() and re.fullmatch(r"\d+\.\d+\.\d+", d.name) and any((d / plat).glob("terraform-provider-aws*")):
                found.append(Mirror(root, d.name, packed=False))
        for z in base.glob(f"terraform-provider-aws_*_{plat}.zip"):  # packed layout
            m = re.fullmatch(rf"terraform-provider-aws_(\d+\.\d+\.\d+)_{plat}\.zip", z.name)
            if m:
                found.append(Mirror(root, m.group(1), packed=True))
    if not found:
        where = ", ".join(str(p) for p in plugin_dirs())
        return None, f"no local filesystem mirror of hashicorp/aws for {plat} (looked in {where}); the suite never downloads one"
    return max(found, key=lambda m: (_version(m.version), not m.packed)), ""


# ---------------------------------------------------------------------------
# Running Terraform


def clean_env() -> dict[str, str]:
    """The caller's environment minus everything that would steer Terraform or the AWS SDK elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_", "AWS_")) and k not in ("CHECKPOINT_DISABLE",)}
    env.update({"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
                # no profile, shared credentials or instance metadata: only what an override file gives
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"})
    return env


@dataclass
class Terraform:
    binary: str
    mirror: Mirror
    home: Path  # holds the CLI configuration (and the plugin cache, for a packed mirror)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cache = ""
        if self.mirror.packed:  # unpack the 700 MB provider once, not once per stack
            (self.home / "plugin-cache").mkdir(exist_ok=True)
            cache = f'plugin_cache_dir = "{self.home / "plugin-cache"}"\n'
        self.config = self.home / "terraform.tfrc"
        self.config.write_text(cache + f'''provider_installation {{
  filesystem_mirror {{
    path    = "{self.mirror.root}"
    include = ["{PROVIDER}"]
  }}
  direct {{
    exclude = ["registry.terraform.io/*/*"]
  }}
}}
''')

    def env(self) -> dict[str, str]:
        return {**clean_env(), "TF_CLI_CONFIG_FILE": str(self.config), **self.extra_env}

    def run(self, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, *args], cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=timeout)

    def ok(self, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        r = self.run(cwd, *args, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} failed in {cwd} (exit {r.returncode}):\n{r.stderr}\n{r.stdout[-4000:]}")
        return r

    def show_json(self, cwd: Path, planfile: str | None = None) -> dict:
        return json.loads(self.ok(cwd, "show", "-json", *([planfile] if planfile else [])).stdout)


def pinned_aws_version(doc: dict) -> str | None:
    return doc.get("terraform", {}).get("required_providers", {}).get("aws", {}).get("version")


def working_copy(stack_dir: Path, dest: Path, override: dict) -> Path:
    """The stack as Terraform reads it (cdk.tf.json + its assets), plus `override.tf.json`.

    A review copy `cdk.tf` beside it (where the review HCL was once written) is
    left out: the same configuration in HCL, which Terraform would load twice.
    """
    shutil.copytree(stack_dir, dest, ignore=shutil.ignore_patterns("cdk.tf", ".terraform", "*.tfstate*", "metadata.json"),
                    dirs_exist_ok=True)
    (dest / "override.tf.json").write_text(json.dumps(override, indent=2))
    return dest


def pin_override(mirror: Mirror) -> dict:
    """Pin hashicorp/aws to the version actually tested (override files merge required_providers per provider)."""
    return {"terraform": {"required_providers": {"aws": {"source": "hashicorp/aws", "version": mirror.version}}}}


# ---------------------------------------------------------------------------
# Schema differences versus defects

# What Terraform says when the schema lacks a name (HCL syntax, then JSON syntax -- cdk.tf.json).
SCHEMA_SUMMARIES = {"Unsupported argument", "Unsupported block type", "Extraneous JSON object property",
                    "Invalid resource type", "Invalid data source"}


def _binding_knows(name: str, types: set[str]) -> bool:
    """Does the prebuilt binding, generated from the pinned provider's schema, know `name`
    (an argument or block of one of `types` -- "resource.aws_x" / "data.aws_x" --, or a resource/data source type)?"""
    import importlib.util
    spec = importlib.util.find_spec("cdktn_provider_aws")  # located, not imported (that would start jsii)
    if spec is None or not spec.submodule_search_locations:
        return False
    base = Path(next(iter(spec.submodule_search_locations)))
    if name.startswith("aws_") and ((base / name.removeprefix("aws_")).is_dir() or (base / f"data_{name}").is_dir()):
        return True
    for t in types:
        kind, _, rtype = t.partition(".")
        module = base / (f"data_{rtype}" if kind == "data" else rtype.removeprefix("aws_")) / "__init__.py"
        if module.is_file() and f'"{name}"' in module.read_text():
            return True
    return False


def _named(diag: dict) -> str | None:
    m = re.search(r'named "([^"]+)"|resource type "([^"]+)"|data source "([^"]+)"',
                  diag.get("detail", "") + " " + diag.get("summary", ""))
    return next((g for g in m.groups() if g), None) if m else None


def schema_differences(diagnostics: list[dict], doc: dict, tested: str) -> tuple[list[str], list[str]]:
    """Split `terraform validate -json` errors into (schema differences, real defects).

    A schema difference: the provider tested is older than the one the stack pins,
    and the offending name is one the pinned provider's schema has for that
    resource (the prebuilt cdktn-provider-aws binding is generated from it).
    Everything else is a defect. Each entry quotes Terraform's own error.
    """
    pinned = pinned_aws_version(doc)
    older = pinned is not None and _version(tested) < _version(pinned)
    everywhere = {f"resource.{t}" for t in doc.get("resource", {})} | {f"data.{t}" for t in doc.get("data", {})}
    diffs, defects = [], []
    for d in diagnostics:
        if d.get("severity") != "error":
            continue
        context = (d.get("snippet") or {}).get("context") or ""
        rng = d.get("range") or {}
        where = f"{Path(rng['filename']).name} {context}".strip() if rng.get("filename") else context
        text = f"Error: {d.get('summary')}: {d.get('detail', '')}".strip() + (f" [{where}]" if where else "")
        name = _named(d)
        m = re.match(r"((?:resource|data)\.aws_[a-z0-9_]+)", context)
        types = {m.group(1)} if m else everywhere
        if older and d.get("summary") in SCHEMA_SUMMARIES and name and _binding_knows(name, types):
            diffs.append(f"hashicorp/aws {tested} (the local mirror) lacks `{name}`, which the pinned {pinned} has: "
                         f"schema difference, not a defect -- {text}")
        else:
            defects.append(text)
    return diffs, defects


# ---------------------------------------------------------------------------
# The AWS emulator


@dataclass
class Emulator:
    url: str
    kind: str  # which server answered, for skip/report messages

    def client(self, service: str, region: str):
        import boto3
        return boto3.client(service, region_name=region, endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing")


def _monitor_instances(self):
    """EC2 MonitorInstances, which moto 5.2 leaves unimplemented (NotImplementedError, an HTTP 500
    the AWS SDK retries for minutes). The provider calls it after RunInstances for `monitoring = true`."""
    from moto.core.responses import ActionResult
    self.error_on_dryrun()
    ids = self._get_param("InstanceIds", [])
    for i in ids:
        self.ec2_backend.get_instance(i).monitoring_state = "enabled"
    return ActionResult({"InstanceMonitorings": [{"InstanceId": i, "Monitoring": {"State": "enabled"}} for i in ids]})


def _delete_traffic_mirror(kind: str):
    """EC2 DeleteTrafficMirrorFilter / DeleteTrafficMirrorTarget, which moto 5.2 leaves unimplemented
    (the provider retries the HTTP 500 for minutes): the object goes, with its tags, as a session does."""
    def delete(self):
        from moto.core.responses import ActionResult
        self.error_on_dryrun()
        key = f"TrafficMirror{kind.capitalize()}Id"
        ident = self._get_param(key)
        gone = getattr(self.ec2_backend, f"traffic_mirror_{kind}s").pop(ident, None)
        if gone is not None:
            self.ec2_backend.tagger.delete_all_tags_for_resource(gone.arn)
        return ActionResult({key: ident})
    return delete


def _unimplemented(cls, name: str) -> bool:
    import inspect
    current = getattr(cls, name, None)
    try:
        return current is None or "NotImplementedError" in inspect.getsource(current)
    except (OSError, TypeError):
        return True


def fill_moto_gaps(monkeypatch) -> list[str]:
    """Stand-ins for the moto actions the example's apply (and a destroy) needs and moto lacks; returns what
    was filled. (The server runs in this process, so a patched response class serves Terraform's requests.)"""
    from moto.ec2.responses.monitoring import Monitoring
    from moto.ec2.responses.traffic_mirrors import TrafficMirrors
    gaps = [(Monitoring, "monitor_instances", _monitor_instances, "EC2 MonitorInstances"),
            (TrafficMirrors, "delete_traffic_mirror_filter", _delete_traffic_mirror("filter"), "EC2 DeleteTrafficMirrorFilter"),
            (TrafficMirrors, "delete_traffic_mirror_target", _delete_traffic_mirror("target"), "EC2 DeleteTrafficMirrorTarget")]
    filled = []
    for cls, name, stand_in, what in gaps:
        if _unimplemented(cls, name):
            monkeypatch.setattr(cls, name, stand_in, raising=False)
            filled.append(what)
    return filled


def _deleter(kind: str):
    """EC2 DeleteTrafficMirror<kind>, which moto 5.2 leaves unimplemented (an HTTP 500 the SDK retries for minutes)."""
    def delete(self):
        from moto.core.responses import ActionResult
        self.error_on_dryrun()
        key = f"TrafficMirror{kind}Id"
        ident = self._get_param(key)
        getattr(self.ec2_backend, f"traffic_mirror_{kind.lower()}s").pop(ident)
        return ActionResult({key: ident})
    return delete


def fill_moto_delete_gaps(monkeypatch) -> list[str]:
    """Stand-ins for deleting a traffic mirror target and filter (a destroy's last steps), where moto lacks them."""
    from moto.ec2.responses.traffic_mirrors import TrafficMirrors
    filled = []
    for kind in ("Target", "Filter"):
        name = f"delete_traffic_mirror_{kind.lower()}"
        if getattr(TrafficMirrors, name, None) is None:
            monkeypatch.setattr(TrafficMirrors, name, _deleter(kind), raising=False)
            filled.append(f"EC2 DeleteTrafficMirror{kind}")
    return filled


def _start_instance_refresh(self):
    """Auto Scaling StartInstanceRefresh (moto 5.2 lacks it; the provider calls it when a fleet's launch template
    changes, and retries the HTTP 500 for ever): a refresh that is done at once."""
    from moto.core.responses import ActionResult
    import uuid
    refresh = str(uuid.uuid4())
    type(self)._mirrorcap_refreshes[refresh] = self._get_param("AutoScalingGroupName")
    return ActionResult({"InstanceRefreshId": refresh})


def _describe_instance_refreshes(self):
    from moto.core.responses import ActionResult
    group = self._get_param("AutoScalingGroupName")
    done = [{"InstanceRefreshId": r, "AutoScalingGroupName": g, "Status": "Successful", "PercentageComplete": 100}
            for r, g in getattr(type(self), "_mirrorcap_refreshes", {}).items() if g == group]
    return ActionResult({"InstanceRefreshes": done})


def fill_moto_refresh_gap(monkeypatch) -> list[str]:
    """Stand-ins for an Auto Scaling instance refresh, where moto lacks it."""
    from moto.autoscaling.responses import AutoScalingResponse
    if getattr(AutoScalingResponse, "start_instance_refresh", None) is not None:
        return []
    monkeypatch.setattr(AutoScalingResponse, "start_instance_refresh", _start_instance_refresh, raising=False)
    monkeypatch.setattr(AutoScalingResponse, "describe_instance_refreshes", _describe_instance_refreshes, raising=False)
    monkeypatch.setattr(AutoScalingResponse, "_mirrorcap_refreshes", {}, raising=False)
    return ["Auto Scaling StartInstanceRefresh, DescribeInstanceRefreshes"]


def fill_moto_tag_gaps(monkeypatch) -> list[str]:
    """moto 5.2 names traffic mirror filters and targets traf-mir-fil-/traf-mir-tar-, then reads the part before the
    first dash as the kind when tagging one (CreateTags, DeleteTags: InvalidID): the kind read from the whole prefix."""
    import moto.ec2.models as models
    import moto.ec2.models.tags as tags
    import moto.ec2.utils as utils
    original = utils.get_prefix
    ours = tuple(utils.EC2_RESOURCE_TO_PREFIX[k] + "-" for k in ("traffic-mirror-filter", "traffic-mirror-target"))
    if original("traf-mir-fil-0") is not None:
        return []

    def get_prefix(resource_id: str) -> str:
        return resource_id[:12] if resource_id.startswith(ours) else original(resource_id)
    for module in (utils, models, tags):
        monkeypatch.setattr(module, "get_prefix", get_prefix)
    return ["EC2 tags on traffic mirror filters and targets"]


@contextmanager
def emulator():
    """moto in server mode on 127.0.0.1 (moto[server], a dev dependency), with the
    AWS-managed IAM policies loaded (AmazonSSMManagedInstanceCore).

    The caller sets MOTO_IAM_LOAD_MANAGED_POLICIES=true (monkeypatch) before entering:
    the server runs in this process and reads it when the IAM backend is made.
    """
    import logging

    from moto.moto_api._internal.models import moto_api_backend
    from moto.server import ThreadedMotoServer
    werkzeug_log = logging.getLogger("werkzeug")  # the threaded server logs every request at INFO
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    moto_api_backend.reset()  # a fresh account, built with the managed policies
    try:
        host, port = server.get_host_and_port()
        yield Emulator(f"http://{host}:{port}", "moto ThreadedMotoServer")
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


# Endpoint arguments of the provider's `endpoints` block, canonical names (aliases conflict).
ENDPOINT_SERVICES = ("ec2", "iam", "sts", "ssm", "lambda", "events", "logs", "kms", "s3", "sns", "cloudwatch")


def emulator_override(mirror: Mirror, url: str) -> dict:
    """Pin the provider tested, keep state local, and point every endpoint at the emulator with fake credentials."""
    over = pin_override(mirror)
    over["terraform"]["backend"] = {"local": {"path": "terraform.tfstate"}}
    over["provider"] = {"aws": {
        "access_key": "testing", "secret_key": "testing",
        "skip_credentials_validation": True, "skip_metadata_api_check": True, "skip_region_validation": True,
        "s3_use_path_style": True,
        "endpoints": [{s: url for s in ENDPOINT_SERVICES}],
    }}
    return over


# Inventory IDs the emulator stands in for (example IDs are placeholders).
MOTO_ID = re.compile(r"\b(?:vpc|subnet|sg|i|eni|ami)-[0-9a-f]{8,17}\b")


def moto_account(em: Emulator, capture) -> dict[str, str]:
    """The capture's VPC, subnet, security groups and sources made in moto: {inventory ID: moto ID}."""
    ec2, ssm = em.client("ec2", capture.region), em.client("ssm", capture.region)
    ami = ssm.get_parameter(Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.16.0/20", AvailabilityZone=f"{capture.region}a")["Subnet"]["SubnetId"]
    ids = {capture.vpc_id: vpc, capture.subnet_id: subnet}
    if capture.ami:
        ids[capture.ami] = ami
    for n, sg in enumerate(capture.network.mirror_source_security_group_ids):
        ids[sg] = ec2.create_security_group(GroupName=f"source-{n}", Description="mirrored tier", VpcId=vpc)["GroupId"]
    for s in capture.sources:
        if s.is_instance:
            ids[s.id] = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.small",
                                          SubnetId=subnet)["Instances"][0]["InstanceId"]
        else:
            ids[s.id] = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    return ids
