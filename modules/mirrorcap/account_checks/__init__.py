"""What the CLI asks the live AWS account: the drift check (drift.py) and the
pre-flight checks (preflight.py), on EC2 clients from clients.py. Never in the
Lambda's zip."""
