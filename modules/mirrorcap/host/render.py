"""The host bootstrap (scripts/) for one capture, and the tree in rendered/.

The host's scripts are plain files that read /etc/mirrorcap/mirrorcap.env; Jinja
renders only what must carry a value: the env file (written by the user data),
the user data, bake.sh, and the two units whose directives systemd cannot fill
from a variable (the capture directory and the capture identity).
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass

import jinja2

from .. import aws_limits as L
from .. import contract, project
from ..backlog import archive_backlog_seconds
from ..inventory.model import Capture, Inventory
from ..errors import MirrorcapError, Problem
from ..stack.literal import escape as template_escape

TERMSHARK_VERSION = "v2.4.0"
# Placeholders in rendered/ where Terraform supplies the real IDs in user data.
VOLUME_PLACEHOLDER = "REPLACE-with-pcap_volume_id-output"
ENI_PLACEHOLDER = "REPLACE-with-mirror_eni_id-output"
ARCHIVE_BUCKET_PLACEHOLDER = "REPLACE-with-archive_bucket-output"  # only in captures with `archive {}`


@dataclass(frozen=True)
class HostFile:
    path: str  # absolute path on the host
    content: str
    mode: str

    @property
    def directory(self) -> str:
        return self.path.rsplit("/", 1)[0]

    @property
    def marker(self) -> str:
        return "MIRRORCAP_" + "".join(c if c.isalnum() else "_" for c in self.path.upper()).strip("_")


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    # One environment per process: it caches compiled templates (compiling them
    # again for every capture cost 70 ms each, 7 s for 100 captures).
    # StrictUndefined: a typo in a template fails the render instead of
    # silently producing an empty value on a production host.
    # Comment delimiters moved: bash's ${#array[@]} would open a Jinja comment.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(project.scripts_dir())), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False,
                              comment_start_string="<%#", comment_end_string="#%>")


def _context(capture: Capture) -> dict:
    return {"capture": capture, "host": capture.host, "capture_user": contract.CAPTURE_USER,
            "capture_group": contract.CAPTURE_GROUP, "vxlan_port": L.VXLAN_PORT, "vxlan_overhead": L.VXLAN_OVERHEAD_BYTES,
            "pcap_pattern": contract.PCAP_PATTERN, "termshark_version": TERMSHARK_VERSION,
            "archive_key": contract.ARCHIVE_KEY, "archive_index_key": contract.ARCHIVE_INDEX_KEY,
            "fleet_volume_device": contract.FLEET_VOLUME_DEVICE,
            "health_port": contract.HEALTH_PORT, "archive_backlog_seconds": archive_backlog_seconds(capture),
            "mirror_mtu": L.MIRROR_TARGET_MTU, "retention_command": retention_command(capture),
            "env_path": contract.ENV_FILE, "bootstrap_lock": contract.BOOTSTRAP_LOCK, "env_dir": contract.ENV_FILE.rsplit("/", 1)[0], "vxlan_iface": contract.VXLAN_IFACE,
            "fleet_group": contract.resource_name(capture.name, contract.FLEET), "metrics": METRICS}


# What mirrorcap-metrics publishes, named once in the contract (the env file carries it to the host).
METRICS = {"namespace": contract.METRICS_NAMESPACE,
           "names": (contract.METRIC_CAPTURING, contract.METRIC_PACKETS_LOST, contract.METRIC_DISK_FREE,
                     contract.METRIC_ARCHIVE_BACKLOG),
           "dimensions": (contract.DIM_CAPTURE, contract.DIM_VNI, contract.DIM_INSTANCE, contract.DIM_FLEET)}


def retention_command(capture: Capture) -> str:
    """What deletes pcaps: the retention unit runs it every minute, and the capture when
    the volume is full. A capture that archives deletes only what S3 confirmed."""
    return f"{contract.LIBEXEC}/archive retention" if capture.archive is not None else f"{contract.LIBEXEC}/retention"


UNITS = "/etc/systemd/system"
# scripts/host/<source> -> where the host has it (and its mode); a .j2 source is rendered.
HOST_FILES = (
    ("mirrorcap_host.py", f"{contract.HOST_LIB}/mirrorcap_host.py", "0644"),  # shared by the Python scripts
    ("mirrorcap_index.py", f"{contract.HOST_LIB}/mirrorcap_index.py", "0644"),  # the capture runs it on each closed pcap
    ("mirrorcap_query.py", f"{contract.HOST_LIB}/mirrorcap_query.py", "0644"),  # what a query takes: mirrorcap-find's and the CLI's
    ("mirrorcap-lib.sh", f"{contract.HOST_LIB}/mirrorcap-lib.sh", "0644"),  # shared by the shell scripts
    ("mirrorcap-storage.sh", f"{contract.LIBEXEC}/storage", "0755"),
    ("mirrorcap-recover.sh", f"{contract.LIBEXEC}/recover", "0755"),  # remounts a volume whose file system shut down
    ("mirrorcap-decap.sh", f"{contract.LIBEXEC}/decap", "0755"),
    ("mirrorcap-capture.py", f"{contract.LIBEXEC}/capture", "0755"),
    ("mirrorcap-capture-backoff.sh", f"{contract.LIBEXEC}/capture-backoff", "0755"),  # a capture whose sandbox fails, later
    ("mirrorcap-retention.sh", f"{contract.LIBEXEC}/retention", "0755"),
    ("mirrorcap-boot.sh", "/usr/local/sbin/mirrorcap-boot", "0755"),
    ("mirrorcap-settings.py", f"{contract.LIBEXEC}/settings", "0755"),
    ("mirrorcap-health.py", "/usr/local/sbin/mirrorcap-health", "0755"),
    ("mirrorcap-window.py", "/usr/local/bin/mirrorcap-window", "0755"),
    ("mirrorcap-find.py", contract.FIND_COMMAND, "0755"),  # `mirrorcap find --capture` through Systems Manager
    ("mirrorcap.target", f"{UNITS}/mirrorcap.target", "0644"),
    ("mirrorcap-settings.service", f"{UNITS}/mirrorcap-settings.service", "0644"),
    ("mirrorcap-storage.service", f"{UNITS}/mirrorcap-storage.service", "0644"),
    ("mirrorcap-recover.service", f"{UNITS}/mirrorcap-recover.service", "0644"),
    ("mirrorcap-recover.path", f"{UNITS}/mirrorcap-recover.path", "0644"),
    ("mirrorcap-recover.timer", f"{UNITS}/mirrorcap-recover.timer", "0644"),
    ("mirrorcap-decap.service", f"{UNITS}/mirrorcap-decap.service", "0644"),
    ("mirrorcap-capture@.service.j2", f"{UNITS}/mirrorcap-capture@.service", "0644"),
    ("mirrorcap-capture-backoff@.service", f"{UNITS}/mirrorcap-capture-backoff@.service", "0644"),
    ("mirrorcap-retention.service.j2", f"{UNITS}/mirrorcap-retention.service", "0644"),
    ("mirrorcap-retention.timer", f"{UNITS}/mirrorcap-retention.timer", "0644"),
    # Health as CloudWatch metrics, every minute: the stack's alarms read them.
    ("mirrorcap-metrics.py", f"{contract.LIBEXEC}/metrics", "0755"),
    ("mirrorcap-metrics.service", f"{UNITS}/mirrorcap-metrics.service", "0644"),
    ("mirrorcap-metrics.timer", f"{UNITS}/mirrorcap-metrics.timer", "0644"),
    ("mirrorcap-metrics.conf", f"{UNITS}/mirrorcap.target.d/metrics.conf", "0644"),
)
# Only in a capture with `archive {}` (the others' user data stays as small as it was).
# Its retention is the archive's (deletes only what S3 confirmed): the shell one is not
# installed; its mirrorcap-health is the plain one (installed as a module) plus the archive's checks.
ARCHIVE_FILES = (
    ("mirrorcap-archive.py", f"{contract.LIBEXEC}/archive", "0755"),
    ("mirrorcap-health.py", f"{contract.HOST_LIB}/mirrorcap_health.py", "0644"),
    ("mirrorcap-archive-health.py", "/usr/local/sbin/mirrorcap-health", "0755"),
    ("mirrorcap-archive.service.j2", f"{UNITS}/mirrorcap-archive.service", "0644"),
    ("mirrorcap-archive.timer", f"{UNITS}/mirrorcap-archive.timer", "0644"),
    # The capture's target brings the archive's timer with it.
    ("mirrorcap-archive.conf", f"{UNITS}/mirrorcap.target.d/archive.conf", "0644"),
)
ARCHIVE_REPLACES = {"mirrorcap-retention.sh", "mirrorcap-health.py"}
# Only in a fleet (an NLB target): the NLB's health check. (Its pcap volume by device name
# and its primary ENI come from the env file: the same storage and decap scripts.)
FLEET_FILES = (
    ("mirrorcap-fleet.conf", f"{UNITS}/mirrorcap.target.d/fleet.conf", "0644"),
    ("mirrorcap-health-listener.py", f"{contract.LIBEXEC}/health-listener", "0755"),
    ("mirrorcap-health-listener.service", f"{UNITS}/mirrorcap-health-listener.service", "0644"),
    ("mirrorcap-health-probe.service", f"{UNITS}/mirrorcap-health-probe.service", "0644"),
    ("mirrorcap-health-probe.timer", f"{UNITS}/mirrorcap-health-probe.timer", "0644"),
)


# A capture's directory under rendered/: these three beside files/, which mirrors the host.
TOP_FILES = {"bake.sh": 0o755, "user-data.sh": 0o755, "mirrorcap.env": 0o644}


def render_paths() -> frozenset[str]:
    """Every path a render may write in a capture's directory, whatever the capture's kind
    (one host, archive, fleet): a capture that changes kind rewrites an earlier render of
    another layout, while a file no render writes is still someone's (host/tree.py)."""
    return frozenset(TOP_FILES) | {f"files{dest}" for _, dest, _ in HOST_FILES + ARCHIVE_FILES + FLEET_FILES}


