"""The validated inventory: typed, immutable, defaults filled in.

Everything downstream (session numbering, the CDK stack, the bootstrap
renderer) takes these objects, never raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional



@dataclass(frozen=True)
class PortRange:
    from_port: int
    to_port: int


@dataclass(frozen=True)
class FilterRule:
    direction: str  # "ingress" | "egress"
    rule_number: int
    action: str = "accept"  # "accept" | "reject"
    protocol: Optional[int] = None  # IANA number; None = all protocols
    source_cidr: str = "0.0.0.0/0"
    destination_cidr: str = "0.0.0.0/0"
    source_ports: Optional[PortRange] = None
    destination_ports: Optional[PortRange] = None
    description: str = ""


@dataclass(frozen=True)
class Source:
    id: str  # eni-... or i-...
    session_number: Optional[int] = None  # fixed by the user; else assigned
    packet_length: Optional[int] = None
    vni: Optional[int] = None  # overrides the capture's VNI
    description: str = ""

    @property
    def is_instance(self) -> bool:
        return self.id.startswith("i-")


@dataclass(frozen=True)
class TagSource:
    """Instances carrying all these tags, mirrored at runtime (re-mirroring Lambda, `check --fix`)."""

    tags: tuple[tuple[str, str], ...]
    packet_length: Optional[int] = None
    vni: Optional[int] = None
    description: str = ""


@dataclass(frozen=True)
class AutoMirror:
    deploy_lambda: bool = True  # False: only `mirrorcap check --fix` mirrors tag sources
    sweep_minutes: int = 15  # the scheduled reconcile: catches lost events, ends campaigns
    ends_at: Optional[datetime] = None  # campaign end: owned sessions removed, nothing new mirrored
    max_concurrency: int = 2  # Lambda reserved concurrency: bounds API calls; races are handled anyway


@dataclass(frozen=True)
class Storage:
    size_gib: int = 300
    type: str = "st1"
    # None: the stack creates a dedicated customer-managed key for the capture's volumes
    # (stack/kms.py: rotated yearly, usable only through EBS, and S3 with an archive).
    kms_key_id: Optional[str] = None
    iops: Optional[int] = None  # gp3 only
    throughput_mibps: Optional[int] = None  # gp3 only
    prevent_destroy: bool = True  # pcaps are evidence: destroying the stack must be a decision
    expected_mbps: Optional[float] = None  # mirrored traffic rate; `validate` checks size/throughput against it


@dataclass(frozen=True)
class Network:
    mirror_source_cidrs: tuple[str, ...] = ()
    mirror_source_security_group_ids: tuple[str, ...] = ()
    # The management ENI needs HTTPS out for SSM and package repositories only.
    egress_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    egress_prefix_list_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Host:
    """Values the host bootstrap needs (rendered into /etc/mirrorcap)."""

    rotate_seconds: int = 600
    retention_days: int = 15
    min_free_percent: int = 10
    min_free_gib: int = 0  # a second, absolute floor; retention keeps both
    stale_after_seconds: int = 300  # mirrorcap-health: newest pcap older than this = no mirrored traffic
    buffer_kib: int = 8192  # tcpdump -B, kernel capture buffer
    snaplen: int = 0  # 0 = whole packet
    capture_dir: str = "/var/log/tcpdump"


@dataclass(frozen=True)
class Fleet:
    """Capture hosts in an Auto Scaling group behind an internal Network Load
    Balancer (the traffic mirror target) instead of one host: no source limit,
    hosts in every AZ listed. Each host gets its own pcap volume at launch."""

    subnet_ids: tuple[str, ...]  # one per Availability Zone: the hosts' and the NLB's subnets
    min_per_az: int = 1
    desired_per_az: int = 1
    max_per_az: int = 2
    # Off: an NLB node sends a mirrored packet only to hosts in its own AZ (no
    # inter-AZ transfer charge), at the price of an AZ with no healthy host
    # dropping what reaches its node.
    cross_zone: bool = False


@dataclass(frozen=True)
class Archive:
    """Every closed pcap uploaded to an S3 bucket the stack creates (SSE-KMS with
    the capture's key), then deleted locally only once the upload is confirmed."""

    retention_days: Optional[int] = None  # S3 lifecycle expiry; None = the host's retention_days
    reader_role_arns: tuple[str, ...] = ()  # the only principals that may read the archive


@dataclass(frozen=True)
class Alarms:
    """The capture's CloudWatch alarms (not capturing, packets lost, disk free low, archive
    backlog) notify this SNS topic; None: the stack creates one (encrypted) and outputs its ARN."""

    topic_arn: Optional[str] = None


@dataclass(frozen=True)
class Backend:
    kind: str  # "s3" | "local"
    bucket: str = ""
    key: str = ""
    region: str = ""
    use_lockfile: bool = True
    dynamodb_table: str = ""
    encrypt: bool = True
    kms_key_id: str = ""
    role_arn: str = ""
    path: str = ""


@dataclass(frozen=True)
class Capture:
    name: str
    region: str
    vpc_id: str
    subnet_id: str
    vni: int
    backend: Backend
    instance_type: str = "t3.small"
    # The capture host's image: Amazon Linux 2023 with the capture's bake.sh baked in. Its
    # bootstrap (about 70 KB of scripts and units) cannot travel in EC2's 16 KB of user data.
    # Optional here (the first bake renders before there is an AMI); synth requires it.
    ami: Optional[str] = None
    root_volume_gib: int = 16
    max_sources_per_target: int = 10
    storage: Storage = field(default_factory=Storage)
    network: Network = field(default_factory=Network)
    filter_rules: tuple[FilterRule, ...] = ()
    filter_network_services: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    tag_sources: tuple[TagSource, ...] = ()
    auto_mirror: Optional[AutoMirror] = None
    host: Host = field(default_factory=Host)
    tags: tuple[tuple[str, str], ...] = ()
    fleet: Optional[Fleet] = None  # None: one capture host with its mirror ENI as the target
    archive: Optional[Archive] = None
    alarms: Alarms = field(default_factory=Alarms)

    @property
    def target_kind(self) -> str:
        """What the traffic mirror target is: "eni" (one host) or "nlb" (a fleet)."""
        return "nlb" if self.fleet else "eni"

    @property
    def archive_retention_days(self) -> Optional[int]:
        if self.archive is None:
            return None
        return self.archive.retention_days if self.archive.retention_days is not None else self.host.retention_days

    @property
    def vnis(self) -> tuple[int, ...]:
        """Every VNI the host must decapsulate, sorted."""
        return tuple(sorted({self.vni} | {s.vni for s in self.sources + self.tag_sources if s.vni is not None}))


@dataclass(frozen=True)
class Inventory:
    path: str
    captures: tuple[Capture, ...]

    def capture(self, name: str) -> Capture:
        for c in self.captures:
            if c.name == name:
                return c
        raise KeyError(name)
