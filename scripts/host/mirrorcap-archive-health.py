#!/usr/bin/python3
"""mirrorcap-health of a capture that archives: every check of the plain one, plus "archive".

The plain mirrorcap-health is installed as a module (/usr/local/lib/mirrorcap/
mirrorcap_health.py) and runs as it is; "archive" comes after its disk check:
fail when a closed pcap has waited for its upload longer than
MIRRORCAP_ARCHIVE_BACKLOG_SECONDS (with the count, the oldest and the
uploader's last error) or when the uploader's timer or service is down; warn
while uploads fail within that bound. Python 3.9 stdlib only.
"""
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
# The shared modules: /usr/local/lib/mirrorcap, from /usr/local/sbin.
sys.path.insert(0, os.path.join(HERE, "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402
import mirrorcap_health as health  # noqa: E402


def load_archive(path=os.path.join(HERE, "..", "libexec", "mirrorcap", "archive")):
    loader = importlib.machinery.SourceFileLoader("mirrorcap_archive", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def unit_states(*units):
    out = subprocess.run(["systemctl", "show", "--property=Id,ActiveState,Result"] + list(units),
                         capture_output=True, text=True).stdout
    states = {}
    for block in out.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in fields:
            states[fields["Id"]] = (fields.get("ActiveState", "unknown"), fields.get("Result", ""))
    return states


def check_archive(report, archive, now=None):
    now = time.time() if now is None else now
    try:
        s = archive.Settings(host.read_env())
    except (OSError, KeyError, ValueError) as e:
        report.add("archive", "fail", "cannot read the archive settings: %s" % e)
        return
    st = archive.status(s, archive.load_state(), now)
    units = unit_states("mirrorcap-archive.timer", "mirrorcap-archive.service")
    timer = units.get("mirrorcap-archive.timer", ("unknown", ""))[0]
    service = units.get("mirrorcap-archive.service", ("unknown", ""))
    last = st.get("last_run") or {}
    data = dict(backlog=st["backlog"], oldest=st["oldest"], oldest_age_seconds=st["oldest_age_seconds"],
                backlog_limit_seconds=s.backlog_seconds, confirmed=st["confirmed"], failed_runs=st["failed_runs"],
                last_error=last.get("error"), bucket=s.bucket, timer=timer, service=service[0])
    waiting = "%d closed pcap(s) not archived" % st["backlog"]
    if st["oldest"]:
        waiting += ", the oldest %s closed %ds ago" % (st["oldest"], st["oldest_age_seconds"])
    error = "; the uploader's last error: %s" % last["error"] if last.get("error") else ""
    if st["backlog"] and st["oldest_age_seconds"] > s.backlog_seconds:
        report.add("archive", "fail", "UPLOAD BACKLOG: %s (limit %ds)%s" % (waiting, s.backlog_seconds, error), **data)
    elif timer != "active" or service[0] == "failed":
        report.add("archive", "fail", "the uploader is not running: mirrorcap-archive.timer %s, mirrorcap-archive.service %s%s"
                   % (timer, service[0], " (%s)" % service[1] if service[1] not in ("", "success") else ""), **data)
    elif error:
        report.add("archive", "warn", "uploads failing (%d run(s) in a row): %s%s" % (st["failed_runs"], waiting, error), **data)
    else:
        report.add("archive", "ok", "s3://%s: %s; %d confirmed on this volume" % (s.bucket, waiting, st["confirmed"]), **data)


def main(argv=None):
    archive = load_archive()
    check_disk = health.check_disk

    def check_disk_then_archive(report, *args):
        check_disk(report, *args)
        check_archive(report, archive)

    health.check_disk = check_disk_then_archive  # after the plain health's disk check
    return health.main(argv)


if __name__ == "__main__":
    sys.exit(main())
