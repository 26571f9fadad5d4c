"""IAM and KMS policies as aws_iam_policy_document data sources.

A JSON string holding ${...} references comes out mangled in the review HCL
(cdk.tf); statement blocks read the same in both files. Policies are written
as plain dicts (Sid, Effect, Action, Resource, Principal, Condition) and
converted here.
"""

from __future__ import annotations

from cdktn import TerraformStack
from cdktn_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument, DataAwsIamPolicyDocumentStatement, DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals)

from .refs import data_ref


def _as_list(v) -> list:
    return [v] if isinstance(v, str) else list(v)


def policy_document(stack: TerraformStack, name: str, doc: dict) -> str:
    """The document's JSON, as a reference to the data source `name`."""
    DataAwsIamPolicyDocument(stack, name, version=doc["Version"], statement=[
        DataAwsIamPolicyDocumentStatement(
            sid=s["Sid"], effect=s["Effect"], actions=_as_list(s["Action"]),
            resources=_as_list(s["Resource"]) if "Resource" in s else None,  # a trust policy has none
            principals=[DataAwsIamPolicyDocumentStatementPrincipals(type=kind, identifiers=_as_list(who))
                        for kind, who in s.get("Principal", {}).items()] or None,
            condition=[DataAwsIamPolicyDocumentStatementCondition(test=test, variable=key, values=_as_list(value))
                       for test, pairs in s.get("Condition", {}).items() for key, value in pairs.items()] or None)
        for s in doc["Statement"]])
    return data_ref("aws_iam_policy_document", name, "json")
