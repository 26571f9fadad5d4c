"""A capture host whose capture stops raises its alarm: the host publishes, the stack's alarm decides.

The boot lab as in test_archive_boot.py, with CloudWatch: the moto server the lab serves
under AWS's real names answers monitoring.<region>.amazonaws.com too, and the host's AWS
CLI reaches it with the instance role's credentials from the fake IMDS. The host is a
rendered capture, baked and booted; its mirrorcap-metrics timer publishes by itself. The
alarms are the synthesized stack's (cdk.tf.json): their metric, namespace, dimensions,
statistic, period, threshold, comparison and missing-data rule are evaluated against what
the host published, as CloudWatch evaluates them.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from bootlab import Machine, needs_lab, rootfs
from capturehost import bake_image, check, health, wait_capturing, wait_for
from helpers import eni, instances, minimal, mirrorcap, sources, stack_json, stack_values, synth, write
from mirrorcap import contract
from mirrorcap.host import render
from mirrorcap.inventory import load

pytestmark = needs_lab

VOLUME, ENI = "vol-0a1b2c3d4e5f60719", "eni-0a1b2c3d4e5f60719"
NAME, VNI = "paged", 4242
UNIT = f"mirrorcap-capture@{VNI}.service"
COMPARE = {"LessThanThreshold": lambda v, t: v < t, "LessThanOrEqualToThreshold": lambda v, t: v <= t,
           "GreaterThanThreshold": lambda v, t: v > t, "GreaterThanOrEqualToThreshold": lambda v, t: v >= t}


def evaluate(m: Machine, alarm: dict, end: float) -> tuple[str, list]:
    """ALARM or OK: the alarm's last evaluation_periods periods before `end`, each its statistic over
    the datapoints CloudWatch holds for the alarm's metric and dimensions, or missing (treat_missing_data)."""
    period, n = alarm["period"], alarm["evaluation_periods"]
    start = end - n * period
    got = m.cloudwatch("get_metric_statistics", Namespace=alarm["namespace"], MetricName=alarm["metric_name"],
                       Dimensions=[{"Name": k, "Value": v} for k, v in sorted(alarm["dimensions"].items())],
                       StartTime=dt.datetime.fromtimestamp(start, dt.timezone.utc).isoformat(),
                       EndTime=dt.datetime.fromtimestamp(end, dt.timezone.utc).isoformat(),
                       Period=period, Statistics=[alarm["statistic"]])["Datapoints"]
    buckets = [None] * n
    for p in got:
        i = int((dt.datetime.fromisoformat(p["Timestamp"]).timestamp() - start) // period)
        if 0 <= i < n:
            buckets[i] = p[alarm["statistic"]]
    breaching = 0
    for value in buckets:
        if value is None:
            breaching += alarm.get("treat_missing_data", "missing") == "breaching"
        else:
            breaching += COMPARE[alarm["comparison_operator"]](value, alarm["threshold"])
    return ("ALARM" if breaching >= alarm.get("datapoints_to_alarm", n) else "OK"), buckets


def published(m: Machine, alarm: dict, since: float, instance: bool = False) -> list[float]:
    """Every value of the alarm's metric published since `since` (the capture's series, or this host's)."""
    dims = dict(alarm["dimensions"], **({contract.DIM_INSTANCE: m.instance_id} if instance else {}))
    got = m.cloudwatch("get_metric_data", StartTime=dt.datetime.fromtimestamp(since - 1, dt.timezone.utc).isoformat(),
                       EndTime=dt.datetime.fromtimestamp(time.time() + 60, dt.timezone.utc).isoformat(),
                       MetricDataQueries=[{"Id": "q", "MetricStat": {"Metric": {
                           "Namespace": alarm["namespace"], "MetricName": alarm["metric_name"],
                           "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())]},
                           "Period": 1, "Stat": "Minimum"}}])
    (result,) = got["MetricDataResults"]
    return result["Values"]


def publish(m: Machine) -> dict:
    """One run of the host's publisher that starts now; what it recorded (metrics.json). A start
    while the timer's run is under way only waits for that run: then once more."""
    asked = time.time()
    for _ in range(2):
        r = m.run("systemctl", "start", "mirrorcap-metrics.service", timeout=200)
        assert r.returncode == 0, r.stderr
        state = json.loads(m.read_file("/var/lib/mirrorcap/metrics.json"))
        if state["last_attempt"] >= asked:
            return state
    raise AssertionError(f"no run of mirrorcap-metrics.service after {asked}: {state}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The capture's inventory and its synthesized stack (the alarms as Terraform gets them)."""
    d = tmp_path_factory.mktemp("paged-stack")
    write(d, minimal(sources(eni(1)), name=NAME))
    assert mirrorcap("sessions", "--write", cwd=d).returncode == 0
    r = synth(d, review_hcl=False)
    assert r.returncode == 0, r.stderr
    capture = load(d / "capture.hcl").captures[0]
    # the alarms as Terraform gets them: the per-VNI ones for each VNI of the stack's data
    return capture, instances(stack_json(d, NAME), stack_values(d, NAME), "aws_cloudwatch_metric_alarm")


def test_a_host_whose_capture_stops_raises_the_not_capturing_alarm(stack, tmp_path):
    capture, alarms = stack
    alarm = alarms[f'alarm_not_capturing["{VNI}"]']
    assert alarm["metric_name"] == contract.METRIC_CAPTURING and alarm["treat_missing_data"] == "breaching"
    with Machine(rootfs(), tmp_path, "paged", eni_id=ENI, volume_id=VOLUME) as m:
        m.serve_s3(capture.region)  # the lab's moto server: CloudWatch's endpoint too
        bake_image(m, render.bake_script(capture, render.host_files(capture)))
        m.install_user_data(render.user_data(capture, VOLUME, ENI))
        m.boot()
        wait_capturing(m, vni=VNI)
        assert m.unit_state("mirrorcap-metrics.timer") == "active"  # brought by the capture's target
        # Capturing: the host's own timer publishes every minute (a run now as well, so the first
        # capturing datapoint does not wait); after three periods the alarm reads OK.
        capturing_since = time.time()
        run = publish(m)
        assert run["failures"] == 0 and run["last_published"] >= capturing_since, (run, m.journal("mirrorcap-metrics.service"))
        # The newest first: the timer's first run, under way as the capture started, may have read 0.
        assert published(m, alarm, capturing_since)[0] == 1.0
        assert published(m, alarm, capturing_since, instance=True)[0] == 1.0  # and under this host's own dimensions  # and under this host's own dimensions
        wait_for(lambda: evaluate(m, alarm, time.time())[0] == "OK", 4 * alarm["period"],
                 f"the alarm to read OK: {evaluate(m, alarm, time.time())}", step=5)
        code, report = health(m)
        assert code == 0 and check(report, "metrics")["status"] == "ok", report

        # CloudWatch out of reach: capture and health go on; health says metrics are not published.
        m.set_s3_reachable(False)
        try:
            for _ in range(2):
                assert publish(m)["last_error"]
            assert "NOT PUBLISHED" in m.journal("mirrorcap-metrics.service")
            code, report = health(m)
            metrics = check(report, "metrics")
            assert code == 0 and metrics["status"] == "warn", report  # still healthy: publishing is not capture
            assert "not published since" in metrics["detail"] and metrics["failures"] >= 2, metrics
            assert m.unit_state(UNIT) == "active" and m.unit_state("mirrorcap-metrics.service") != "failed"
        finally:
            m.set_s3_reachable(True)

        # The capture stops: the next datapoint reads 0, and the alarm goes to ALARM.
        m.run("systemctl", "stop", UNIT, check=True)
        stopped = time.time()
        assert publish(m)["failures"] == 0
        assert published(m, alarm, stopped)[0] == 0.0  # the newest first (a run under way at the stop may read 1)
        code, report = health(m)
        assert code == 1 and check(report, "metrics")["status"] == "ok", report
        state, buckets = wait_for(lambda: (lambda e: e if e[0] == "ALARM" else None)(evaluate(m, alarm, time.time())),
                                  3 * alarm["period"], "the alarm to read ALARM", step=5)
        assert 0.0 in buckets, buckets  # the host's own 0, not only missing data


def test_the_synthesized_alarms_read_what_the_host_publishes(stack):
    """Every alarm of the stack names a metric mirrorcap-metrics publishes, under the capture's dimensions."""
    capture, alarms = stack
    published_names = set(render.METRICS["names"])
    assert set(alarms) == {f'alarm_not_capturing["{VNI}"]', f'alarm_packets_lost["{VNI}"]', "alarm_disk_free_low"}
    for a in alarms.values():
        assert a["namespace"] == contract.METRICS_NAMESPACE and a["metric_name"] in published_names
        assert a["dimensions"][contract.DIM_CAPTURE] == NAME
        assert a["alarm_actions"] == a["ok_actions"] == ["${aws_sns_topic.alarm_topic.arn}"]
    assert json.dumps(alarms).count(contract.DIM_INSTANCE) == 0  # a replaced host feeds the same alarms
