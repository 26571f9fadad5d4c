"""The fake IMDSv2 at 169.254.169.254:80 in the machine's network namespace, served from
outside the machine; what it answers, its user data and its outages, live."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys

from .lab import IMDS_ADDR, IMDS_TOKEN, _pdeathsig

IMDS_SERVER = r'''
import base64, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
host, port, conf = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TOKEN = sys.argv[4]

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def reply(self, code, body=""):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def mode(self):
        with open(conf) as f:
            return json.load(f).get("mode", "up")
    def do_PUT(self):
        if self.mode() == "500":
            return self.reply(500)
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(200, TOKEN)
        self.reply(400)
    def do_GET(self):
        if self.mode() == "500":
            return self.reply(500)
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401)  # IMDSv2 only
        with open(conf) as f:
            c = json.load(f)
        interfaces, paths = c["interfaces"], c.get("paths", {})
        if self.path == "/latest/user-data":
            return self.reply(200, base64.b64decode(c["user_data"])) if c.get("user_data") else self.reply(404)
        base = "/latest/meta-data/network/interfaces/macs/"
        if self.path == base:
            return self.reply(200, "\n".join(m + "/" for m in interfaces))
        for mac, eni in interfaces.items():
            if self.path == base + mac + "/interface-id":
                return self.reply(200, eni)
        rel = self.path[len("/latest/meta-data/"):] if self.path.startswith("/latest/meta-data/") else None
        if rel in paths:
            return self.reply(200, paths[rel])
        self.reply(404)

server = ThreadingHTTPServer((host, port), Handler)
print("ready", flush=True)
server.serve_forever()
'''


class Imds:
    """Machine's IMDS (a mixin: the machine's netns, workdir and process tracking)."""

    def _write_imds_conf(self) -> None:
        conf = self.workdir / "imds.json"
        tmp = conf.with_suffix(".tmp")
        tmp.write_text(json.dumps({"interfaces": self.imds_interfaces, "paths": self.imds_paths, "mode": self.imds_mode,
                                   "user_data": self.imds_user_data}))
        tmp.replace(conf)

    def set_imds_interfaces(self, interfaces: dict[str, str], paths: dict[str, str] | None = None) -> None:
        """Change what the IMDS answers ({mac: eni_id}; paths under /latest/meta-data/), live."""
        self.imds_interfaces = dict(interfaces)
        if paths is not None:
            self.imds_paths = dict(paths)
        self._write_imds_conf()

    def set_imds_user_data(self, text: str) -> None:
        """The instance's user data as IMDS gives it, gzipped (the stack's base64gzip), live: what a
        deploy that changed it leaves for the next boot (AWS stops the instance, modifies, starts it)."""
        self.imds_user_data = base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()
        self._write_imds_conf()

    def set_imds(self, mode: str) -> None:
        """The IMDS's health, live: "up", "500" (every request answered 500) or "refuse" (its
        server stopped: connections to 169.254.169.254:80 are refused)."""
        if mode not in ("up", "500", "refuse"):
            raise ValueError(mode)
        self.imds_mode = mode
        self._write_imds_conf()
        running = self._imds is not None and self._imds.poll() is None
        if mode == "refuse" and running:
            self._imds.kill()
            self._imds.wait()
            self._imds.stdout.close()
            self._imds.stderr.close()
            self._imds = None
            self._track("imds", None)
        elif mode != "refuse" and not running:
            self._start_imds()

    def _start_imds(self) -> None:
        self._write_imds_conf()
        self._imds = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-c", IMDS_SERVER,
             IMDS_ADDR, "80", str(self.workdir / "imds.json"), IMDS_TOKEN],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_pdeathsig)
        self._track("imds", self._imds.pid)
        if self._imds.stdout.readline().strip() != "ready":
            raise RuntimeError(f"fake IMDS did not start: {self._imds.stderr.read()}")
