"""mirrorcap: packet capture on AWS with VPC Traffic Mirroring."""
