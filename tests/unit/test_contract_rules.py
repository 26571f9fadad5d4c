"""Rules written once (contract.py, numbering.lockfile, stack.literal, the host's archive script)
and read by every side that needs them."""

from __future__ import annotations

import importlib.util
import json
import subprocess

import pytest

from helpers import ROOT
from mirrorcap import aws_limits, backlog, contract
from mirrorcap.errors import MirrorcapError
from mirrorcap.host import render
from mirrorcap.numbering import lockfile
from mirrorcap.workflow.sessions import lock_path, parse_lock


def test_a_session_description_reads_back_to_its_label():
    text = contract.session_description("prod", "web tier ${x}")
    assert text == "mirrorcap prod: web tier ${x}"
    assert contract.session_label("prod", text) == "web tier ${x}"
    assert contract.session_label("stage", text) == text  # another capture's: whole


def test_the_vni_range_and_the_index_suffix_have_one_owner_a_side_and_the_two_agree():
    import mirrorcap_host
    assert (mirrorcap_host.VNI_MIN, mirrorcap_host.VNI_MAX) == (aws_limits.VNI_MIN, aws_limits.VNI_MAX) == (1, (1 << 24) - 1)
    assert mirrorcap_host.INDEX_SUFFIX == contract.INDEX_SUFFIX


