"""`fleet {}`: capture hosts in an Auto Scaling group behind an internal Network Load Balancer.

The NLB (UDP 4789 listener) is the traffic mirror target: no source limit,
hosts in every AZ listed. Each host is the single host's twin from a launch
template (same AMI and bootstrap, IMDSv2, encrypted volumes, no public IP,
SSM only), with its own pcap volume created at launch; it receives VXLAN on
its primary ENI. A host is healthy for the NLB (and so for the group) only
while mirrorcap-health passes: the host answers HTTP GET / on
contract.HEALTH_PORT with 200 then.
"""

from __future__ import annotations

from cdktn import TerraformStack
from cdktn_provider_aws.autoscaling_group import (
    AutoscalingGroup, AutoscalingGroupInstanceRefresh, AutoscalingGroupInstanceRefreshPreferences, AutoscalingGroupLaunchTemplate,
    AutoscalingGroupTag)
from cdktn_provider_aws.data_aws_ami import DataAwsAmi, DataAwsAmiFilter
from cdktn_provider_aws.data_aws_subnet import DataAwsSubnet
from cdktn_provider_aws.launch_template import (
    LaunchTemplate, LaunchTemplateBlockDeviceMappings, LaunchTemplateBlockDeviceMappingsEbs, LaunchTemplateIamInstanceProfile,
    LaunchTemplateMetadataOptions, LaunchTemplateMonitoring, LaunchTemplateNetworkInterfaces, LaunchTemplateTagSpecifications)
from cdktn_provider_aws.lb import Lb
from cdktn_provider_aws.lb_listener import LbListener, LbListenerDefaultAction
from cdktn_provider_aws.lb_target_group import LbTargetGroup, LbTargetGroupHealthCheck
from cdktn_provider_aws.security_group import SecurityGroup, SecurityGroupIngress

from ..aws_limits import VXLAN_PORT
from ..contract import FLEET, FLEET_VOLUME_DEVICE, HEALTH_PORT, HOST, NLB, TARGETS, resource_name
from ..inventory.model import Capture
from .host import METADATA_OPTIONS, user_data_expression
from .refs import data_ref, ref
from .tags import default_tags, named

# First boot to healthy: the baked AMI starts the capture in a minute or two (the
# volume's attachment, the first pcaps); the group replaces a host only after this.
HEALTH_GRACE_SECONDS = 600
# Three answers 10 s apart: a host whose capture stalls leaves the NLB within 30 s.
HEALTH_INTERVAL_SECONDS, HEALTH_THRESHOLD = 10, 3
DEREGISTRATION_DELAY_SECONDS = 60


def group_sizes(capture: Capture) -> tuple[int, int, int]:
    """(min, desired, max) of the whole group: per AZ x the AZs (one subnet each)."""
    f, n = capture.fleet, len(capture.fleet.subnet_ids)
    return f.min_per_az * n, f.desired_per_az * n, f.max_per_az * n


