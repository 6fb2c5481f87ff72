#!/usr/bin/env python3
"""An application's HTTP main server for the front_door tests: Python's http.server.

    http_app.py [--port P]

`GET /healthz` is answered 200 (the daemon's probe). Every other request is answered 200
and reported. Standard output: `READY <port>` once listening, then one `EVENT <json>` line
per request: {"ev": "req", "method", "path", "headers": [[name, value], ...],
"body_b64"}.
"""

import argparse
import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = threading.Lock()


def emit(obj):
    with OUT:
        sys.stdout.write("EVENT " + json.dumps(obj) + "\n")
        sys.stdout.flush()


def read_chunked(rfile):
    body = b""
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += rfile.read(size)
        rfile.readline()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def handle_any(self):
        if self.command == "GET" and self.path == "/healthz":
            return self.answer(200)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = read_chunked(self.rfile)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        emit({
            "ev": "req",
            "method": self.command,
            "path": self.path,
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "body_b64": base64.b64encode(body).decode(),
        })
        self.answer(200)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
