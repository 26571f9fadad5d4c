"""Every name the stack, the re-mirroring Lambda, the host and the CLI share.

One definition each: a tag the stack writes and the drift check reads, a
session tag the Lambda writes and its IAM policy conditions on, the pcap file
name tcpdump writes and retention, health and mirrorcap-window find. Standard
library only: the Lambda's zip carries this file.
"""

from __future__ import annotations

# --- Tags -------------------------------------------------------------------
# Provider default_tags put these two on every resource a stack creates.
STACK_KEY = "mirrorcap:stack"  # valued with the capture name: what the drift check and the Lambda trust
MANAGED_BY = ("ManagedBy", "mirrorcap")
# A session's tags. Sessions the runtime (Lambda or `mirrorcap check --fix`)
# creates carry RUNTIME_OWNER_KEY, valued with the capture name: the only thing
# that may be deleted at runtime, and the Lambda's IAM policy enforces the same.
RUNTIME_OWNER_KEY = "mirrorcap:remirror"
SOURCE_KEY = "mirrorcap:source"  # the instance (or ENI) a session mirrors
CREATED_KEY = "mirrorcap:created"  # RFC 3339 UTC; orders racing creations deterministically
OWN_TAG_PREFIX = "mirrorcap:"  # reserved: the inventory's tags may not use it
# The most keys mirrorcap puts on one resource besides the inventory's (a
# session's): what is left of EC2's 50 is the inventory's.
OWN_TAG_KEYS = (MANAGED_BY[0], STACK_KEY, "Name", SOURCE_KEY)


def resource_name(capture: str, what: str) -> str:
    """The Name tag of a stack's resource ("host", "mirror", "pcaps", a source ID, ...)."""
    return f"mirrorcap-{capture}-{what}"


# Roles a stack's resources play, as `resource_name` suffixes the stack and the drift check agree on.
HOST = "host"
TARGET = "target"
FILTER = "filter"

# --- Mirror sessions -----------------------------------------------------------
def session_description(capture: str, label: str) -> str:
    """A stack's session description: the capture, then the source's description or ID.
    The pull-request comment reads the label back (session_label)."""
    return f"mirrorcap {capture}: {label}"


def session_label(capture: str, description: str) -> str:
    """What session_description was given for `capture`; a description it did not write, whole."""
    return description.removeprefix(session_description(capture, ""))


def source_vni(own: int | None, capture_vni: int) -> int:
    """The VNI a source (or tag selector) is mirrored with: its own, else its capture's."""
    return own if own is not None else capture_vni

# --- The capture host ---------------------------------------------------------
ENV_FILE = "/etc/mirrorcap/mirrorcap.env"  # written by the user data; every host script reads it
# Held by whoever writes ENV_FILE and runs mirrorcap-boot (the user data, mirrorcap-settings): two at once
# (cloud-init and a person, or a boot's settings) take turns instead of racing on the file.
BOOTSTRAP_LOCK = "/run/mirrorcap-bootstrap.lock"
LIBEXEC = "/usr/local/libexec/mirrorcap"
CAPTURE_USER = "mirrorcap"  # tcpdump and retention run as this user
CAPTURE_GROUP = "pcap"  # people who may read pcaps join it
# tcpdump -G's file name for one VNI (strftime, in UTC): the capture writes it;
# retention, health and mirrorcap-window find pcaps by it (through the env file).
PCAP_PATTERN = "vni{vni}_%Y-%m-%dT%H-%M-%SZ.pcap"
HOST_LIB = "/usr/local/lib/mirrorcap"  # the host's shared libraries (mirrorcap_host.py, mirrorcap-lib.sh)
# What `mirrorcap find --capture` runs on a host without an archive, through Systems Manager (as root).
FIND_COMMAND = "/usr/local/sbin/mirrorcap-find"
# The decapsulating interface of one VNI: decap makes it, capture, health and tcpdump name it
# (through the env file). Also the kernel's 15-character limit: vxlan + 8 digits fits.
VXLAN_IFACE = "vxlan{vni}"

# --- Fleets and the pcap archive ----------------------------------------------
# An archived pcap's S3 key: the capture, its VNI, the UTC day its name starts,
# the host that wrote it, the file name as tcpdump wrote it.
ARCHIVE_KEY = "{capture}/vni{vni}/{date}/{instance}/{file}"
# A pcap's packet index: beside the pcap on the host (NAME.pcap + INDEX_SUFFIX, written at
# rotation by scripts/host/mirrorcap_index.py); in the archive under its own prefix, the pcap's
# key with INDEX_PREFIX before and INDEX_SUFFIX after, so that a table over the indexes
# (stack/athena.py: index/<capture>/vni<VNI>/<date>/) holds no pcap. Indexes older hosts
# uploaded beside their pcaps (key + INDEX_SUFFIX) are not read.
INDEX_SUFFIX = ".idx.json.gz"
INDEX_PREFIX = "index/"
ARCHIVE_INDEX_KEY = INDEX_PREFIX + ARCHIVE_KEY + INDEX_SUFFIX


