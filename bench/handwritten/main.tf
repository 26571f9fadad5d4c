# A hand-written root module with the same resources as mirrorcap's fleet stack (alarms included) for
# bench/fleet_scale.py (the fleet, its archive, N explicit ENI sources; no tag sources, so no
# re-mirroring Lambda): written as a Terraform user would, not generated. The bench plans it in the
# same run as mirrorcap's synthesized stack, against the same moto account.
#
# The sources are data, apart from the code: var.sources from terraform.tfvars.json
# (sources.tf holds them as a local instead: the bench times both ways of writing it).

terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

variable "region" { type = string }
variable "vpc_id" { type = string }
variable "subnet_ids" { type = list(string) }
variable "ami" { type = string }
variable "mirror_source_cidrs" { type = list(string) }

locals {
  name      = "fleet"
  prefix    = "mirrorcap-${local.name}"
  host_tags = { ManagedBy = "mirrorcap", "mirrorcap:stack" = local.name }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = local.host_tags
  }
}

data "aws_partition" "current" {}
data "aws_caller_identity" "account" {}

data "aws_subnet" "fleet" {
  for_each = toset(var.subnet_ids)
  id       = each.value
}

# --- Security groups ---------------------------------------------------------------

resource "aws_security_group" "management" {
  name        = "${local.prefix}-management"
  description = "mirrorcap capture host management: HTTPS egress only (SSM, packages)"
  vpc_id      = var.vpc_id
  ingress     = []
  egress {
    description = "HTTPS to SSM endpoints and package repositories"
    protocol    = "tcp"
    from_port   = 443
    to_port     = 443
    cidr_blocks = ["0.0.0.0/0"]
  }
  tags = { Name = "${local.prefix}-management" }
}

resource "aws_security_group" "mirror" {
  name        = "${local.prefix}-mirror"
  description = "mirrorcap mirror target: VXLAN (UDP 4789) from mirror sources only"
  vpc_id      = var.vpc_id
  egress      = []
  ingress {
    description = "VXLAN from traffic mirror sources (CIDR)"
    protocol    = "udp"
    from_port   = 4789
    to_port     = 4789
    cidr_blocks = var.mirror_source_cidrs
  }
  tags = { Name = "${local.prefix}-mirror" }
}

resource "aws_security_group" "health" {
  name        = "${local.prefix}-health"
  description = "mirrorcap fleet host: the NLB health check from the fleet subnets only"
  vpc_id      = var.vpc_id
  egress      = []
  ingress {
    description = "NLB health check (HTTP GET /, 200 = mirrorcap-health passes)"
    protocol    = "tcp"
    from_port   = 8081
    to_port     = 8081
    cidr_blocks = [for s in data.aws_subnet.fleet : s.cidr_block]
  }
  tags = { Name = "${local.prefix}-health" }
}

# --- The hosts' role ---------------------------------------------------------------------

resource "aws_iam_role" "host" {
  name        = "${local.prefix}-host"
  description = "mirrorcap capture host: SSM Session Manager, pcap archive writes"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Action = "sts:AssumeRole", Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" } }]
  })
  tags = { Name = "${local.prefix}-host" }
}

resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.host.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "host" {
  name = "${local.prefix}-host"
  role = aws_iam_role.host.name
  tags = { Name = "${local.prefix}-host" }
}

resource "aws_iam_role_policy" "archive" {
  name = "${local.prefix}-archive"
  role = aws_iam_role.host.name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "ArchivePcaps", Effect = "Allow", Action = "s3:PutObject",
      Resource = ["${aws_s3_bucket.archive.arn}/${local.name}/*", "${aws_s3_bucket.archive.arn}/index/${local.name}/*"] },
      { Sid = "WithTheCapturesKey", Effect = "Allow", Action = ["kms:GenerateDataKey", "kms:Encrypt"], Resource = aws_kms_key.pcaps.arn,
      Condition = { StringEquals = { "kms:ViaService" = "s3.${var.region}.amazonaws.com" } } },
    ]
  })
}

# --- The volumes' and the archive's key -----------------------------------------------------------

locals {
  account    = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.account.account_id}"
  key_users  = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
  autoscaler = "${local.account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
  in_account = { "kms:CallerAccount" = data.aws_caller_identity.account.account_id }
}

