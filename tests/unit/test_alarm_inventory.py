"""The alarms block of the inventory: the SNS topic the capture's alarms notify."""

from __future__ import annotations

import pytest

from helpers import eni, minimal, mirrorcap, sources, write
from mirrorcap.inventory import load

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ops-pages"


def alarms(body: str) -> str:
    return minimal(sources(eni(1)) + f"\n  alarms {{\n{body}\n  }}\n")


def test_no_alarms_block_means_the_stack_creates_the_topic(workdir):
    (c,) = load(write(workdir, minimal(sources(eni(1))))).captures
    assert c.alarms.topic_arn is None


def test_a_named_topic_is_kept_as_written(workdir):
    (c,) = load(write(workdir, alarms(f'    topic_arn = "{TOPIC}"'))).captures
    assert c.alarms.topic_arn == TOPIC


BAD = {
    "not an arn": ('    topic_arn = "ops-pages"', "alarms > topic_arn", "is not a standard SNS topic ARN"),
    "a queue": ('    topic_arn = "arn:aws:sqs:eu-west-1:123456789012:ops"', "alarms > topic_arn", "standard SNS topic ARN"),
    "fifo": (f'    topic_arn = "{TOPIC}.fifo"', "alarms > topic_arn", "standard SNS topic ARN"),
    "short account": ('    topic_arn = "arn:aws:sns:eu-west-1:1234:ops"', "alarms > topic_arn", "standard SNS topic ARN"),
    "expression": ('    topic_arn = "${var.topic}"', "alarms > topic_arn", "standard SNS topic ARN"),
    "other region": (f'    topic_arn = "{TOPIC.replace("eu-west-1", "us-east-1")}"', "alarms > topic_arn",
                     "a CloudWatch alarm notifies a topic in its own region only"),
    "unknown field": ('    topic = "x"', "alarms > topic", "did you mean `topic_arn`?"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_wrong_topic_names_the_file_the_field_and_the_fix_and_writes_nothing(workdir, case):
    text, field, words = BAD[case]
    write(workdir, alarms(text))
    result = mirrorcap("validate", cwd=workdir)
    assert result.returncode == 1, result.stdout
    assert "capture.hcl" in result.stderr and field in result.stderr and words in result.stderr, result.stderr
    assert "fix:" in result.stderr, result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["capture.hcl"]
