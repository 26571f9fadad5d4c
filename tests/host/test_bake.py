"""bake.sh as an image build runs it (chrooted in a lab disk, before any boot), with a
stand-in dnf and Go: the one thing here that cannot be real is Amazon Linux's package
manager and the Go module proxy. termshark is a convenience: the bake succeeds without it."""

from __future__ import annotations

import pytest

from bootlab import Machine, needs_lab, rootfs
from helpers import EXAMPLE, ROOT
from mirrorcap.host import render
from mirrorcap.inventory import load

pytestmark = needs_lab

DNF = "#!/bin/sh\necho \"$*\" >> /var/log/fake-dnf.log\n"
# What go install prints when proxy.golang.org cannot be reached.
GO_OFFLINE = ("#!/bin/sh\necho 'go: github.com/gcla/termshark/v2/cmd/termshark@v2.4.0: "
              "dial tcp: lookup proxy.golang.org: no such host' >&2\nexit 1\n")
GO_BUILDS = "#!/bin/sh\nprintf '#!/bin/sh\\n' > \"$GOBIN/termshark\" && chmod 755 \"$GOBIN/termshark\"\n"


@pytest.mark.parametrize("proxy", ["unreachable", "reachable"])
def test_bake_installs_everything_with_or_without_termshark(tmp_path, proxy):
    (capture,) = load(EXAMPLE).captures
    with Machine(rootfs(), tmp_path, "bake", eni_id="eni-0123456789abcdef0", volume_id=None) as m:
        m.write_file("/usr/local/bin/dnf", DNF, 0o755)
        m.write_file("/usr/local/bin/go", GO_OFFLINE if proxy == "unreachable" else GO_BUILDS, 0o755)
        m.write_file("/root/bake.sh", (ROOT / "rendered/prod/bake.sh").read_text(), 0o755)
        r = m.chroot_run("bash", "/root/bake.sh")
        assert r.returncode == 0, r.stderr
        last = r.stdout.strip().splitlines()[-1]
        if proxy == "unreachable":
            assert "mirrorcap bake: termshark v2.4.0 skipped" in r.stderr and "tshark is installed to read pcaps" in r.stderr
            assert last.endswith("; termshark skipped (see above)"), last
            assert m.chroot_run("test", "-e", "/usr/local/bin/termshark").returncode != 0
        else:
            assert "skipped" not in r.stdout + r.stderr and last.startswith("mirrorcap bake: installed (")
            assert m.chroot_run("test", "-x", "/usr/local/bin/termshark").returncode == 0
        dnf = m.read_file("/var/log/fake-dnf.log").splitlines()
        assert dnf[-2:] == ["install -y -q golang", "remove -y -q golang"], dnf  # Go never stays on the image
        for f in render.host_files(capture):
            assert m.read_file(f.path) == f.content, f.path
        assert m.chroot_run("id", "-u", "mirrorcap").returncode == 0