def archive_index_key(pcap_key: str) -> str:
    """The archive key of an archived pcap's index (ARCHIVE_INDEX_KEY of the same fields)."""
    return INDEX_PREFIX + pcap_key + INDEX_SUFFIX


def archived_pcap_key(index_key: str) -> str | None:
    """The archived pcap an index key is for; None for a key that is not an index's."""
    if not (index_key.startswith(INDEX_PREFIX) and index_key.endswith(INDEX_SUFFIX)):
        return None
    return index_key[len(INDEX_PREFIX):-len(INDEX_SUFFIX)] or None
# The Terraform templatefile() variable carrying the archive bucket's name into
# the user data; present only for a capture with `archive {}`.
ARCHIVE_BUCKET_VAR = "archive_bucket"
FLEET_VOLUME_DEVICE = "/dev/sdf"  # a fleet host's pcap volume, from its launch template
HEALTH_PORT = 8081  # a fleet host answers the NLB's health check here: 200 only when mirrorcap-health passes

# A fleet's and the archive's resources: how the stack names them and
# `mirrorcap check` / `mirrorcap window` find them. ELBv2 names are limited to
# 32 characters and S3 bucket names are global, so these are found by tags
# (STACK_KEY valued with the capture, Name = resource_name(capture, role)),
# never by their resource names; the ASG alone is found by its name.
NLB = "nlb"  # aws_lb (network, internal): the traffic mirror target of a fleet
TARGETS = "targets"  # aws_lb_target_group (UDP 4789, health check on HEALTH_PORT)
# aws_autoscaling_group: named exactly resource_name(capture, FLEET); provider
# default_tags do not reach an ASG, so the stack also gives it STACK_KEY and Name
# (propagate_at_launch: its hosts carry them, Name = resource_name(capture, HOST)).
FLEET = "fleet"
ARCHIVE = "archive"  # aws_s3_bucket: tagged Name = resource_name(capture, ARCHIVE) and STACK_KEY
# The archive bucket's name starts with this (the stack adds a unique suffix):
# `mirrorcap window` lists buckets with it as ListBuckets' Prefix, in the
# capture's region, then keeps the one whose tags name the capture.
ARCHIVE_BUCKET_PREFIX = "mirrorcap-"
# `archive {}` also defines (stack/athena.py) a Glue table over the archived indexes and an Athena
# workgroup that queries it (`mirrorcap find --engine athena`). Glue and Athena names are
# lowercase letters, digits and underscores: the capture's hyphens become underscores
# (capture names have no underscore, so no two captures share a database).
ATHENA = "athena"  # aws_athena_workgroup: named resource_name(capture, ATHENA)
ATHENA_RESULTS = "athena-results"  # its result bucket: tagged Name = resource_name(capture, ATHENA_RESULTS)
FLOWS_TABLE = "flows"


def glue_database(capture: str) -> str:
    return "mirrorcap_" + capture.replace("-", "_")

# --- Health as CloudWatch metrics, and the stack's alarms on them -------------------
# Every host publishes these once a minute (mirrorcap-metrics.timer); the stack's alarms
# read them and the hosts' IAM policy allows PutMetricData only into this namespace.
METRICS_NAMESPACE = "mirrorcap"
METRIC_CAPTURING = "Capturing"  # 1: tcpdump runs and writes; 0: not (per VNI)
METRIC_PACKETS_LOST = "PacketsLost"  # packets lost since the previous datapoint: kernel drops + gaps (per VNI)
METRIC_DISK_FREE = "DiskFreePercent"  # free space on the pcap volume
METRIC_ARCHIVE_BACKLOG = "ArchiveBacklog"  # closed pcaps not yet confirmed by S3 (`archive {}` only)
# Dimensions. Each datum goes out twice: with DIM_CAPTURE (+ DIM_VNI), what the alarms read
# (a replaced host or a fleet keeps one series), and with the host's own dimensions added.
DIM_CAPTURE = "Capture"
DIM_VNI = "VNI"
DIM_INSTANCE = "InstanceId"
DIM_FLEET = "AutoScalingGroupName"  # a fleet host's group: resource_name(capture, FLEET)
METRICS_PERIOD_SECONDS = 60  # the publishing interval, and the alarms' period