resource "aws_kms_key" "pcaps" {
  description             = "mirrorcap ${local.name}: pcap and root volumes"
  deletion_window_in_days = 30
  enable_key_rotation     = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "AccountAdministersTheKey", Effect = "Allow", Principal = { AWS = "${local.account}:root" }, Resource = "*",
        Action = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*", "kms:Disable*",
      "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"] },
      { Sid = "UseOnlyThroughEbs", Effect = "Allow", Principal = { AWS = "${local.account}:root" }, Resource = "*", Action = local.key_users,
      Condition = { StringEquals = merge({ "kms:ViaService" = "ec2.${var.region}.amazonaws.com" }, local.in_account) } },
      { Sid = "GrantsOnlyForEbs", Effect = "Allow", Principal = { AWS = "${local.account}:root" }, Resource = "*", Action = "kms:CreateGrant",
        Condition = { StringEquals = merge({ "kms:ViaService" = "ec2.${var.region}.amazonaws.com" }, local.in_account),
      Bool = { "kms:GrantIsForAWSResource" = "true" } } },
      { Sid = "UseThroughS3ForTheArchive", Effect = "Allow", Principal = { AWS = "${local.account}:root" }, Resource = "*", Action = local.key_users,
      Condition = { StringEquals = merge({ "kms:ViaService" = "s3.${var.region}.amazonaws.com" }, local.in_account) } },
      { Sid = "AutoScalingEncryptsTheFleetsVolumes", Effect = "Allow", Principal = { AWS = local.autoscaler }, Resource = "*", Action = local.key_users },
      { Sid = "AutoScalingGrantsOnlyForEbs", Effect = "Allow", Principal = { AWS = local.autoscaler }, Resource = "*", Action = "kms:CreateGrant",
      Condition = { Bool = { "kms:GrantIsForAWSResource" = "true" } } },
    ]
  })
  tags = { Name = "${local.prefix}-pcaps" }
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_kms_alias" "pcaps" {
  name          = "alias/${local.prefix}-pcaps"
  target_key_id = aws_kms_key.pcaps.key_id
}

# --- The archive ---------------------------------------------------------------------------

resource "aws_s3_bucket" "archive" {
  bucket_prefix = "${local.prefix}-"
  force_destroy = false
  tags          = { Name = "${local.prefix}-archive" }
}

resource "aws_s3_bucket_public_access_block" "archive" {
  bucket                  = aws_s3_bucket.archive.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "archive" {
  bucket = aws_s3_bucket.archive.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    bucket_key_enabled = true
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.pcaps.arn
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    id     = "expire-pcaps"
    status = "Enabled"
    filter {
      prefix = ""
    }
    expiration {
      days = 15
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

locals {
  objects = "${aws_s3_bucket.archive.arn}/*"
}

resource "aws_s3_bucket_policy" "archive" {
  bucket     = aws_s3_bucket.archive.id
  depends_on = [aws_s3_bucket_public_access_block.archive]
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "DenyPlainHttp", Effect = "Deny", Principal = { AWS = "*" }, Action = "s3:*", Resource = [aws_s3_bucket.archive.arn, local.objects],
      Condition = { Bool = { "aws:SecureTransport" = "false" } } },
      { Sid = "HostsWriteTheirCapture", Effect = "Allow", Principal = { AWS = aws_iam_role.host.arn }, Action = "s3:PutObject",
      Resource = ["${aws_s3_bucket.archive.arn}/${local.name}/*", "${aws_s3_bucket.archive.arn}/index/${local.name}/*"] },
      { Sid = "NobodyElseWrites", Effect = "Deny", Principal = { AWS = "*" }, Action = "s3:PutObject", Resource = local.objects,
      Condition = { ArnNotEquals = { "aws:PrincipalArn" = aws_iam_role.host.arn } } },
      { Sid = "OnlyTheCapturesKey", Effect = "Deny", Principal = { AWS = "*" }, Action = "s3:PutObject", Resource = local.objects,
        Condition = { StringNotEquals = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = aws_kms_key.pcaps.arn },
      Null = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = "false" } } },
      { Sid = "OnlySseKms", Effect = "Deny", Principal = { AWS = "*" }, Action = "s3:PutObject", Resource = local.objects,
        Condition = { StringNotEquals = { "s3:x-amz-server-side-encryption" = "aws:kms" },
      Null = { "s3:x-amz-server-side-encryption" = "false" } } },
      { Sid = "HostsDoNotList", Effect = "Deny", Principal = { AWS = "*" }, Action = "s3:ListBucket", Resource = aws_s3_bucket.archive.arn,
      Condition = { ArnEquals = { "aws:PrincipalArn" = aws_iam_role.host.arn } } },
      { Sid = "NobodyReads", Effect = "Deny", Principal = { AWS = "*" }, Action = ["s3:GetObject", "s3:GetObjectVersion"], Resource = local.objects },
    ]
  })
}

