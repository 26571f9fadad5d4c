"""Inventory -> Terraform: pipeline.py is the path `main.py` follows (prepare,
then build and write the stacks); overlap.py runs the same path with the
provider load overlapped; review_hcl.py writes the HCL copy people review."""
