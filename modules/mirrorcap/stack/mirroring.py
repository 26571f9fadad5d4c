"""Traffic Mirroring: target (the mirror ENI), filter and rules, one session per source."""

from __future__ import annotations

import re
from typing import Mapping

from cdktn import TerraformStack
from cdktn_provider_aws.data_aws_instance import DataAwsInstance
from cdktn_provider_aws.ec2_traffic_mirror_filter import Ec2TrafficMirrorFilter
from cdktn_provider_aws.ec2_traffic_mirror_filter_rule import (
    Ec2TrafficMirrorFilterRule, Ec2TrafficMirrorFilterRuleDestinationPortRange, Ec2TrafficMirrorFilterRuleSourcePortRange)
from cdktn_provider_aws.ec2_traffic_mirror_session import Ec2TrafficMirrorSession
from cdktn_provider_aws.ec2_traffic_mirror_target import Ec2TrafficMirrorTarget

from ..config import Capture
from .refs import data_ref, ref
from .tags import named


def logical(prefix: str, source_id: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9_]", "_", source_id)


class Mirroring:
    def __init__(self, stack: TerraformStack, capture: Capture, *, target_eni_id: str, numbers: Mapping[str, int]):
        Ec2TrafficMirrorTarget(stack, "mirror_target", network_interface_id=target_eni_id,
                                             description=f"mirrorcap {capture.name} capture host", tags=named(capture, "target"))
        Ec2TrafficMirrorFilter(stack, "mirror_filter", description=f"mirrorcap {capture.name}",
                                             network_services=list(capture.filter_network_services) or None,
                                             tags=named(capture, "filter"))
        self.target_id = target_id = ref("aws_ec2_traffic_mirror_target", "mirror_target")
        self.filter_id = filter_id = ref("aws_ec2_traffic_mirror_filter", "mirror_filter")
        for rule in capture.filter_rules:
            Ec2TrafficMirrorFilterRule(
                stack, f"filter_rule_{rule.direction}_{rule.rule_number}", traffic_mirror_filter_id=filter_id,
                traffic_direction=rule.direction, rule_number=rule.rule_number, rule_action=rule.action,
                protocol=rule.protocol, source_cidr_block=rule.source_cidr, destination_cidr_block=rule.destination_cidr,
                source_port_range=Ec2TrafficMirrorFilterRuleSourcePortRange(from_port=rule.source_ports.from_port, to_port=rule.source_ports.to_port) if rule.source_ports else None,
                destination_port_range=Ec2TrafficMirrorFilterRuleDestinationPortRange(from_port=rule.destination_ports.from_port, to_port=rule.destination_ports.to_port) if rule.destination_ports else None,
                description=rule.description or None)

        # source -> Terraform reference to its session ID
        self.session_id_refs: dict[str, str] = {}
        for source in capture.sources:
            if source.is_instance:
                # An instance source mirrors its primary ENI, looked up at plan time.
                DataAwsInstance(stack, logical("source_", source.id), instance_id=source.id)
                eni_id = data_ref("aws_instance", logical("source_", source.id), "network_interface_id")
            else:
                eni_id = source.id
            name = logical("session_", source.id)
            Ec2TrafficMirrorSession(
                stack, name, network_interface_id=eni_id,
                traffic_mirror_target_id=target_id, traffic_mirror_filter_id=filter_id,
                session_number=numbers[source.id], virtual_network_id=source.vni if source.vni is not None else capture.vni,
                packet_length=source.packet_length,
                description=f"mirrorcap {capture.name}: {source.description or source.id}",
                tags={"Name": f"mirrorcap-{capture.name}-{source.id}", "mirrorcap:source": source.id})
            self.session_id_refs[source.id] = ref("aws_ec2_traffic_mirror_session", name)