# --- Athena over the archived packet indexes ------------------------------------------------

resource "aws_glue_catalog_database" "index" {
  name = "mirrorcap_${local.name}"
}

resource "aws_glue_catalog_table" "flows" {
  database_name = aws_glue_catalog_database.index.name
  name          = "flows"
  table_type    = "EXTERNAL_TABLE"
  parameters = {
    EXTERNAL                       = "TRUE"
    classification                 = "json"
    "projection.enabled"           = "true"
    "projection.vni.type"          = "enum"
    "projection.vni.values"        = join(",", local.vnis)
    "projection.day.type"          = "date"
    "projection.day.format"        = "yyyy-MM-dd"
    "projection.day.range"         = "NOW-16DAYS,NOW"
    "projection.day.interval"      = "1"
    "projection.day.interval.unit" = "DAYS"
    "storage.location.template"    = "s3://${aws_s3_bucket.archive.bucket}/index/${local.name}/vni$${vni}/$${day}/"
  }
  partition_keys {
    name = "vni"
    type = "int"
  }
  partition_keys {
    name = "day"
    type = "string"
  }
  storage_descriptor {
    location      = "s3://${aws_s3_bucket.archive.bucket}/index/${local.name}/"
    input_format  = "org.apache.hadoop.mapred.TextInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
    ser_de_info {
      serialization_library = "org.openx.data.jsonserde.JsonSerDe"
    }
    dynamic "columns" {
      for_each = [["kind", "string"], ["fam", "string"], ["proto", "int"], ["sa", "string"], ["da", "string"], ["sp", "int"],
        ["dp", "int"], ["first", "bigint"], ["last", "bigint"], ["packets", "bigint"], ["bytes", "bigint"], ["runs", "string"]]
      content {
        name = columns.value[0]
        type = columns.value[1]
      }
    }
  }
}

resource "aws_s3_bucket" "athena_results" {
  bucket_prefix = "mirrorcap-athena-${local.name}-"
  force_destroy = true
  tags          = { Name = "${local.prefix}-athena-results" }
}

resource "aws_s3_bucket_public_access_block" "athena_results" {
  bucket                  = aws_s3_bucket.athena_results.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "athena_results" {
  bucket = aws_s3_bucket.athena_results.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "athena_results" {
  bucket = aws_s3_bucket.athena_results.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "athena_results" {
  bucket = aws_s3_bucket.athena_results.id
  rule {
    bucket_key_enabled = true
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.pcaps.arn
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "athena_results" {
  bucket = aws_s3_bucket.athena_results.id
  rule {
    id     = "expire-results"
    status = "Enabled"
    filter {
      prefix = ""
    }
    expiration {
      days = 1
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_s3_bucket_policy" "athena_results" {
  bucket     = aws_s3_bucket.athena_results.id
  depends_on = [aws_s3_bucket_public_access_block.athena_results]
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "DenyPlainHttp", Effect = "Deny", Principal = { AWS = "*" }, Action = "s3:*",
        Resource = [aws_s3_bucket.athena_results.arn, "${aws_s3_bucket.athena_results.arn}/*"],
      Condition = { Bool = { "aws:SecureTransport" = "false" } } },
    ]
  })
}

resource "aws_athena_workgroup" "athena" {
  name          = "${local.prefix}-athena"
  force_destroy = true
  tags          = { Name = "${local.prefix}-athena" }
  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = 21474836480
    result_configuration {
      output_location = "s3://${aws_s3_bucket.athena_results.bucket}/"
      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.pcaps.arn
      }
    }
  }
}

# --- The fleet: NLB, template, group ---------------------------------------------------------

resource "aws_lb" "fleet" {
  load_balancer_type               = "network"
  internal                         = true
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = false
  enable_deletion_protection       = true
  tags                             = { Name = "${local.prefix}-nlb" }
}

resource "aws_lb_target_group" "fleet" {
  target_type          = "instance"
  protocol             = "UDP"
  port                 = 4789
  vpc_id               = var.vpc_id
  deregistration_delay = "60"
  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = "8081"
    path                = "/"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 3
    unhealthy_threshold = 3
  }
  tags = { Name = "${local.prefix}-targets" }
}

