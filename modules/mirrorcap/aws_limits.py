"""AWS facts mirrorcap enforces before AWS does. Each is from the AWS docs.

Traffic Mirroring quotas page (vpc/latest/mirroring/traffic-mirroring-quotas):
none of these is adjustable.
"""

SESSION_NUMBER_MIN = 1
SESSION_NUMBER_MAX = 32766  # CreateTrafficMirrorSession: "Valid values are 1-32766"
# The AWS provider refuses 0 (aws_ec2_traffic_mirror_session.virtual_network_id: 1-16777216, checked
# by terraform against the provider); VXLAN carries 24 bits, so 16777215 at most.
VNI_MIN = 1
VNI_MAX = 16_777_215  # 24-bit VXLAN network identifier
PACKET_LENGTH_MIN = 1
PACKET_LENGTH_MAX = 8500  # CreateTrafficMirrorSession: "Valid values are 1-8500"
SESSIONS_PER_SOURCE_ENI = 3
RULES_PER_FILTER = 10
RULE_NUMBER_MIN = 1
RULE_NUMBER_MAX = 32766
SOURCES_PER_ENI_TARGET = 10
SOURCES_PER_ENI_TARGET_LARGE = 100
# NLB and Gateway Load Balancer endpoint targets have no source limit; the
# account's 10,000 sessions bound them (Traffic Mirroring quotas).
SESSIONS_PER_ACCOUNT = 10_000
# The quotas page lists the instance types whose ENI target takes 100 sources.
# Only the ones read verbatim from that page are here; for another listed type
# set `max_sources_per_target = 100` in the inventory.
LARGE_TARGET_INSTANCE_TYPES = frozenset({"m5.24xlarge", "m5d.24xlarge", "m5dn.24xlarge"})
VXLAN_OVERHEAD_BYTES = 50
# A mirror target ENI's MTU: a 9001-byte source's packets (8,947 inner bytes plus the
# VXLAN encapsulation) arrive whole at 9001; a smaller NIC MTU drops larger ones.
MIRROR_TARGET_MTU = 9001
MTU_MIN = 68  # IPv4's smallest (RFC 791); EC2's largest is MIRROR_TARGET_MTU
VXLAN_PORT = 4789  # mirrored traffic arrives as VXLAN on this UDP port

# EBS volume sizes (GiB) per type that make sense for pcaps. st1/sc1 are HDD:
# cheap sequential throughput, 125 GiB minimum, not bootable.
VOLUME_SIZE_GIB = {"st1": (125, 16384), "sc1": (125, 16384), "gp3": (1, 16384)}

# EC2 tags: 50 per resource, keys 1-128 and values 0-256 characters of Unicode letters,
# digits, spaces and _ . : / = + - @ (AWS "Tagging your AWS resources").
TAGS_PER_RESOURCE = 50
TAG_KEY_MAX, TAG_VALUE_MAX = 128, 256
TAG_SYMBOLS = "_.:/=+-@"
# Descriptions mirrorcap passes on (sessions, filter rules): one line, at most 255 characters.
DESCRIPTION_MAX = 255

# EC2 user data: 16 KB before base64 (the instance gets it gzipped, cloud-init unpacks it).
USER_DATA_MAX_BYTES = 16384



# One subnet per Availability Zone (a load balancer takes one per AZ); no region has more
# than 6 AZs (us-east-1).
MAX_AZS = 6
# Hosts per AZ a fleet may ask for (fleet > max_per_az).
MAX_HOSTS_PER_AZ = 100


def sources_per_target(instance_type: str) -> int:
    if instance_type in LARGE_TARGET_INSTANCE_TYPES:
        return SOURCES_PER_ENI_TARGET_LARGE
    return SOURCES_PER_ENI_TARGET
