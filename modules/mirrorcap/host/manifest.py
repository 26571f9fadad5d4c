"""What a capture's hosts get: each file of scripts/host/, where the host has it and its mode
(HOST_FILES, and ARCHIVE_FILES / FLEET_FILES by the capture's kind), and every path a render
writes in a capture's directory under rendered/."""

from __future__ import annotations

from dataclasses import dataclass

from .. import contract
from ..inventory.model import Capture


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