resource "aws_lb_listener" "vxlan" {
  load_balancer_arn = aws_lb.fleet.arn
  protocol          = "UDP"
  port              = 4789
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.fleet.arn
  }
  tags = { Name = "${local.prefix}-nlb" }
}

data "aws_ami" "host" {
  filter {
    name   = "image-id"
    values = [var.ami]
  }
}

resource "aws_launch_template" "fleet" {
  name                   = "${local.prefix}-fleet"
  description            = "mirrorcap ${local.name}: capture fleet host"
  image_id               = var.ami
  instance_type          = "t3.small"
  ebs_optimized          = "true"
  update_default_version = true
  # The host bootstrap: the same rendered template mirrorcap's stack ships.
  user_data = base64gzip(templatefile("${path.module}/user-data.sh.tftpl", { volume_id = "", eni_id = "", archive_bucket = aws_s3_bucket.archive.bucket }))
  iam_instance_profile {
    name = aws_iam_instance_profile.host.name
  }
  monitoring {
    enabled = true
  }
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }
  network_interfaces {
    device_index                = 0
    associate_public_ip_address = "false"
    delete_on_termination       = "true"
    security_groups             = [aws_security_group.management.id, aws_security_group.mirror.id, aws_security_group.health.id]
  }
  block_device_mappings {
    device_name = data.aws_ami.host.root_device_name
    ebs {
      encrypted             = "true"
      kms_key_id            = aws_kms_key.pcaps.arn
      volume_type           = "gp3"
      volume_size           = 16
      delete_on_termination = "true"
    }
  }
  block_device_mappings {
    device_name = "/dev/sdf"
    ebs {
      encrypted             = "true"
      kms_key_id            = aws_kms_key.pcaps.arn
      volume_type           = "st1"
      volume_size           = 300
      delete_on_termination = "true"
    }
  }
  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.host_tags, { Name = "${local.prefix}-host" })
  }
  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.host_tags, { Name = "${local.prefix}-pcaps" })
  }
  tag_specifications {
    resource_type = "network-interface"
    tags          = merge(local.host_tags, { Name = "${local.prefix}-host" })
  }
  tags = { Name = "${local.prefix}-fleet" }
}

resource "aws_autoscaling_group" "fleet" {
  name                      = "${local.prefix}-fleet"
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = length(var.subnet_ids)
  desired_capacity          = length(var.subnet_ids)
  max_size                  = 2 * length(var.subnet_ids)
  target_group_arns         = [aws_lb_target_group.fleet.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 600
  wait_for_capacity_timeout = "0"
  launch_template {
    id      = aws_launch_template.fleet.id
    version = aws_launch_template.fleet.latest_version
  }
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
    }
  }
  dynamic "tag" {
    for_each = merge(local.host_tags, { Name = "${local.prefix}-fleet" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = false
    }
  }
}

# --- Traffic mirroring ----------------------------------------------------------------------------

resource "aws_ec2_traffic_mirror_target" "fleet" {
  description               = "mirrorcap ${local.name} capture fleet (NLB)"
  network_load_balancer_arn = aws_lb.fleet.arn
  depends_on                = [aws_lb_listener.vxlan]
  tags                      = { Name = "${local.prefix}-target" }
}

resource "aws_ec2_traffic_mirror_filter" "all" {
  description = "mirrorcap ${local.name}"
  tags        = { Name = "${local.prefix}-filter" }
}

resource "aws_ec2_traffic_mirror_filter_rule" "all" {
  for_each                 = { ingress = "accept all inbound", egress = "accept all outbound" }
  traffic_mirror_filter_id = aws_ec2_traffic_mirror_filter.all.id
  traffic_direction        = each.key
  description              = each.value
  rule_number              = 100
  rule_action              = "accept"
  source_cidr_block        = "0.0.0.0/0"
  destination_cidr_block   = "0.0.0.0/0"
}

resource "aws_ec2_traffic_mirror_session" "source" {
  for_each                 = local.sources
  network_interface_id     = each.key
  session_number           = each.value.session_number
  virtual_network_id       = each.value.vni
  description              = "mirrorcap ${local.name}: ${each.key}"
  traffic_mirror_target_id = aws_ec2_traffic_mirror_target.fleet.id
  traffic_mirror_filter_id = aws_ec2_traffic_mirror_filter.all.id
  tags                     = { Name = "${local.prefix}-${each.key}", "mirrorcap:source" = each.key }
}

