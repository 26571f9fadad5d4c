"""One capture block of the inventory -> one Terraform stack: one host, or one fleet (whatever its sources)."""

from __future__ import annotations

from constructs import Construct
from cdktn import LocalBackend, S3Backend, TerraformOutput, TerraformStack
from cdktn_provider_aws.data_aws_caller_identity import DataAwsCallerIdentity
from cdktn_provider_aws.provider import AwsProvider, AwsProviderDefaultTags

from ..inventory.model import Backend, Capture
from ..stack_data import structural
from .alarms import CaptureAlarms
from .host import CaptureHost
from .iam import InstanceRole
from .kms import volume_key
from .refs import data_ref, ref
from .mirroring import Mirroring
from .remirror import Remirror
from .security import SecurityGroups
from .tags import default_tags

# The archive bucket's name in the user data's templatefile() call (a bare expression there).
ARCHIVE_BUCKET_EXPRESSION = "aws_s3_bucket.archive.bucket"


class CaptureStack(TerraformStack):
    def __init__(self, scope: Construct, capture: Capture, *, remirror_zip: str | None = None):
        super().__init__(scope, capture.name)
        # The sources are data, never structure (stack_data.py): the stack does not see them, so a
        # source edit leaves cdk.tf.json unchanged and `mirrorcap synth` may skip cdktn.
        capture = structural(capture)
        AwsProvider(self, "aws", region=capture.region, default_tags=[AwsProviderDefaultTags(tags=default_tags(capture))])
        _backend(self, capture.backend)

        # The concern classes put their resources straight into the stack under
        # their final names: a nested Construct would need an override_logical_id
        # round trip to the jsii process per resource to keep names readable.
        sgs = SecurityGroups(self, capture)
        role = InstanceRole(self, capture)
        DataAwsCallerIdentity(self, "account")
        account = data_ref("aws_caller_identity", "account", "account_id")
        key_arn = volume_key(self, capture, partition=role.partition, account=account)
        archive = None
        # The archive's and the fleet's bindings are imported only when a capture uses them: each is
        # a provider module to load (time every other inventory would pay).
        if capture.archive:
            from .archive import ArchiveBucket
            archive = ArchiveBucket(self, capture, key_arn=key_arn, host_role_name=ref("aws_iam_role", "host_role", "name"),
                                    host_role_arn=ref("aws_iam_role", "host_role", "arn"))
            TerraformOutput(self, "archive_bucket", value=archive.name, description="S3 bucket the hosts archive closed pcaps to")
            from .athena import IndexTable
            athena = IndexTable(self, capture, key_arn=key_arn, archive_bucket=archive.name)
            TerraformOutput(self, "athena_workgroup", value=athena.workgroup,
                            description="Athena workgroup of mirrorcap find --engine athena")
            TerraformOutput(self, "glue_database", value=athena.database, description="Glue database of the archived indexes")
            TerraformOutput(self, "glue_table", value=athena.table, description="Glue table over the archived indexes (one row per flow)")
            TerraformOutput(self, "athena_results_bucket", value=athena.results_bucket, description="S3 bucket of the workgroup's query results")
        if capture.fleet:
            from .fleet import CaptureFleet
            fleet = CaptureFleet(self, capture, management_sg_id=sgs.management_id, mirror_sg_id=sgs.mirror_id,
                                 instance_profile=role.profile_name, key_arn=key_arn, archive_bucket=ARCHIVE_BUCKET_EXPRESSION)
            mirroring = Mirroring(self, capture, target_nlb_arn=fleet.nlb_arn, target_depends_on=[fleet.listener])
        else:
            host = CaptureHost(self, capture, management_sg_id=sgs.management_id, mirror_sg_id=sgs.mirror_id,
                               instance_profile=role.profile_name, key_arn=key_arn,
                               archive_bucket=ARCHIVE_BUCKET_EXPRESSION if archive else None)
            mirroring = Mirroring(self, capture, target_eni_id=host.eni_id)
        target_id, filter_id = mirroring.target_id, mirroring.filter_id
        alarms = CaptureAlarms(self, capture, partition=role.partition, account=account,
                               host_role_name=ref("aws_iam_role", "host_role", "name"))
        TerraformOutput(self, "alarm_topic_arn", value=alarms.topic_arn,
                        description="SNS topic the capture's alarms notify (subscribe whoever is paged)")
        if capture.auto_mirror and capture.auto_mirror.deploy_lambda:
            remirror = Remirror(self, capture, partition=role.partition, account=account, target_id=target_id, filter_id=filter_id,
                                package_zip=remirror_zip)
            TerraformOutput(self, "remirror_function", value=remirror.function_name,
                            description="re-mirroring Lambda (logs: /aws/lambda/<name>)")

        if capture.fleet:
            TerraformOutput(self, "nlb_arn", value=fleet.nlb_arn, description="internal NLB: the traffic mirror target")
            TerraformOutput(self, "asg_name", value=fleet.group_name,
                            description="capture hosts' Auto Scaling group (connect: aws ssm start-session --target <instance id>)")
        else:
            TerraformOutput(self, "instance_id", value=host.instance_id, description="capture host (connect: aws ssm start-session --target <id>)")
            TerraformOutput(self, "mirror_eni_id", value=host.eni_id, description="ENI receiving the mirrored VXLAN traffic")
            TerraformOutput(self, "pcap_volume_id", value=host.volume_id, description="EBS volume holding the pcaps")
        TerraformOutput(self, "mirror_target_id", value=target_id)
        TerraformOutput(self, "mirror_filter_id", value=filter_id)
        TerraformOutput(self, "session_ids", value=mirroring.session_ids,
                        description="traffic mirror session ID per source")

def _backend(stack: TerraformStack, b: Backend) -> None:
    if b.kind == "local":
        LocalBackend(stack, path=b.path)
        return
    S3Backend(stack, bucket=b.bucket, key=b.key, region=b.region, encrypt=b.encrypt,
              use_lockfile=b.use_lockfile or None, dynamodb_table=b.dynamodb_table or None,
              kms_key_id=b.kms_key_id or None,
              assume_role={"role_arn": b.role_arn} if b.role_arn else None)
