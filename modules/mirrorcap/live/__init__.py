"""The live account: re-mirroring (Lambda), drift check and pre-flight (CLI).

This package is also the Lambda's code: it may import only the standard
library, boto3/botocore, and `mirrorcap.aws_limits` / `mirrorcap.sessions`
(the zip carries exactly those; see `package.py`).
"""
