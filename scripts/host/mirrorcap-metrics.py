#!/usr/bin/python3
"""mirrorcap-metrics: this host's health as CloudWatch metrics, for the stack's alarms.

Run once a minute by mirrorcap-metrics.timer: runs mirrorcap-health, turns its
report into datapoints and publishes them with the AWS CLI (credentials: the
instance role, through IMDSv2) into MIRRORCAP_METRICS_NAMESPACE:

  Capturing        per VNI: 1 when its tcpdump runs and writes, else 0
  PacketsLost      per VNI: packets lost since the last datapoint published
                   (kernel drops + what the capture's gaps lost)
  DiskFreePercent  free space on the pcap volume (when it is mounted)
  ArchiveBacklog   closed pcaps S3 has not confirmed (a capture that archives)

Each datum goes out with the capture's dimensions (what the alarms read: one series
whichever host publishes it) and again with this host's (instance, fleet group).
Publishing never touches capture or health: a failure is recorded in metrics.json
(health's "metrics" check reads it) and the losses wait for the next success.
Runs as root (mirrorcap-health signals tcpdump). Python 3.9 stdlib only.
"""
import datetime as dt
import json
import os
import subprocess
import sys
import time

# The shared module: /usr/local/lib/mirrorcap, from /usr/local/libexec/mirrorcap.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

STATE_FILE = os.path.join(host.STATE_DIR, "metrics.json")
PER_CALL = 20  # datums per PutMetricData: what every CloudWatch API version accepts
HEALTH_TIMEOUT_SECONDS = 60
PUT_TIMEOUT_SECONDS = 30


def log(message):
    print("mirrorcap-metrics: " + message, file=sys.stderr, flush=True)


class Names:
    """The namespace, metric and dimension names, from the env file (contract.py's, rendered)."""

    def __init__(self, env):
        self.namespace = env["MIRRORCAP_METRICS_NAMESPACE"]
        self.capturing, self.lost, self.disk_free, self.backlog = env["MIRRORCAP_METRICS_NAMES"].split()
        self.capture, self.vni, self.instance, self.fleet = env["MIRRORCAP_METRICS_DIMENSIONS"].split()


def grown(totals, key, total):
    """How much a cumulative count grew since `totals` last held it (all of it when it shrank: it started over)."""
    before = totals.get(key)
    totals[key] = total
    if before is None or total < before:
        return total
    return total - before


def measure(report, vnis, totals):
    """[(metric, value, unit, vni or None)] from a health report; `totals` (the cumulative loss
    counts last published) is updated in place."""
    checks = report.get("checks", [])

    def of(name, vni=None):
        return [c for c in checks if c.get("name") == name and (vni is None or c.get("vni") == vni)]

    points = []
    for vni in vnis:
        running = [c["status"] for c in of("tcpdump", vni) + of("writing", vni)]
        points.append(("capturing", 1 if running and all(s == "ok" for s in running) else 0, "None", vni))
        lost = 0
        for c in of("writing", vni):
            lost += grown(totals, "gaps:%s" % vni, int(c.get("lost_packets_max") or 0))
        for c in of("drops", vni):
            if "dropped_total" in c:  # absent when tcpdump gave no counters: the next run counts them
                lost += grown(totals, "drops:%s" % vni, int(c["dropped_total"]))
        points.append(("lost", lost, "Count", vni))
    for c in of("disk"):
        if "free_percent" in c:
            points.append(("disk_free", float(c["free_percent"]), "Percent", None))
    for c in of("archive"):
        if "backlog" in c:
            points.append(("backlog", int(c["backlog"]), "Count", None))
    return points


def datums(points, names, capture, instance, fleet_group, at):
    """Each point with the capture's dimensions, then with this host's."""
    stamp = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for metric, value, unit, vni in points:
        common = [{"Name": names.capture, "Value": capture}]
        own = common + [{"Name": names.instance, "Value": instance}]
        if fleet_group:
            own.append({"Name": names.fleet, "Value": fleet_group})
        if vni is not None:
            common = common + [{"Name": names.vni, "Value": str(vni)}]
            own = own + [{"Name": names.vni, "Value": str(vni)}]
        for dims in (common, own):
            out.append({"MetricName": getattr(names, metric), "Dimensions": dims, "Value": value, "Unit": unit,
                        "Timestamp": stamp})
    return out


def instance_id():
    return host.imds("/latest/meta-data/instance-id").decode().strip()


def health_report():
    r = subprocess.run(["mirrorcap-health", "--json", "--sample-seconds", "0", "--reader", "metrics"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=HEALTH_TIMEOUT_SECONDS)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise RuntimeError("mirrorcap-health exited %d: %s" % (r.returncode, r.stderr.strip()[-300:]))


def put(region, namespace, data):
    """Publish; None when CloudWatch accepted every datum, else why not."""
    for i in range(0, len(data), PER_CALL):
        _, error = host.aws_cli(["cloudwatch", "put-metric-data", "--region", region, "--namespace", namespace,
                                 "--metric-data", json.dumps(data[i:i + PER_CALL])],
                                attempts=2, connect_timeout=5, read_timeout=10, timeout=PUT_TIMEOUT_SECONDS)
        if error:
            return error
    return None


def publish(env, state, now, report=None):
    """One run: measure, publish, record the outcome in `state`. Returns the error or None."""
    state["last_attempt"] = now
    totals = dict(state.get("totals") or {})
    try:
        names = Names(env)
        if report is None:
            report = health_report()
        points = measure(report, env["MIRRORCAP_VNIS"].split(), totals)
        data = datums(points, names, env["MIRRORCAP_CAPTURE"], instance_id(), env.get("MIRRORCAP_FLEET_GROUP", ""), now)
        error = put(env["MIRRORCAP_REGION"], names.namespace, data)
    except (OSError, KeyError, ValueError, RuntimeError, subprocess.SubprocessError) as e:
        error = "%s: %s" % (type(e).__name__, e)
    if error:
        state["failures"] = int(state.get("failures") or 0) + 1
        state["last_error"] = error
    else:  # the losses just published are not counted again
        state.update(totals=totals, failures=0, last_error=None, last_published=now, published=len(data))
    return error


def main(argv):
    if len(argv) != 1:
        print("usage: mirrorcap-metrics (run by mirrorcap-metrics.timer)", file=sys.stderr)
        return 2
    try:
        env = host.read_env()
    except OSError as e:
        log("cannot read %s: %s" % (host.ENV_FILE, e))
        return 2
    state = host.read_json(STATE_FILE, {}) or {}
    error = publish(env, state, time.time())
    os.makedirs(host.STATE_DIR, exist_ok=True)
    host.write_json(STATE_FILE, state)
    if error:
        log("NOT PUBLISHED (%d run(s) in a row): %s" % (state["failures"], error))
    else:
        log("published %d datapoints to %s" % (state["published"], env.get("MIRRORCAP_METRICS_NAMESPACE")))
    return 0  # a failed publish is health's to report, not a failed unit


if __name__ == "__main__":
    sys.exit(main(sys.argv))
