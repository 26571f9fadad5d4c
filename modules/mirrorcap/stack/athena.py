"""`archive {}`: a Glue table over the archived packet indexes and an Athena workgroup to query it.

`mirrorcap find --engine athena` runs there the same SELECT the DuckDB path runs
(find/flows_sql.py). The table is the index files as they are (gzip'd JSON lines,
openx JSON SerDe), partitioned by VNI and by the UTC day a pcap starts, both
projected (no crawler, no partition to add): Athena builds each partition's
location from `storage.location.template`, which must name every partition column.
The hosts' instance directories lie under a partition's location; Athena reads
every object under it ("Athena reads all data stored in the Amazon S3 folder
that you specify", Athena user guide, "Specify a table location in Amazon S3").

The workgroup enforces its configuration (a client cannot send results elsewhere
or unencrypted), writes results to a bucket of its own, encrypted with the capture's
key and expired after RESULT_DAYS, and cancels a query past BYTES_SCANNED_CUTOFF.
"""

from __future__ import annotations

from cdktn import TerraformStack
from cdktn_provider_aws.athena_workgroup import (
    AthenaWorkgroup, AthenaWorkgroupConfiguration, AthenaWorkgroupConfigurationResultConfiguration,
    AthenaWorkgroupConfigurationResultConfigurationEncryptionConfiguration)
from cdktn_provider_aws.glue_catalog_database import GlueCatalogDatabase
from cdktn_provider_aws.glue_catalog_table import (
    GlueCatalogTable, GlueCatalogTablePartitionKeys, GlueCatalogTableStorageDescriptor, GlueCatalogTableStorageDescriptorColumns,
    GlueCatalogTableStorageDescriptorSerDeInfo)
from cdktn_provider_aws.s3_bucket_policy import S3BucketPolicy

from .. import stack_data
from ..contract import ATHENA, ATHENA_RESULTS, FLOWS_TABLE, INDEX_PREFIX, glue_database, resource_name
from ..inventory.model import Capture
from ..find.hostindex import indexer
from .policy import policy_document
from .private_bucket import Expiry, PrivateBucket, bucket_prefix
from .refs import ref
from .tags import named

# The flow rows' columns as Glue (Hive) types, in the index's order (scripts/host/mirrorcap_index.py).
# `vni` is not among them: every row of a file has the file's VNI, which is its partition's.
GLUE_TYPES = {"text": "string", "int": "int", "bigint": "bigint"}
FLOW_COLUMNS = tuple((name, GLUE_TYPES[kind]) for name, kind in indexer().FLOW_SCHEMA if name != "vni")
# The key's <vni> and <date> (contract.ARCHIVE_INDEX_KEY). `day`, not `date`: DATE is reserved in Athena's DDL.
PARTITION_COLUMNS = (("vni", "int"), ("day", "string"))
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"  # reads .gz files decompressed
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
RESULT_DAYS = 1  # a query's result (the flows it found) is read back at once; kept a day for a rerun
BYTES_SCANNED_CUTOFF = 20 << 30  # 20 GiB: indexes of many days of a large fleet; about 0.10 USD at 5 USD/TB
RESULTS_BUCKET_HEAD = "mirrorcap-athena-"


def projection(capture: Capture, bucket: str) -> dict[str, str]:
    """The table's partition projection (Athena user guide, "Supported types for partition projection"):
    the capture's VNIs as an enum, the day as a date over the archive's retention (a pcap's day is the
    one it starts: one more day than the retention), each partition where the hosts put it."""
    days = int(capture.archive_retention_days) + 1
    prefix = f"s3://{bucket}/{INDEX_PREFIX}{capture.name}/"
    return {
        "EXTERNAL": "TRUE",
        "classification": "json",
        "projection.enabled": "true",
        "projection.vni.type": "enum",
        "projection.vni.values": '${join(",", var.%s)}' % stack_data.VNIS,  # data: stack_data.py
        "projection.day.type": "date",
        "projection.day.format": "yyyy-MM-dd",
        "projection.day.range": f"NOW-{days}DAYS,NOW",
        "projection.day.interval": "1",
        "projection.day.interval.unit": "DAYS",
        # $${...}: Athena's placeholders, not Terraform's (escaped in the template Terraform reads)
        "storage.location.template": prefix + "vni$${vni}/$${day}/",
    }


def results_bucket_prefix(capture: str) -> str:
    return bucket_prefix(RESULTS_BUCKET_HEAD, capture)


class IndexTable:
    def __init__(self, stack: TerraformStack, capture: Capture, *, key_arn: str, archive_bucket: str):
        self.database = glue_database(capture.name)
        self.table = FLOWS_TABLE
        self.workgroup = resource_name(capture.name, ATHENA)
        GlueCatalogDatabase(stack, "index_database", name=self.database,
                            description=f"mirrorcap {capture.name}: the archived packet indexes")
        GlueCatalogTable(
            stack, "index_table", database_name=ref("aws_glue_catalog_database", "index_database", "name"), name=self.table,
            description="one row per flow of each archived pcap (kind = 'flow'), and one per file (kind = 'file')",
            table_type="EXTERNAL_TABLE", parameters=projection(capture, archive_bucket),
            partition_keys=[GlueCatalogTablePartitionKeys(name=n, type=t) for n, t in PARTITION_COLUMNS],
            storage_descriptor=GlueCatalogTableStorageDescriptor(
                location=f"s3://{archive_bucket}/{INDEX_PREFIX}{capture.name}/", input_format=TEXT_INPUT, output_format=TEXT_OUTPUT,
                ser_de_info=GlueCatalogTableStorageDescriptorSerDeInfo(serialization_library=JSON_SERDE),
                columns=[GlueCatalogTableStorageDescriptorColumns(name=n, type=t) for n, t in FLOW_COLUMNS]))
        self.results_bucket = self._results_bucket(stack, capture, key_arn).name
        AthenaWorkgroup(stack, "athena", name=self.workgroup, force_destroy=True, tags=named(capture, ATHENA),
                        description=f"mirrorcap {capture.name}: mirrorcap find --engine athena",
                        configuration=AthenaWorkgroupConfiguration(
                            enforce_workgroup_configuration=True, publish_cloudwatch_metrics_enabled=True,
                            bytes_scanned_cutoff_per_query=BYTES_SCANNED_CUTOFF,
                            result_configuration=AthenaWorkgroupConfigurationResultConfiguration(
                                output_location=f"s3://{self.results_bucket}/",
                                encryption_configuration=AthenaWorkgroupConfigurationResultConfigurationEncryptionConfiguration(
                                    encryption_option="SSE_KMS", kms_key_arn=key_arn))))

    @staticmethod
    def _results_bucket(stack: TerraformStack, capture: Capture, key_arn: str) -> PrivateBucket:
        # force_destroy: it holds only query results, each a copy of what the indexes say.
        results = PrivateBucket(stack, "athena_results", prefix=results_bucket_prefix(capture.name), force_destroy=True,
                                tags=named(capture, ATHENA_RESULTS), key_arn=key_arn, expiry=Expiry("expire-results", RESULT_DAYS, 1, 1))
        bucket, arn, public_access = results.bucket, results.arn, results.public_access
        S3BucketPolicy(stack, "athena_results_policy", bucket=bucket, depends_on=[public_access], policy=policy_document(
            stack, "athena_results_bucket_policy", {"Version": "2012-10-17", "Statement": [
                {"Sid": "DenyPlainHttp", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:*",
                 "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
        return results
