#!/usr/bin/python3
"""mirrorcap-health-listener probe|serve: this fleet host's health for the NLB.

  probe   run mirrorcap-health (as root, by mirrorcap-health-probe.timer every 10 s)
          and write its verdict to /run/mirrorcap/probe/health.json; log each change
  serve   answer HTTP GET on MIRRORCAP_HEALTH_PORT (unprivileged, no capability):
          200 when the latest verdict is healthy and under 30 s old, 503 otherwise

The NLB's checks never run anything: they read a verdict at most 10 s old (kept
in memory 2 s), so they cannot load the host however often they come.
Python 3.9 stdlib only.
"""
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "lib", "mirrorcap"))
import mirrorcap_host as host  # noqa: E402

VERDICT = "/run/mirrorcap/probe/health.json"
FRESH_SECONDS = 30
CACHE_SECONDS = 2


def probe(path=VERDICT):
    r = subprocess.run(["mirrorcap-health", "--json", "--sample-seconds", "0", "--reader", "nlb-probe"], capture_output=True, text=True, timeout=60)
    try:
        report = json.loads(r.stdout)
        failing = ["%s: %s" % (c["name"], c["detail"]) for c in report["checks"] if c["status"] == "fail"]
        healthy = bool(report["healthy"]) and r.returncode == 0
    except (ValueError, KeyError, TypeError):
        healthy, failing = False, ["mirrorcap-health exited %d: %s" % (r.returncode, r.stderr.strip()[-300:])]
    try:
        with open(path) as f:
            was = json.load(f).get("healthy")
    except (OSError, ValueError):
        was = None
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(dict(healthy=healthy, at=time.time(), failing=failing), f)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    if healthy != was:
        print("mirrorcap-health-listener: now %s%s" % ("HEALTHY" if healthy else "UNHEALTHY",
                                                     "" if healthy else ": " + "; ".join(failing)), flush=True)
    return 0


def verdict(path=VERDICT, now=None):
    """(HTTP status, body) for the verdict in `path`."""
    now = time.time() if now is None else now
    try:
        with open(path) as f:
            v = json.load(f)
    except (OSError, ValueError):
        return 503, "unhealthy: no verdict yet (mirrorcap-health-probe.timer)\n"
    age = now - float(v.get("at", 0))
    if age > FRESH_SECONDS:
        return 503, "unhealthy: the last verdict is %ds old (mirrorcap-health-probe.timer)\n" % age
    if v.get("healthy") is True:
        return 200, "healthy\n"
    return 503, "unhealthy: %s\n" % "; ".join(v.get("failing") or ["?"])


class Handler(BaseHTTPRequestHandler):
    cached = (0.0, (503, ""))

    def log_message(self, *args):
        pass

    def do_GET(self):
        at, (code, body) = Handler.cached
        if time.monotonic() - at > CACHE_SECONDS:
            code, body = verdict()
            Handler.cached = (time.monotonic(), (code, body))
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve():
    port = int(host.read_env().get("MIRRORCAP_HEALTH_PORT", "8081"))
    server = ThreadingHTTPServer(("", port), Handler)
    server.daemon_threads = True
    print("mirrorcap-health-listener: answering the NLB's health checks on port %d" % port, flush=True)
    server.serve_forever()


def main(argv):
    if len(argv) != 2 or argv[1] not in ("probe", "serve"):
        print("usage: mirrorcap-health-listener probe|serve", file=sys.stderr)
        return 2
    if argv[1] == "probe":
        return probe()
    serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
