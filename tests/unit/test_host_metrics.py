"""mirrorcap-metrics (the host's health as CloudWatch metrics) and health's "metrics" check, run
as the plain files they are against the env file a render writes. Publishing for real, to a
CloudWatch the booted host reaches, is tests/host/test_health_alarms.py."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys

import pytest

from helpers import ROOT, eni, minimal, sources, write
from mirrorcap import contract
from mirrorcap.host import render
from mirrorcap.inventory import load

HOST = ROOT / "scripts" / "host"


def script(name: str, module: str):
    sys.path.insert(0, str(HOST))
    try:
        loader = importlib.machinery.SourceFileLoader(module, str(HOST / name))
        mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(module, loader))
        loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(HOST))


@pytest.fixture(scope="module")
def metrics():
    return script("mirrorcap-metrics.py", "mirrorcap_metrics_under_test")


@pytest.fixture(scope="module")
def health():
    return script("mirrorcap-health.py", "mirrorcap_health_under_test")


def rendered_env(tmp_path, body: str = "", name: str = "test") -> dict:
    capture = load(write(tmp_path, minimal(sources(eni(1)) + body, name=name))).captures[0]
    text = render.env_file(capture, "vol-0123456789abcdef0", "eni-0123456789abcdef0", "bucket")
    (tmp_path / "mirrorcap.env").write_text(text)
    sys.path.insert(0, str(HOST))
    try:
        import mirrorcap_host
    finally:
        sys.path.remove(str(HOST))
    return mirrorcap_host.read_env(str(tmp_path / "mirrorcap.env"))


def test_the_env_file_carries_the_contracts_names_to_the_host(metrics, tmp_path):
    env = rendered_env(tmp_path)
    names = metrics.Names(env)
    assert names.namespace == contract.METRICS_NAMESPACE
    assert (names.capturing, names.lost, names.disk_free, names.backlog) == (
        contract.METRIC_CAPTURING, contract.METRIC_PACKETS_LOST, contract.METRIC_DISK_FREE, contract.METRIC_ARCHIVE_BACKLOG)
    assert (names.capture, names.vni, names.instance, names.fleet) == (
        contract.DIM_CAPTURE, contract.DIM_VNI, contract.DIM_INSTANCE, contract.DIM_FLEET)
    assert env["MIRRORCAP_REGION"] == "eu-west-1" and "MIRRORCAP_FLEET_GROUP" not in env


def test_each_datum_goes_out_with_the_captures_dimensions_and_the_hosts(metrics, tmp_path):
    names = metrics.Names(rendered_env(tmp_path))
    group = contract.resource_name("web", contract.FLEET)
    out = metrics.datums([("capturing", 0, "None", "4242"), ("disk_free", 42.5, "Percent", None)], names, "web",
                         "i-0123456789abcdef0", group, 1_700_000_000)
    dims = [{d["Name"]: d["Value"] for d in x["Dimensions"]} for x in out]
    assert dims == [{"Capture": "web", "VNI": "4242"},
                    {"Capture": "web", "InstanceId": "i-0123456789abcdef0", "AutoScalingGroupName": group, "VNI": "4242"},
                    {"Capture": "web"},
                    {"Capture": "web", "InstanceId": "i-0123456789abcdef0", "AutoScalingGroupName": group}]
    assert [x["MetricName"] for x in out] == ["Capturing"] * 2 + ["DiskFreePercent"] * 2
    assert {x["Timestamp"] for x in out} == {"2023-11-14T22:13:20Z"}


def test_losses_are_counted_once_and_a_count_that_started_over_counts_whole(metrics):
    totals = {}
    assert metrics.grown(totals, "drops:1", 5) == 5  # the first datapoint: everything so far
    assert metrics.grown(totals, "drops:1", 5) == 0
    assert metrics.grown(totals, "drops:1", 12) == 7
    assert metrics.grown(totals, "drops:1", 3) == 3  # the record started over


def test_a_failed_publish_is_recorded_and_keeps_its_losses_for_the_next_one(metrics, tmp_path, monkeypatch):
    """No `aws` on PATH here: the real subprocess fails, as on a host whose CLI is missing."""
    env = rendered_env(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(metrics, "instance_id", lambda: "i-0123456789abcdef0")
    report = {"checks": [{"name": "drops", "status": "fail", "vni": "4242", "dropped_total": 9}]}
    state = {"totals": {"drops:4242": 4}, "last_published": 100.0}
    assert metrics.publish(env, state, 200.0, report=report)
    assert state["failures"] == 1 and "aws" in state["last_error"] and state["totals"] == {"drops:4242": 4}
    assert metrics.publish(env, state, 260.0, report=report)
    assert state["failures"] == 2 and state["last_published"] == 100.0 and state["last_attempt"] == 260.0


def test_health_warns_when_metrics_keep_failing_and_stays_healthy(health, tmp_path):
    path = tmp_path / "metrics.json"
    for state, status, words in [
        (None, "ok", "not published yet"),
        ({"failures": 0, "last_published": 1_700_000_000}, "ok", "published to CloudWatch at 22:13:20"),
        ({"failures": 1, "last_published": 1_700_000_000, "last_error": "x"}, "ok", "published"),
        ({"failures": 3, "last_published": 1_700_000_000, "last_error": "Could not connect"}, "warn",
         "not published since 2023-11-14 22:13:20 UTC (3 attempts in a row failed; the last: Could not connect"),
        ({"failures": 2, "last_error": "no credentials"}, "warn", "not published since this host started"),
    ]:
        if state is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(json.dumps(state))
        report = health.Report()
        health.check_metrics(report, str(path))
        (check,) = report.checks
        assert check["name"] == "metrics" and check["status"] == status and words in check["detail"], check
        assert report.healthy


def test_a_fleet_host_names_its_group_as_the_stack_names_it(tmp_path):
    text = minimal(f'\n  archive {{}}\n  fleet {{\n    subnet_ids = ["subnet-0aaaaaaaaaaaaaaa1"]\n  }}\n'
                   f'  source {{\n    eni_id = "{eni(1)}"\n  }}\n', name="web").replace('  subnet_id = "subnet-0123456789abcdef0"\n', "")
    (capture,) = load(write(tmp_path, text)).captures
    env = render.env_file(capture, "", "", "bucket")
    assert f"MIRRORCAP_FLEET_GROUP={contract.resource_name('web', contract.FLEET)}\n" in env


@pytest.mark.parametrize("name", ["../person", "a/b", "Person", "", "x" * 40, "metrics\n"])
def test_a_reader_that_is_no_plain_name_is_refused_before_anything_is_read(health, name, capsys):
    with pytest.raises(SystemExit) as e:
        health.main(["--reader", name])
    assert e.value.code == 2 and "a reader is a lowercase name" in capsys.readouterr().err


def test_each_reader_keeps_its_own_record_and_the_persons_keeps_its_name(health):
    assert health.state_file_of("person") == health.STATE_FILE
    files = {health.state_file_of(r) for r in ("person", "metrics", "nlb-probe")}
    assert len(files) == 3 and all(f.startswith(health.host.STATE_DIR + "/") for f in files)