def test_the_shell_scripts_index_suffixes_have_one_owner_and_agree_with_the_hosts_python():
    """mirrorcap-lib.sh spells them, as bash reads them; no other shell script does."""
    import mirrorcap_host
    host = ROOT / "scripts" / "host"
    got = subprocess.run(["bash", "-c", 'eval "$(grep -E \'^INDEX_(FAILED_)?SUFFIX=\' "$1")"; '
                          'printf "%s\\n" "$INDEX_SUFFIX" "$INDEX_FAILED_SUFFIX"', "-", str(host / "mirrorcap-lib.sh")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert got == [contract.INDEX_SUFFIX, mirrorcap_host.INDEX_FAILED_SUFFIX] == [".idx.json.gz", ".idx-failed"]
    for script in sorted(host.glob("*.sh")):
        code = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
        spelled = [line for line in code if ".idx" in line]
        assert spelled == ([f"INDEX_SUFFIX={got[0]}", f"INDEX_FAILED_SUFFIX={got[1]}"] if script.name == "mirrorcap-lib.sh" else []), script.name


def test_every_check_of_a_vni_takes_exactly_the_range(monkeypatch):
    """The query's parser (laptop), its checker on the host, an archived key, the capture's argument, decap."""
    import mirrorcap_query
    from mirrorcap.archive.index import parse_key
    from mirrorcap.find.query import QueryError, parse
    from test_host_scripts import host_script
    lo, hi = aws_limits.VNI_MIN, aws_limits.VNI_MAX
    capture = host_script("mirrorcap-capture.py")
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    name = contract.PCAP_PATTERN.replace("{vni}", "%d").replace("%Y-%m-%dT%H-%M-%SZ", "2026-11-25T10-15-00Z")
    for vni, ok in ((lo - 1, False), (lo, True), (hi, True), (hi + 1, False)):
        try:
            parse(f"vni {vni}")
        except QueryError:
            assert not ok, vni
        else:
            assert ok, vni
        try:
            mirrorcap_query.check(["vni", vni])
        except mirrorcap_query.QueryTreeError:
            assert not ok, vni
        else:
            assert ok, vni
        key = f"cap/vni{vni}/2026-11-25/i-0123456789abcdef0/{name % vni}"
        assert (parse_key("cap", key, 1, None) is not None) == ok, key
        try:
            code = capture.main(["mirrorcap-capture", str(vni)])  # 2: usage, before anything is read
        except SystemExit as e:  # a VNI it takes: then no RUNTIME_DIRECTORY, so it stops (1)
            code = e.code
        assert (code != 2) == ok, vni
    decap = (ROOT / "scripts" / "host" / "mirrorcap-decap.sh").read_text()
    assert f"[[ $vni =~ ^[1-9][0-9]{{0,{len(str(hi)) - 1}}}$ ]] || ((vni > {hi}))" in decap and lo == 1


def test_the_vni_is_the_sources_else_the_captures():
    assert contract.source_vni(7, 4242) == 7 and contract.source_vni(None, 4242) == 4242 and contract.source_vni(0, 1) == 0


def test_review_reads_the_lock_as_numbering_does(tmp_path):
    numbers = {("prod", "eni-1"): 3, ("prod", "i-2"): 5, ("stage", "eni-9"): 1}
    text = lockfile.render(numbers)
    path = tmp_path / "capture.lock.json"
    path.write_text(text)
    assert lockfile.read(path) == numbers
    assert parse_lock(text, "capture.lock.json") == {"prod": {"eni-1": 3, "i-2": 5}, "stage": {"eni-9": 1}}
    out_of_range = json.dumps({"version": 1, "captures": {"prod": {"eni-1": 0}}})
    for read in (lambda: parse_lock(out_of_range, "lock.json"), lambda: lockfile.parse(out_of_range, "lock.json")):
        with pytest.raises(MirrorcapError, match=r"lock.json: captures.prod.eni-1: session number 0 is outside 1-32766"):
            read()
    assert lock_path("./infra/mirror.hcl") == "infra/mirror.lock.json" == lockfile.path_for("infra/mirror.hcl").as_posix()


def test_the_archive_back_off_is_the_host_scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts" / "host"))  # its shared library, as on the host
    spec = importlib.util.spec_from_file_location("archive_script", ROOT / "scripts" / "host" / "mirrorcap-archive.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert backlog.archive_backoff_seconds() == tuple(script.BACKOFF_SECONDS)
    assert script.backoff_seconds(99) == max(backlog.archive_backoff_seconds())


def test_user_data_is_escaped_as_literal_text_is():
    from mirrorcap.stack.literal import escape
    assert render.template_escape is escape
    assert escape("a ${b} %{c}") == "a $${b} %%{c}"


@pytest.mark.parametrize("pattern", [contract.PCAP_PATTERN, "mirror-{vni}-%Y%m%d-%H%M%S.pcap"])
def test_the_capture_knows_its_pcaps_by_the_pattern_it_writes(tmp_path, pattern):
    """Whatever MIRRORCAP_PCAP_PATTERN names pcaps (the env file carries it): the capture's own VNI's
    pcaps, oldest first, not another VNI's, nor an index."""
    import time
    from types import SimpleNamespace

    import mirrorcap_host
    from test_host_scripts import host_script
    capture = host_script("mirrorcap-capture.py")
    named = {vni: [time.strftime(mirrorcap_host.pcap_pattern(pattern, vni), time.gmtime(t)) for t in (1_764_000_000, 1_764_000_060)]
             for vni in (7, 70)}
    for name in named[7] + named[70]:
        (tmp_path / name).write_bytes(b"")
        (tmp_path / (name + contract.INDEX_SUFFIX)).write_bytes(b"")
    me = SimpleNamespace(directory=str(tmp_path), vni="7", name_glob=mirrorcap_host.pcap_glob(pattern, "7"))  # as load_settings sets it
    assert capture.Capture.pcaps(me) == named[7]


class _Imds(__import__("http.server").server.BaseHTTPRequestHandler):
    """IMDSv2 as EC2 answers: a token for a PUT naming its TTL, then GETs carrying it; 401 otherwise."""
    TOKEN = "AQAEAtoken=="
    PATHS = {"/latest/meta-data/instance-id": b"i-0123456789abcdef0\n",
             "/latest/user-data": __import__("gzip").compress(b"#!/bin/bash\necho user data\n")}

    def do_PUT(self):
        ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self._answer(200 if ok else 400, self.TOKEN.encode() if ok else b"")

    def do_GET(self):
        ok = self.headers.get("X-aws-ec2-metadata-token") == self.TOKEN
        self._answer(401 if not ok else 200 if self.path in self.PATHS else 404, self.PATHS.get(self.path, b"") if ok else b"")

    def _answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_host_scripts_ask_imds_with_the_one_imdsv2_client(monkeypatch):
    """mirrorcap_host.imds, as the archive's uploader, the metrics publisher and settings use it."""
    import threading
    from http.server import ThreadingHTTPServer

    import mirrorcap_host
    from test_host_scripts import host_script
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(mirrorcap_host, "IMDS", "http://127.0.0.1:%d" % server.server_port)
        assert host_script("mirrorcap-archive.py").instance_id() == "i-0123456789abcdef0"
        assert host_script("mirrorcap-metrics.py").instance_id() == "i-0123456789abcdef0"
        assert host_script("mirrorcap-settings.py").user_data() == "#!/bin/bash\necho user data\n"
        with pytest.raises(OSError):  # 404: what the caller reports (settings waits, archive retries)
            mirrorcap_host.imds("/latest/meta-data/nothing")
    finally:
        server.shutdown()
        server.server_close()


def test_the_capture_back_offs_history_is_the_file_health_counts():
    """mirrorcap-capture-backoff writes when it started a unit again; mirrorcap-health counts those starts as
    restarts (systemd's NRestarts does not): the two name one file."""
    from test_host_scripts import host_script
    health = host_script("mirrorcap-health.py")
    script = (ROOT / "scripts/host/mirrorcap-capture-backoff.sh").read_text()
    (line,) = [x for x in script.splitlines() if x.startswith("HISTORY=")]
    written = subprocess.run(["bash", "-c", line.split("#")[0] + '; printf %s "$HISTORY"'], env={"vni": "12345"},
                             capture_output=True, text=True, check=True).stdout
    assert written == health.BACKOFF_HISTORY % 12345 == "/run/mirrorcap/capture-backoff.12345"
