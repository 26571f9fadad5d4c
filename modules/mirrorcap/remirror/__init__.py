"""The re-mirroring Lambda's runtime. This folder is its zip (stack/lambda_zip.py),
where it is the package mirrorcap.live (the handler deployed functions name).

It may import only the standard library, boto3/botocore, its own modules and
the few mirrorcap modules lambda_zip.ALLOWED names (the contract, AWS limits,
session numbering); the zip carries exactly those, and tests/unit/test_lambda_imports.py
enforces the rule. The CLI reuses it (`check --fix` runs the same reconcile).
"""