output "nlb_arn" { value = aws_lb.fleet.arn }
output "asg_name" { value = aws_autoscaling_group.fleet.name }
output "archive_bucket" { value = aws_s3_bucket.archive.bucket }
output "athena_workgroup" { value = aws_athena_workgroup.athena.name }
output "glue_database" { value = aws_glue_catalog_database.index.name }
output "glue_table" { value = aws_glue_catalog_table.flows.name }
output "athena_results_bucket" { value = aws_s3_bucket.athena_results.bucket }
output "mirror_target_id" { value = aws_ec2_traffic_mirror_target.fleet.id }
output "mirror_filter_id" { value = aws_ec2_traffic_mirror_filter.all.id }
output "session_ids" { value = { for source, session in aws_ec2_traffic_mirror_session.source : source => session.id } }

# --- Alarms: the hosts publish their health, CloudWatch pages through an encrypted topic ---------

locals {
  # every VNI the sources use: an alarm pair each, and the Athena table's VNI partitions
  vnis = sort(distinct([for s in values(local.sources) : tostring(s.vni)]))
}

resource "aws_iam_role_policy" "metrics" {
  name = "${local.prefix}-metrics"
  role = aws_iam_role.host.name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{ Sid = "PublishHealthMetrics", Effect = "Allow", Action = "cloudwatch:PutMetricData", Resource = "*",
    Condition = { StringEquals = { "cloudwatch:namespace" = "mirrorcap" } } }]
  })
}

resource "aws_kms_key" "alarms" {
  description             = "mirrorcap ${local.name}: the alarm topic"
  deletion_window_in_days = 30
  enable_key_rotation     = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "AccountAdministersTheKey", Effect = "Allow", Principal = { AWS = "${local.account}:root" }, Resource = "*",
        Action = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*", "kms:Disable*",
      "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"] },
      { Sid    = "UseOnlyThroughSns", Effect = "Allow", Principal = { AWS = "${local.account}:root" }, Resource = "*",
        Action = ["kms:Decrypt", "kms:GenerateDataKey*"],
      Condition = { StringEquals = merge({ "kms:ViaService" = "sns.${var.region}.amazonaws.com" }, local.in_account) } },
      { Sid = "CloudWatchPublishesAlarms", Effect = "Allow", Principal = { Service = "cloudwatch.amazonaws.com" }, Resource = "*",
      Action = ["kms:Decrypt", "kms:GenerateDataKey*"] },
    ]
  })
  tags = { Name = "${local.prefix}-alarms" }
}

resource "aws_kms_alias" "alarms" {
  name          = "alias/${local.prefix}-alarms"
  target_key_id = aws_kms_key.alarms.key_id
}

resource "aws_sns_topic" "alarms" {
  name              = "${local.prefix}-alarms"
  kms_master_key_id = aws_kms_key.alarms.arn
  tags              = { Name = "${local.prefix}-alarms" }
}

resource "aws_cloudwatch_metric_alarm" "not_capturing" {
  for_each            = toset(local.vnis)
  alarm_name          = "${local.prefix}-not-capturing-vni${each.key}"
  alarm_description   = "mirrorcap ${local.name}: VNI ${each.key} is not being captured, or no host reports it"
  namespace           = "mirrorcap"
  metric_name         = "Capturing"
  dimensions          = { Capture = local.name, VNI = each.key }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "packets_lost" {
  for_each            = toset(local.vnis)
  alarm_name          = "${local.prefix}-packets-lost-vni${each.key}"
  alarm_description   = "mirrorcap ${local.name}: VNI ${each.key} lost packets"
  namespace           = "mirrorcap"
  metric_name         = "PacketsLost"
  dimensions          = { Capture = local.name, VNI = each.key }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "disk_free_low" {
  alarm_name          = "${local.prefix}-disk-free-low"
  alarm_description   = "mirrorcap ${local.name}: the pcap volume has under 5% free for 5 minutes"
  namespace           = "mirrorcap"
  metric_name         = "DiskFreePercent"
  dimensions          = { Capture = local.name }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "LessThanThreshold"
  threshold           = 5
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "archive_backlog" {
  alarm_name          = "${local.prefix}-archive-backlog"
  alarm_description   = "mirrorcap ${local.name}: over ${length(local.vnis) * 4} closed pcaps wait for their upload to S3"
  namespace           = "mirrorcap"
  metric_name         = "ArchiveBacklog"
  dimensions          = { Capture = local.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = length(local.vnis) * 4
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}
