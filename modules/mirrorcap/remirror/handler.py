"""The re-mirroring Lambda: on an instance event or the schedule, reconcile the capture.

Every invocation reconciles the whole capture rather than just the instance
in the event: two API reads, and duplicate, late or lost events all end in
the same state. The event only feeds the log.
"""

from __future__ import annotations

import json
import logging
import os

import boto3

from .ec2 import reconcile
from .model import Settings

logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("mirrorcap")


def instance_in(event: dict) -> str | None:
    detail = event.get("detail") or {}
    return detail.get("instance-id") or detail.get("EC2InstanceId")


def handler(event: dict, context=None, ec2=None) -> dict:
    settings = Settings.from_env(dict(os.environ))
    log.info(json.dumps({"action": "invoked", "capture": settings.capture, "trigger": event.get("detail-type", "manual"),
                         "instance": instance_in(event)}, sort_keys=True))
    result = reconcile(ec2 or boto3.client("ec2"), settings)
    log.info(json.dumps({"action": "done", "capture": settings.capture, **{k: len(v) for k, v in result.items()}}, sort_keys=True))
    return result
