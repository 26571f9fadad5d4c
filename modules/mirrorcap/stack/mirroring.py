"""Traffic Mirroring: target (the mirror ENI, or a fleet's NLB), filter and rules, a session per source."""

from __future__ import annotations

import functools

from cdktn import TerraformStack, TerraformVariable, Token
from cdktn_provider_aws.data_aws_instance import DataAwsInstance
from cdktn_provider_aws.ec2_traffic_mirror_filter import Ec2TrafficMirrorFilter
from cdktn_provider_aws.ec2_traffic_mirror_filter_rule import (
    Ec2TrafficMirrorFilterRule, Ec2TrafficMirrorFilterRuleDestinationPortRange, Ec2TrafficMirrorFilterRuleSourcePortRange)
from cdktn_provider_aws.ec2_traffic_mirror_session import Ec2TrafficMirrorSession
from cdktn_provider_aws.ec2_traffic_mirror_target import Ec2TrafficMirrorTarget

from .. import stack_data
from ..contract import FILTER, SOURCE_KEY, TARGET, resource_name, session_description
from ..hclquote import quoted_body, template_escape
from ..inventory.model import Capture
from .literal import literal
from .refs import EACH_KEY, data_ref, ref
from .tags import named


# The names a plan shows: aws_ec2_traffic_mirror_session.source["<source ID>"], data.aws_instance.source_instance["i-..."].
SESSIONS_RESOURCE, INSTANCE_LOOKUP = "source", "source_instance"


@functools.cache
def number(expression: str) -> float:
    """A typed number argument takes a token, not a "${...}" string. The token
    names no construct, so one per expression serves every stack (a jsii call
    each, saved 99 times in 100)."""
    return Token.as_number(expression)


def default_description(capture: Capture) -> str:
    """A session's description where the source has none, as an HCL expression: session_description's."""
    return '"' + template_escape(quoted_body(session_description(capture.name, ""))) + '${each.key}"'


class Mirroring:
    def __init__(self, stack: TerraformStack, capture: Capture, *, target_eni_id: str | None = None,
                 target_nlb_arn: str | None = None, target_depends_on: list | None = None):
        """The target is the host's mirror ENI, or a fleet's NLB (target_nlb_arn, created after its UDP 4789 listener)."""
        if target_nlb_arn is None:
            Ec2TrafficMirrorTarget(stack, "mirror_target", network_interface_id=target_eni_id,
                                   description=f"mirrorcap {capture.name} capture host", tags=named(capture, TARGET))
        else:
            Ec2TrafficMirrorTarget(stack, "mirror_target", network_load_balancer_arn=target_nlb_arn, depends_on=target_depends_on,
                                   description=f"mirrorcap {capture.name} capture fleet (NLB)", tags=named(capture, TARGET))
        Ec2TrafficMirrorFilter(stack, "mirror_filter", description=f"mirrorcap {capture.name}",
                                             network_services=list(capture.filter_network_services) or None,
                                             tags=named(capture, FILTER))
        self.target_id = target_id = ref("aws_ec2_traffic_mirror_target", "mirror_target")
        self.filter_id = filter_id = ref("aws_ec2_traffic_mirror_filter", "mirror_filter")
        for rule in capture.filter_rules:
            Ec2TrafficMirrorFilterRule(
                stack, f"filter_rule_{rule.direction}_{rule.rule_number}", traffic_mirror_filter_id=filter_id,
                traffic_direction=rule.direction, rule_number=rule.rule_number, rule_action=rule.action,
                protocol=rule.protocol, source_cidr_block=rule.source_cidr, destination_cidr_block=rule.destination_cidr,
                source_port_range=Ec2TrafficMirrorFilterRuleSourcePortRange(from_port=rule.source_ports.from_port, to_port=rule.source_ports.to_port) if rule.source_ports else None,
                destination_port_range=Ec2TrafficMirrorFilterRuleDestinationPortRange(from_port=rule.destination_ports.from_port, to_port=rule.destination_ports.to_port) if rule.destination_ports else None,
                description=literal(rule.description, typed=True) if rule.description else None)

        self.session_ids = self._sessions(stack, capture, target_id, filter_id)

    @staticmethod
    def _sessions(stack: TerraformStack, capture: Capture, target_id: str, filter_id: str):
        """One resource keyed by source ID, `aws_ec2_traffic_mirror_session.source["eni-..."]`, whose
        `for_each` is the variable `sessions` (source -> session number; a VNI, packet length or
        description of its own from a sparse map, else the capture's); returns the {source: session ID}
        expression.

        The sources are data (stack_data.py writes the variables' values into
        sessions.auto.tfvars.json): this stack is the same whatever the sources,
        so a source edit needs no synth. Adding or removing a source touches only
        its own key in the plan. The map is a variable, not inline in `for_each`:
        Terraform evaluates a resource's `for_each` expression again for every
        instance, a variable once (1,000 sessions inline in for_each planned in
        211 s against moto, from a local in 10.6 s, when the fleet was reviewed). An instance source mirrors its primary ENI, looked up at plan time.
        """
        for name, (type_, description) in stack_data.VARIABLES.items():
            if name != stack_data.VNIS:  # declared by the alarms
                TerraformVariable(stack, name, type=type_, nullable=False, description=description)
        lookup = DataAwsInstance(stack, INSTANCE_LOOKUP, instance_id=EACH_KEY)
        lookup.add_override("for_each", "${var.%s}" % stack_data.INSTANCE_SOURCES)
        instance_eni = data_ref("aws_instance", f"{INSTANCE_LOOKUP}[each.key]", "network_interface_id")[2:-1]
        session = Ec2TrafficMirrorSession(
            stack, SESSIONS_RESOURCE,
            network_interface_id=f"${{contains(var.{stack_data.INSTANCE_SOURCES}, each.key) ? {instance_eni} : each.key}}",
            traffic_mirror_target_id=target_id, traffic_mirror_filter_id=filter_id,
            session_number=number("${each.value}"),
            virtual_network_id=number(f"${{lookup(var.{stack_data.SOURCE_VNIS}, each.key, {capture.vni})}}"),
            packet_length=number(f"${{lookup(var.{stack_data.PACKET_LENGTHS}, each.key, null)}}"),
            description=f"${{lookup(var.{stack_data.DESCRIPTIONS}, each.key, {default_description(capture)})}}",
            tags={"Name": resource_name(capture.name, EACH_KEY), SOURCE_KEY: EACH_KEY})
        session.add_override("for_each", "${var.%s}" % stack_data.SESSIONS)
        return f"${{{{for source, session in aws_ec2_traffic_mirror_session.{SESSIONS_RESOURCE} : source => session.id}}}}"
