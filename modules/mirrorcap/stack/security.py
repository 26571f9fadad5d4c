"""Security groups: one per ENI, so each carries only what that ENI needs."""

from __future__ import annotations

from cdktn import TerraformStack
from cdktn_provider_aws.security_group import SecurityGroup, SecurityGroupEgress, SecurityGroupIngress

from ..aws_limits import VXLAN_PORT
from ..contract import resource_name
from ..inventory.model import Capture
from .refs import ref
from .tags import named


class SecurityGroups:
    def __init__(self, stack: TerraformStack, capture: Capture):
        net = capture.network
        # Primary ENI: no ingress at all (SSM is outbound-only); HTTPS out for
        # the SSM endpoints and package repositories. DNS to the VPC resolver,
        # NTP and IMDS are link-local and not subject to security groups.
        SecurityGroup(
            stack, "management_sg", vpc_id=capture.vpc_id,
            name=resource_name(capture.name, "management"),
            description="mirrorcap capture host management: HTTPS egress only (SSM, packages)",
            egress=[SecurityGroupEgress(
                description="HTTPS to SSM endpoints and package repositories",
                protocol="tcp", from_port=443, to_port=443,
                cidr_blocks=[c for c in net.egress_cidrs if ":" not in c] or None,
                ipv6_cidr_blocks=[c for c in net.egress_cidrs if ":" in c] or None,
                prefix_list_ids=list(net.egress_prefix_list_ids) or None,
            )],
            ingress=[],
            tags=named(capture, "management"),
        )
        # Mirror ENI: VXLAN in from the mirror sources only, nothing out.
        ingress = []
        v4 = [c for c in net.mirror_source_cidrs if ":" not in c]
        v6 = [c for c in net.mirror_source_cidrs if ":" in c]
        if v4 or v6:
            ingress.append(SecurityGroupIngress(
                description="VXLAN from traffic mirror sources (CIDR)", protocol="udp",
                from_port=VXLAN_PORT, to_port=VXLAN_PORT, cidr_blocks=v4 or None, ipv6_cidr_blocks=v6 or None))
        if net.mirror_source_security_group_ids:
            ingress.append(SecurityGroupIngress(
                description="VXLAN from traffic mirror sources (security groups)", protocol="udp",
                from_port=VXLAN_PORT, to_port=VXLAN_PORT, security_groups=list(net.mirror_source_security_group_ids)))
        SecurityGroup(
            stack, "mirror_sg", vpc_id=capture.vpc_id,
            name=resource_name(capture.name, "mirror"),
            description="mirrorcap mirror target: VXLAN (UDP 4789) from mirror sources only",
            ingress=ingress, egress=[],
            tags=named(capture, "mirror"),
        )
        self.management_id = ref("aws_security_group", "management_sg")
        self.mirror_id = ref("aws_security_group", "mirror_sg")