def host_file_sources(capture: Capture) -> tuple[tuple[str, str, str], ...]:
    """(source in scripts/host, path on the host, mode) of every file this capture's hosts get."""
    files = HOST_FILES
    if capture.archive is not None:
        files = tuple(f for f in files if f[0] not in ARCHIVE_REPLACES) + ARCHIVE_FILES
    if capture.target_kind == "nlb":
        files += FLEET_FILES
    return files


def host_files(capture: Capture) -> list[HostFile]:
    env, ctx, scripts = environment(), _context(capture), project.scripts_dir() / "host"
    return [HostFile(dest, env.get_template(f"host/{src}").render(ctx) if src.endswith(".j2")
                     else (scripts / src).read_text(), mode) for src, dest, mode in host_file_sources(capture)]


def bake_script(capture: Capture, files: list[HostFile]) -> str:
    return environment().get_template("host/bake.sh.j2").render(files=files, **_context(capture))


def env_file(capture: Capture, volume_id: str, eni_id: str, archive_bucket: str = ARCHIVE_BUCKET_PLACEHOLDER) -> str:
    """`archive_bucket` is used only by a capture with `archive {}`."""
    return environment().get_template("mirrorcap.env.j2").render(volume_id=volume_id, eni_id=eni_id,
                                                                 archive_bucket=archive_bucket, **_context(capture))


