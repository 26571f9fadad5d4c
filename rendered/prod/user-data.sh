#!/bin/bash
# mirrorcap first boot for capture "prod" (EC2 user data).
# Rendered by mirrorcap from scripts/user-data.sh.j2; Terraform fills in the IDs.
# The AMI carries everything else (rendered/prod/bake.sh, baked in).
# Writes the instance's settings, then hands over to the boot script.
set -euo pipefail
umask 022
# One bootstrap at a time (a second run waits, then converges again): the lock stays held through exec.
exec 9>/run/mirrorcap-bootstrap.lock
flock 9
install -d -m 0755 /etc/mirrorcap
cat > /etc/mirrorcap/mirrorcap.env.tmp <<'MIRRORCAP_ENV'
# /etc/mirrorcap/mirrorcap.env: instance-specific settings for capture "prod".
MIRRORCAP_CAPTURE=prod
MIRRORCAP_REGION=ap-northeast-1
MIRRORCAP_VOLUME_ID=REPLACE-with-pcap_volume_id-output
MIRRORCAP_MIRROR_ENI_ID=REPLACE-with-mirror_eni_id-output
MIRRORCAP_VNIS="12345"
MIRRORCAP_CAPTURE_DIR=/var/log/tcpdump
MIRRORCAP_ROTATE_SECONDS=600
MIRRORCAP_RETENTION_DAYS=15
MIRRORCAP_MIN_FREE_PERCENT=10
MIRRORCAP_MIN_FREE_GIB=0
MIRRORCAP_STALE_AFTER_SECONDS=300
MIRRORCAP_BUFFER_KIB=8192
MIRRORCAP_SNAPLEN=0
# The same on every capture host: what mirrorcap's scripts share with its package.
MIRRORCAP_PCAP_PATTERN="vni{vni}_%Y-%m-%dT%H-%M-%SZ.pcap"
MIRRORCAP_VXLAN_PORT=4789
MIRRORCAP_VXLAN_IFACE="vxlan{vni}"
MIRRORCAP_VXLAN_OVERHEAD=50
MIRRORCAP_MIRROR_MTU=9001
MIRRORCAP_RETENTION_COMMAND="/usr/local/libexec/mirrorcap/retention"
MIRRORCAP_CAPTURE_USER=mirrorcap
MIRRORCAP_CAPTURE_GROUP=pcap
# mirrorcap-metrics: the namespace, then the metric names (capturing, packets lost, disk
# free, archive backlog) and the dimension names (capture, VNI, instance, fleet group).
MIRRORCAP_METRICS_NAMESPACE=mirrorcap
MIRRORCAP_METRICS_NAMES="Capturing PacketsLost DiskFreePercent ArchiveBacklog"
MIRRORCAP_METRICS_DIMENSIONS="Capture VNI InstanceId AutoScalingGroupName"
MIRRORCAP_ENV
mv -f /etc/mirrorcap/mirrorcap.env.tmp /etc/mirrorcap/mirrorcap.env
if [ -x /usr/local/sbin/mirrorcap-boot ]; then
  exec /usr/local/sbin/mirrorcap-boot
fi
echo "mirrorcap: /usr/local/sbin/mirrorcap-boot not found: bake the AMI (rendered/prod/bake.sh) first" >&2
exit 1
