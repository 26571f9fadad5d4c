"""The capture host through the faults that last minutes at boot, booted as production boots it
(tests/capturehost.py): a metadata service down, then answering 500, for more than 300 s, and a
volume attached only after that (the deadline both waits once had). One boot, which the two
tests share; apart from tests/host/test_host_faults.py so that its minutes of waiting overlap
the other faults' when the suite runs side by side. Run with -k imds_outage or late_volume.
"""

from __future__ import annotations

import ast
import re
import time

import pytest

from bootlab import needs_lab
from capturehost import DIR, VNI, Traffic, baked, captured, check, health, unit, wait_capturing, wait_for
from helpers import ROOT

pytestmark = needs_lab

UNIT = unit()


def script_constant(script: str, name: str):
    """A module-level constant of a shipped host script, as the host reads it."""
    for node in ast.parse((ROOT / "scripts" / "host" / script).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{script} sets no {name}")


# --- late_volume and imds_outage: more than 300 s of waiting ------------------------------

@pytest.fixture(scope="module")
def long_wait(tmp_path_factory):
    """A host that boots without its volume and whose metadata service refuses connections, then
    answers 500, for more than 300 s (the deadline both waits had)."""
    with baked(tmp_path_factory.mktemp("longwait"), "longwait", volume_id=None) as m:
        m.set_imds("refuse")
        m.boot(until=("starting", "running", "degraded"))
        booted, seen = time.time(), {}
        # decap starts after mirrorcap-settings has waited its bounded time for IMDS
        settings_wait = script_constant("mirrorcap-settings.py", "WAIT_SECONDS")
        wait_for(lambda: m.unit_state("mirrorcap-decap.service") == "activating", settings_wait + 90, "decap waiting")
        time.sleep(20)
        seen["refused"] = health(m)
        seen["multi-user"] = m.unit_state("multi-user.target")
        time.sleep(max(0.0, 160 - (time.time() - booted)))
        m.set_imds("500")
        time.sleep(max(0.0, 320 - (time.time() - booted)))
        seen["after_320s"] = health(m)
        seen["units"] = {u: m.unit_state(u) for u in ("mirrorcap-storage.service", "mirrorcap-decap.service", UNIT)}
        yield m, seen


def test_imds_outage_longer_than_300_s_is_named_and_capture_starts_once_it_answers(long_wait):
    m, seen = long_wait
    assert seen["multi-user"] == "active"  # the wait never held up boot (Session Manager, cloud-init)
    for when_, why in (("refused", "connect"), ("after_320s", "500")):
        code, report = seen[when_]
        decap = check(report, "decap")
        assert code == 1 and decap["status"] == "fail" and decap["state"] == "waiting-imds", decap
        assert "metadata service (IMDS" in decap["detail"] and why in decap["detail"].lower(), decap["detail"]
    assert seen["units"]["mirrorcap-decap.service"] == "activating"  # still trying after 320 s: no deadline
    m.set_imds("up")
    assert m.wait_unit("mirrorcap-decap.service", ("active",), timeout=90) == "active", m.journal("mirrorcap-decap.service")
    assert check(health(m)[1], "decap")["status"] == "ok"
    assert m.run("ip", "link", "show", f"vxlan{VNI}").returncode == 0


def test_late_volume_attached_after_300_s_is_captured_by_itself(long_wait):
    m, seen = long_wait
    m.set_imds("up")
    m.wait_unit("mirrorcap-decap.service", ("active",), timeout=90)
    assert seen["units"]["mirrorcap-storage.service"] == "activating"  # still waiting after 320 s
    code, report = health(m)
    storage = check(report, "storage")
    assert code == 1 and storage["status"] == "fail" and storage["state"] == "waiting", storage
    assert re.search(r"waiting since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ for volume vol-0123456789abcdef0 ", storage["detail"]), storage
    assert "NOT WRITING" in check(report, "writing")["detail"] or check(report, "tcpdump")["status"] == "fail"
    assert not m.run("pgrep", "-x", "tcpdump").stdout and not m.run("findmnt", DIR).stdout
    assert m.run("ls", "-A", DIR).stdout == ""  # nothing on the root volume meanwhile
    # The remedy storage prints: attach it. Capture starts by itself the moment it is mounted.
    attached = time.time()
    m.attach_volume("vol-0123456789abcdef0")
    wait_capturing(m, timeout=90)  # by itself: no timer, reboot or person starts it
    assert time.time() - attached < 90
    traffic = Traffic(m)
    traffic.replay(traffic.frames(0, 20))
    wait_for(lambda: set(range(20)) <= set(captured(m)), 10, "capture once the volume is attached")
    health(m)
    assert health(m)[0] == 0
