"""The host bootstrap (scripts/) for one capture, and the tree in rendered/.

The host's scripts are plain files that read /etc/mirrorcap/mirrorcap.env; Jinja
renders only what must carry a value: the env file (written by the user data),
the user data, bake.sh, and the two units whose directives systemd cannot fill
from a variable (the capture directory and the capture identity).
"""

from __future__ import annotations

import functools

import jinja2

from .. import aws_limits as L
from .. import contract, project
from ..backlog import archive_backlog_seconds
from ..inventory.model import Capture, Inventory
from ..stack.literal import escape as template_escape
from .manifest import TOP_FILES, HostFile, host_file_sources
from .user_data_size import SAMPLE_BUCKET, SAMPLE_IDS, check_user_data_size

TERMSHARK_VERSION = "v2.4.0"
# Placeholders in rendered/ where Terraform supplies the real IDs in user data.
VOLUME_PLACEHOLDER = "REPLACE-with-pcap_volume_id-output"
ENI_PLACEHOLDER = "REPLACE-with-mirror_eni_id-output"
ARCHIVE_BUCKET_PLACEHOLDER = "REPLACE-with-archive_bucket-output"  # only in captures with `archive {}`


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