def user_data(capture: Capture, volume_id: str, eni_id: str, archive_bucket: str = ARCHIVE_BUCKET_PLACEHOLDER) -> str:
    """What the baked AMI boots with: the instance's settings, then mirrorcap-boot."""
    env = env_file(capture, volume_id, eni_id, archive_bucket)
    return environment().get_template("user-data.sh.j2").render(env_file=env, **_context(capture))


# Terraform fills these in from templatefile(); everything else in the user data
# is escaped so Terraform passes bash's own ${...} through untouched.
# ${archive_bucket} only in a capture with `archive {}` (the stack passes it only then).
TEMPLATE_VARS = {"volume_id": "${volume_id}", "eni_id": "${eni_id}",
                 contract.ARCHIVE_BUCKET_VAR: "${%s}" % contract.ARCHIVE_BUCKET_VAR}
_SENTINEL = {"volume_id": "\x00MIRRORCAP_VOLUME_ID\x00", "eni_id": "\x00MIRRORCAP_ENI_ID\x00",
             contract.ARCHIVE_BUCKET_VAR: "\x00MIRRORCAP_ARCHIVE_BUCKET\x00"}
SAMPLE_BUCKET = "mirrorcap-archive-123456789012-eu-west-1-0123456789"  # a long real bucket name


