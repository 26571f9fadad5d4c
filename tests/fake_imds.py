"""A tiny IMDSv2 for tests: token required, answers the MAC -> ENI lookups only."""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

TOKEN = "test-token"
INTERFACES = json.loads(sys.argv[2])  # {"mac": "eni-id", ...}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body=""):
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body.encode())

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(200, TOKEN)
        self.reply(400)

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401)  # IMDSv2 only, as the stack requires
        base = "/latest/meta-data/network/interfaces/macs/"
        if self.path == base:
            return self.reply(200, "\n".join(f"{m}/" for m in INTERFACES))
        for mac, eni in INTERFACES.items():
            if self.path == f"{base}{mac}/interface-id":
                return self.reply(200, eni)
        self.reply(404)


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
