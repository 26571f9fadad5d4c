# The capture host's AMI: the latest Amazon Linux 2023 (x86_64) with the rendered
# rendered/<capture>/bake.sh run on it once (packages, the mirrorcap user and
# group, scripts, systemd units), so a host boots into capture without baking
# itself. `make bake CAPTURE=<name>` renders, then runs this with the variables
# from the inventory (mirrorcap bake vars); packer/README.md
# takes the AMI ID on to `ami = "ami-..."` in the inventory.

variable "capture" {
  type        = string
  description = "The capture (inventory block) this AMI is for: names and tags it."
}

variable "region" {
  type        = string
  description = "The capture's region: the AMI is registered there."
}

variable "bake_script" {
  type        = string
  description = "Path of rendered/<capture>/bake.sh (mirrorcap render)."
}

variable "mirrorcap_version" {
  type        = string
  description = "mirrorcap's version (mirrorcap --version), tagged on the AMI."
}

variable "manifest" {
  type        = string
  description = "Where Packer's manifest (the AMI ID) is written."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "The build instance (x86_64): the AMI runs on any x86_64 Nitro type."
}

# No default VPC is assumed (many accounts deleted theirs): make bake passes the
# capture's own VPC and subnet from the inventory (a fleet's first subnet).
variable "vpc_id" {
  type        = string
  description = "The build VPC (the capture's vpc_id): Packer's temporary security group is created in it."
}

variable "subnet_id" {
  type        = string
  description = "The build subnet (the capture's subnet_id). A private subnet needs ssh_interface = \"session_manager\"."
}

variable "ssh_interface" {
  type        = string
  default     = "session_manager"
  description = "How Packer reaches the build instance: session_manager (any subnet with a route to SSM) or public_ip (a public subnet only)."

  validation {
    condition     = contains(["public_ip", "session_manager"], var.ssh_interface)
    error_message = "The ssh_interface must be public_ip or session_manager."
  }
}

variable "kernel" {
  type        = string
  default     = "6.1"
  description = "The AL2023 kernel line (6.1, 6.12...): AWS publishes one AMI per line; 6.1 is the one the stack's al2023-ami-kernel-default parameter resolves to."

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+$", var.kernel))
    error_message = "The kernel must be a kernel line such as 6.1 or 6.12."
  }
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "KMS key (ID, ARN or alias/...) the AMI's snapshot is encrypted with; empty: the account's EBS default key."
}

locals {
  # sha256 of the script as run (file() reads it as UTF-8 text, which bake.sh is):
  # the same as `sha256sum rendered/<capture>/bake.sh`.
  bake_sha256 = sha256(file(var.bake_script))
  stamp       = formatdate("YYYYMMDD-hhmmss", timestamp())
  tags = {
    Name                    = "mirrorcap-${var.capture}"
    "mirrorcap:capture"     = var.capture
    "mirrorcap:version"     = var.mirrorcap_version
    "mirrorcap:bake-sha256" = local.bake_sha256
    "mirrorcap:source-ami"  = "{{ .SourceAMI }}"
  }
}

source "amazon-ebs" "capture" {
  region        = var.region
  instance_type = var.instance_type
  vpc_id        = var.vpc_id
  subnet_id     = var.subnet_id

  # One kernel line: "al2023-ami-2023.*-x86_64" matches kernel-6.1 and kernel-6.12
  # AMIs alike, and most_recent then picks whichever was published last.
  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-kernel-${var.kernel}-x86_64"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  # Reaching the build instance. Either way the SSH key is Packer's temporary
  # key pair, deleted with the build (its public half is removed from the image
  # below). public_ip: SSH open to this machine's public IP only, for the build.
  # session_manager: no inbound path at all, SSH tunnelled through SSM (needs the
  # Session Manager plugin where Packer runs, and the temporary instance profile below).
  ssh_username                              = "ec2-user"
  ssh_interface                             = var.ssh_interface
  associate_public_ip_address               = var.ssh_interface == "public_ip"
  temporary_security_group_source_public_ip = true

  dynamic "temporary_iam_instance_profile_policy_document" {
    for_each = var.ssh_interface == "session_manager" ? [1] : []
    content {
      Version = "2012-10-17"
      Statement {
        Effect = "Allow"
        Action = ["ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]
        Resource = ["*"]
      }
    }
  }

  # IMDSv2 only, on the build instance and on every instance launched from the AMI.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"

  ami_name        = "mirrorcap-${var.capture}-${local.stamp}"
  ami_description = "mirrorcap capture host for ${var.capture}: Amazon Linux 2023 + bake.sh ${local.bake_sha256}"
  encrypt_boot    = true
  kms_key_id      = var.kms_key_id == "" ? null : var.kms_key_id
  tags            = local.tags
  snapshot_tags   = local.tags
  run_tags = {
    Name                = "mirrorcap-bake-${var.capture}"
    "mirrorcap:capture" = var.capture
  }
}

build {
  name    = "mirrorcap"
  sources = ["source.amazon-ebs.capture"]

  # bake.sh installs system packages, users and units: it runs as root.
  provisioner "shell" {
    script          = var.bake_script
    execute_command = "chmod +x {{ .Path }}; sudo -n env {{ .Vars }} {{ .Path }}"
  }

  # The temporary key's public half: its private half is gone with the build,
  # and an image that trusts no key is the capture host's model (SSM only).
  provisioner "shell" {
    inline = ["sudo -n rm -f /home/ec2-user/.ssh/authorized_keys /root/.ssh/authorized_keys"]
  }

  post-processor "manifest" {
    output     = var.manifest
    strip_path = true
    custom_data = {
      capture           = var.capture
      bake_sha256       = local.bake_sha256
      mirrorcap_version = var.mirrorcap_version
    }
  }
}