def user_data_template(inventory: Inventory, capture: Capture) -> str:
    """The user data as a Terraform templatefile() template with ${volume_id} and ${eni_id}
    (and ${archive_bucket} when the capture archives)."""
    text = user_data(capture, _SENTINEL["volume_id"], _SENTINEL["eni_id"], _SENTINEL[contract.ARCHIVE_BUCKET_VAR])
    # Rendered once: the size check sees the same text with real-length IDs in place.
    check_user_data_size(inventory, capture, text.replace(_SENTINEL["volume_id"], SAMPLE_IDS[0])
                         .replace(_SENTINEL["eni_id"], SAMPLE_IDS[1])
                         .replace(_SENTINEL[contract.ARCHIVE_BUCKET_VAR], SAMPLE_BUCKET))
    text = template_escape(text)
    for name, sentinel in _SENTINEL.items():
        text = text.replace(sentinel, TEMPLATE_VARS[name])
    return text


def gzipped_size(text: str) -> int:
    # Level 6 and no timestamp: what Terraform's base64gzip() (Go's default level) produces, near enough.
    return len(gzip.compress(text.encode(), compresslevel=6, mtime=0))


SAMPLE_IDS = ("vol-0123456789abcdef0", "eni-0123456789abcdef0")  # real IDs are this long


def check_user_data_size(inventory: Inventory, capture: Capture, text: str | None = None) -> None:
    """`text`: the user data with real-length IDs, if already rendered."""
    size = gzipped_size(text if text is not None else user_data(capture, *SAMPLE_IDS, SAMPLE_BUCKET))
    if size > L.USER_DATA_MAX_BYTES:
        raise MirrorcapError([Problem(
            inventory.path, f'capture "{capture.name}" > ami',
            f"the user data is {size} bytes gzipped, over EC2's {L.USER_DATA_MAX_BYTES}-byte limit",
            f"bake an AMI with rendered/{capture.name}/bake.sh (Packer, EC2 Image Builder) and set `ami`")])


def rendered_tree(inventory: Inventory) -> dict[str, tuple[str, int]]:
    """Relative path -> (content, mode) for everything under rendered/."""
    tree: dict[str, tuple[str, int]] = {}
    for capture in inventory.captures:
        base = capture.name
        files = host_files(capture)
        top = {"bake.sh": bake_script(capture, files), "user-data.sh": user_data(capture, VOLUME_PLACEHOLDER, ENI_PLACEHOLDER),
               "mirrorcap.env": env_file(capture, VOLUME_PLACEHOLDER, ENI_PLACEHOLDER)}
        for name, mode in TOP_FILES.items():
            tree[f"{base}/{name}"] = (top[name], mode)
        for f in files:
            tree[f"{base}/files{f.path}"] = (f.content, int(f.mode, 8))
    return tree