class CaptureFleet:
    def __init__(self, stack: TerraformStack, capture: Capture, *, management_sg_id: str, mirror_sg_id: str,
                 instance_profile: str, key_arn: str, archive_bucket: str):
        """archive_bucket: the bucket's name as a bare Terraform expression (a fleet always archives)."""
        fleet = capture.fleet
        subnets = list(fleet.subnet_ids)

        # --- The NLB: the traffic mirror target -------------------------------------------
        # Cross-zone off (the default): a node forwards only to hosts in its own AZ, so no
        # inter-AZ data transfer is charged for mirrored traffic; an AZ without a healthy
        # host drops what reaches its node. README, "Fleets", says why and what it costs.
        Lb(stack, "fleet_nlb", load_balancer_type="network", internal=True, subnets=subnets,
           enable_cross_zone_load_balancing=fleet.cross_zone,
           # Like the pcap volumes: destroying the capture must be a decision.
           enable_deletion_protection=capture.storage.prevent_destroy,
           tags=named(capture, NLB))  # `mirrorcap check` finds it by this Name (contract.NLB)
        self.nlb_arn = nlb_arn = ref("aws_lb", "fleet_nlb", "arn")
        # UDP: the NLB keeps each packet's source IP (it cannot be turned off for UDP), so the
        # hosts see the mirror sources themselves: the mirror security group applies unchanged.
        LbTargetGroup(stack, "fleet_targets", target_type="instance", protocol="UDP", port=VXLAN_PORT, vpc_id=capture.vpc_id,
                      deregistration_delay=str(DEREGISTRATION_DELAY_SECONDS),
                      health_check=LbTargetGroupHealthCheck(
                          enabled=True, protocol="HTTP", port=str(HEALTH_PORT), path="/", matcher="200",
                          interval=HEALTH_INTERVAL_SECONDS, healthy_threshold=HEALTH_THRESHOLD, unhealthy_threshold=HEALTH_THRESHOLD),
                      tags=named(capture, TARGETS))
        target_group_arn = ref("aws_lb_target_group", "fleet_targets", "arn")
        self.listener = LbListener(stack, "fleet_vxlan", load_balancer_arn=nlb_arn, protocol="UDP", port=VXLAN_PORT,
                                   default_action=[LbListenerDefaultAction(type="forward", target_group_arn=target_group_arn)],
                                   tags=named(capture, NLB))

        # --- Health checks reach the hosts from the NLB's nodes, in the fleet's subnets ---------
        cidrs = []
        for i, subnet in enumerate(subnets):
            DataAwsSubnet(stack, f"fleet_subnet_{i}", id=subnet)
            cidrs.append(data_ref("aws_subnet", f"fleet_subnet_{i}", "cidr_block"))
        SecurityGroup(
            stack, "health_sg", vpc_id=capture.vpc_id, name=resource_name(capture.name, "health"),
            description="mirrorcap fleet host: the NLB health check from the fleet subnets only",
            ingress=[SecurityGroupIngress(description="NLB health check (HTTP GET /, 200 = mirrorcap-health passes)",
                                          protocol="tcp", from_port=HEALTH_PORT, to_port=HEALTH_PORT, cidr_blocks=cidrs)],
            egress=[], tags=named(capture, "health"))

        # --- The launch template: the single host's settings --------------------------------------
        ami = capture.ami
        # The root volume is overridden by its device name, whatever the AMI calls it.
        DataAwsAmi(stack, "fleet_ami", filter=[DataAwsAmiFilter(name="image-id", values=[ami])])
        root_device = data_ref("aws_ami", "fleet_ami", "root_device_name")
        s = capture.storage
        host_tags = {**default_tags(capture), **named(capture, HOST)}
        LaunchTemplate(
            stack, "fleet_template", name=resource_name(capture.name, FLEET),
            description=f"mirrorcap {capture.name}: capture fleet host", image_id=ami, instance_type=capture.instance_type,
            iam_instance_profile=LaunchTemplateIamInstanceProfile(name=instance_profile),
            ebs_optimized="true", monitoring=LaunchTemplateMonitoring(enabled=True),
            metadata_options=LaunchTemplateMetadataOptions(**METADATA_OPTIONS),
            # One ENI: management (HTTPS out) and VXLAN in, and the health check.
            network_interfaces=[LaunchTemplateNetworkInterfaces(
                device_index=0, associate_public_ip_address="false", delete_on_termination="true",
                security_groups=[management_sg_id, mirror_sg_id, ref("aws_security_group", "health_sg")])],
            block_device_mappings=[
                LaunchTemplateBlockDeviceMappings(device_name=root_device, ebs=LaunchTemplateBlockDeviceMappingsEbs(
                    encrypted="true", kms_key_id=key_arn, volume_type="gp3", volume_size=capture.root_volume_gib,
                    delete_on_termination="true")),
                # Each host's own pcap volume, created at launch. Deleted with its host: a fleet
                # archives every closed pcap to S3 and deletes it locally only once uploaded, so
                # what a terminated host's volume holds is the pcap still being written.
                LaunchTemplateBlockDeviceMappings(device_name=FLEET_VOLUME_DEVICE, ebs=LaunchTemplateBlockDeviceMappingsEbs(
                    encrypted="true", kms_key_id=key_arn, volume_type=s.type, volume_size=s.size_gib, iops=s.iops,
                    throughput=s.throughput_mibps, delete_on_termination="true")),
            ],
            # Fleet hosts find their pcap volume by device and receive VXLAN on their primary ENI.
            user_data=user_data_expression('""', '""', archive_bucket),
            update_default_version=True,
            tag_specifications=[
                LaunchTemplateTagSpecifications(resource_type="instance", tags=host_tags),
                LaunchTemplateTagSpecifications(resource_type="volume", tags={**default_tags(capture), **named(capture, "pcaps")}),
                LaunchTemplateTagSpecifications(resource_type="network-interface", tags=host_tags),
            ],
            tags=named(capture, FLEET))

        # --- The group -------------------------------------------------------------------------------
        low, desired, high = group_sizes(capture)
        group_tags = {**default_tags(capture), **named(capture, FLEET)}  # default_tags do not reach an Auto Scaling group
        AutoscalingGroup(
            stack, "fleet", name=resource_name(capture.name, FLEET), vpc_zone_identifier=subnets,
            min_size=low, desired_capacity=desired, max_size=high,
            launch_template=AutoscalingGroupLaunchTemplate(id=ref("aws_launch_template", "fleet_template"),
                                                           version=ref("aws_launch_template", "fleet_template", "latest_version")),
            target_group_arns=[target_group_arn],
            # The NLB's health check is mirrorcap-health's verdict: an unhealthy host is replaced.
            health_check_type="ELB",
            health_check_grace_period=HEALTH_GRACE_SECONDS,
            # Hosts are healthy once their first pcaps are written, minutes after launch: the apply
            # does not wait for that (`mirrorcap check` and the target group's health tell).
            wait_for_capacity_timeout="0",
            # A new template version (AMI, user data, sizes) replaces hosts a few at a time,
            # launching each replacement before its predecessor goes.
            instance_refresh=AutoscalingGroupInstanceRefresh(
                strategy="Rolling",
                preferences=AutoscalingGroupInstanceRefreshPreferences(min_healthy_percentage=100, max_healthy_percentage=200)),
            tag=[AutoscalingGroupTag(key=k, value=v, propagate_at_launch=False) for k, v in sorted(group_tags.items())])
        self.group_name = ref("aws_autoscaling_group", "fleet", "name")
