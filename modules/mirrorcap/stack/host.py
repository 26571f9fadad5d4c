"""The capture instance, its mirror ENI (device index 1) and its pcap volume."""

from __future__ import annotations

from cdktn import TerraformResourceLifecycle, TerraformStack
from cdktn_provider_aws.data_aws_subnet import DataAwsSubnet
from cdktn_provider_aws.ebs_volume import EbsVolume
from cdktn_provider_aws.instance import Instance, InstanceMetadataOptions, InstanceRootBlockDevice
from cdktn_provider_aws.network_interface import NetworkInterface
from cdktn_provider_aws.network_interface_attachment import NetworkInterfaceAttachmentA
from cdktn_provider_aws.volume_attachment import VolumeAttachment

from ..stack_data import USER_DATA_FILE
from ..contract import ARCHIVE_BUCKET_VAR, HOST
from ..inventory.model import Capture
from .refs import data_ref, ref
from .tags import named

# Any free name works: on Nitro the volume shows up as NVMe and the bootstrap
# finds it by volume ID, never by this name.
PCAP_DEVICE_NAME = "/dev/sdf"

# The rendered user data is a templatefile() template written beside cdk.tf.json
# as data (synth/structure.py write_data: a new VNI changes it, not the stack);
# Terraform fills in the IDs and gzips it (cloud-init unpacks it).


def user_data_expression(volume_id: str, eni_id: str, archive_bucket: str | None = None) -> str:
    """The gzipped user data: the template with its variables, each a Terraform expression.
    archive_bucket only for a capture with `archive {}` (the template names it only then)."""
    variables = f"volume_id = {volume_id}, eni_id = {eni_id}"
    if archive_bucket is not None:
        variables += f", {ARCHIVE_BUCKET_VAR} = {archive_bucket}"
    return '${base64gzip(templatefile("${path.module}/%s", {%s}))}' % (USER_DATA_FILE, variables)


# IMDSv2 only, one hop (no container on the host reaches it), no instance tags in
# IMDS: the single host's instance and a fleet's launch template both.
METADATA_OPTIONS = dict(http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1, instance_metadata_tags="disabled")
USER_DATA_EXPRESSION = user_data_expression("aws_ebs_volume.pcap_volume.id", "aws_network_interface.mirror_eni.id")


def mirror_interface(stack: TerraformStack, capture: Capture, security_group_id: str) -> None:
    """Created before the instance so its ID can go into the user data."""
    NetworkInterface(
        stack, "mirror_eni", subnet_id=capture.subnet_id, security_groups=[security_group_id],
        description=f"mirrorcap {capture.name}: traffic mirror target (VXLAN in)",
        tags=named(capture, "mirror"))


def pcap_volume(stack: TerraformStack, capture: Capture, availability_zone: str, key_arn: str) -> None:
    s = capture.storage
    EbsVolume(
        stack, "pcap_volume", availability_zone=availability_zone, size=s.size_gib, type=s.type,
        encrypted=True, kms_key_id=key_arn, iops=s.iops, throughput=s.throughput_mibps,
        lifecycle=TerraformResourceLifecycle(prevent_destroy=s.prevent_destroy),
        tags=named(capture, "pcaps"))


class CaptureHost:
    def __init__(self, stack: TerraformStack, capture: Capture, *, management_sg_id: str, mirror_sg_id: str,
                 instance_profile: str, key_arn: str, archive_bucket: str | None = None):
        """archive_bucket: the bucket's name as a bare Terraform expression (`aws_s3_bucket.archive.bucket`)."""
        DataAwsSubnet(stack, "capture_subnet", id=capture.subnet_id)
        mirror_interface(stack, capture, mirror_sg_id)
        pcap_volume(stack, capture, data_ref("aws_subnet", "capture_subnet", "availability_zone"), key_arn)
        self.volume_id, self.eni_id = ref("aws_ebs_volume", "pcap_volume"), ref("aws_network_interface", "mirror_eni")

        Instance(
            stack, "capture_instance", ami=capture.ami, instance_type=capture.instance_type, subnet_id=capture.subnet_id,
            vpc_security_group_ids=[management_sg_id], iam_instance_profile=instance_profile,
            associate_public_ip_address=False, monitoring=True, ebs_optimized=True,
            metadata_options=InstanceMetadataOptions(**METADATA_OPTIONS),
            root_block_device=InstanceRootBlockDevice(encrypted=True, volume_type="gp3", volume_size=capture.root_volume_gib,
                                                      kms_key_id=key_arn, delete_on_termination=True,
                                                      tags=named(capture, "root")),
            user_data_base64=USER_DATA_EXPRESSION if archive_bucket is None else user_data_expression(
                "aws_ebs_volume.pcap_volume.id", "aws_network_interface.mirror_eni.id", archive_bucket),
            user_data_replace_on_change=False,
            tags=named(capture, HOST))
        self.instance_id = ref("aws_instance", "capture_instance")
        NetworkInterfaceAttachmentA(stack, "mirror_eni_attachment", device_index=1,
                                    instance_id=self.instance_id, network_interface_id=self.eni_id)
        VolumeAttachment(stack, "pcap_volume_attachment", device_name=PCAP_DEVICE_NAME, instance_id=self.instance_id,
                         volume_id=self.volume_id, stop_instance_before_detaching=True)
