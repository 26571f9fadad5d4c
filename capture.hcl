# mirrorcap inventory: one `capture` block = one capture host = one Terraform stack.
#
# The IDs below are placeholders: replace them with your own, then
#   make synth     # validate, number the sessions, write cdktf.out/stacks/<name>/
#   make diff STACK=prod / make deploy STACK=prod   (needs AWS credentials)
# Reference for every field: docs/inventory.md.

capture "prod" {
  region    = "ap-northeast-1"
  vpc_id    = "vpc-0123456789abcdef0"
  subnet_id = "subnet-0123456789abcdef0" # same subnet as production: no extra routing, same security level

  # t3.micro froze under tshark in the original runbook; t3.small is the floor.
  instance_type = "t3.small"
  # The capture host's AMI: Amazon Linux 2023 with rendered/prod/bake.sh baked in
  # (make bake CAPTURE=prod prints this line); it captures seconds after boot.
  ami = "ami-0123456789abcdef0"

  # VXLAN network identifier stamped on every session and decapsulated by the host.
  vni = 12345

  storage {
    size_gib = 300   # st1: 125 GiB minimum; sustains ~12 MiB/s (~100 Mbit/s) at 300 GiB
    type     = "st1"
    # expected_mbps = 5   # average mirrored Mbit/s: validate warns if 15 days of it do not fit (mirrorcap capacity)
    # kms_key_id = "alias/pcaps"   # a key of yours (alias, key ID or ARN); default: a dedicated key the stack creates
  }

  network {
    # Who may send VXLAN (UDP 4789) to the mirror ENI: the production subnet and/or its security group.
    mirror_source_cidrs              = ["10.0.16.0/20"]
    mirror_source_security_group_ids = ["sg-0123456789abcdef0"]
    # HTTPS egress for SSM and package repositories (default 0.0.0.0/0; narrow it to your VPC endpoints if you have them).
    egress_cidrs = ["0.0.0.0/0"]
  }

  # No rules = accept everything in both directions (the runbook's filter). At most 10 rules.
  filter {
    rule {
      direction   = "ingress"
      protocol    = "tcp"
      destination_ports = 443
      description = "HTTPS into the web tier"
    }
    rule {
      direction   = "egress"
      protocol    = "all"
      description = "everything the web tier sends"
    }
  }

  # One session per source: an ENI, or an instance (its primary ENI). At most 10 per capture host.
  source {
    instance_id = "i-0123456789abcdef0"
    description = "web-1"
  }
  source {
    eni_id      = "eni-0123456789abcdef0"
    description = "web-2"
  }
  source {
    eni_id         = "eni-0fedcba9876543210"
    description    = "api-1 (pinned session number: evaluated before other sessions on this ENI)"
    session_number = 10
    packet_length  = 1500
  }

  # Instances that come and go (releases, Auto Scaling): select them by tags. The
  # re-mirroring Lambda (auto_mirror below) mirrors each new match within seconds.
  # source {
  #   tags        = { Service = "web", Environment = "prod" }
  #   description = "web tier, whatever its instances are today"
  # }
  # auto_mirror {
  #   ends_at = "2026-12-01T18:00:00+09:00"   # campaign end: its sessions are removed after this
  # }

  host {
    rotate_seconds   = 600 # a new pcap every 10 minutes
    retention_days   = 15
    min_free_percent = 10  # delete oldest pcaps when the volume is fuller than this
  }

  tags = {
    Team    = "sre"
    Purpose = "packet-capture"
  }

  backend "s3" {
    bucket = "example-terraform-state"
    key    = "mirrorcap/prod.tfstate"
    # use_lockfile = true (default): S3 native locking, Terraform/OpenTofu >= 1.10
  }
}
