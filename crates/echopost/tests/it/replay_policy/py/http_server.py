#!/usr/bin/env python3
"""A main server for the replay_policy tests: Python's http.server, HTTP/1.1 keep-alive.

    http_server.py [--port P] [--health-status S] [--post-status S] [--post-body TEXT]
                   [--require-length] [--max-body N] [--fail-every N] [--fail-status S]
                   [--conflict-marker TEXT]
                   [--redirect-from PREFIX --redirect-to LOCATION [--redirect-status S]]
                   [--health-retry-after VALUE] [--date VALUE]

`GET /healthz` answers --health-status (default 200), with `Retry-After:
--health-retry-after` when that is set. --date VALUE replaces every response's `Date`
header (to test clocks that disagree). Every other request is answered, first rule that
applies:

0. --redirect-from PREFIX: a path starting with PREFIX gets --redirect-status (default
   308) with `Location: LOCATION` + the rest of the path;
1. --require-length and no Content-Length header: 411 (as servers that refuse bodies of
   unknown length do);
2. --max-body N and a body above N bytes: 413;
3. --fail-every N: every N-th request (counted over all non-health requests) gets
   --fail-status (default 503);
4. --conflict-marker TEXT: the first request whose body contains TEXT gets 409 for that
   body (the same body again gets 2xx);
5. otherwise --post-status (default 200) with --post-body as the body.

Standard input takes commands, one a line, each acknowledged with an `ack` event once it
applies: `post STATUS [BODY...]`, `health STATUS`, `redirect off`, `health-retry-after
off`.

Standard output: `READY <port>` once listening, then one `EVENT <json>` line per request
({"ev": "req", "method", "path", "status", "len", "content_length", "transfer_encoding",
"body"}: the body's first 64 characters) and per health probe ({"ev": "health",
"status"}). The Rust test counts and asserts on these.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = threading.Lock()
STATE = threading.Lock()


def emit(obj):
    line = "EVENT " + json.dumps(obj) + "\n"
    with OUT:
        sys.stdout.write(line)
        sys.stdout.flush()


class Config:
    health_status = 200
    post_status = 200
    post_body = "ok"
    require_length = False
    max_body = None
    fail_every = 0
    fail_status = 503
    conflict_marker = None
    redirect_from = None
    redirect_to = None
    redirect_status = 308
    health_retry_after = None
    date = None
    requests = 0
    conflicted = set()


def read_chunked(rfile):
    body = b""
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            # Trailers, up to the empty line.
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += rfile.read(size)
        rfile.readline()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The status line and headers, then the body, go out in two writes: with Nagle's
    # algorithm the body would wait for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def date_time_string(self, timestamp=None):
        return Config.date or super().date_time_string(timestamp)

    def answer(self, status, text, extra=()):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.split("?")[0] == "/healthz":
            with STATE:
                status = Config.health_status
                retry_after = Config.health_retry_after
            emit({"ev": "health", "status": status})
            extra = [("Retry-After", retry_after)] if retry_after else []
            self.answer(status, "ok" if status < 300 else "unhealthy", extra)
            return
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    do_PUT = do_POST
    do_PATCH = do_POST
    do_DELETE = do_POST

    def handle_request(self):
        cl = self.headers.get("Content-Length")
        te = self.headers.get("Transfer-Encoding")
        if cl is not None:
            body = self.rfile.read(int(cl))
        elif te is not None and "chunked" in te.lower():
            body = read_chunked(self.rfile)
        else:
            body = b""
        text = body.decode("utf-8", "replace")
        extra = []
        with STATE:
            Config.requests += 1
            n = Config.requests
            if Config.redirect_from is not None and self.path.startswith(Config.redirect_from):
                status, reply = Config.redirect_status, "moved"
                rest = self.path[len(Config.redirect_from):]
                extra.append(("Location", Config.redirect_to + rest))
            elif Config.require_length and cl is None:
                status, reply = 411, "length required"
            elif Config.max_body is not None and len(body) > Config.max_body:
                status, reply = 413, f"request entity too large: {len(body)} > {Config.max_body} bytes"
            elif Config.fail_every and n % Config.fail_every == 0:
                status, reply = Config.fail_status, "overloaded, try again"
            elif (
                Config.conflict_marker is not None
                and Config.conflict_marker in text
                and body not in Config.conflicted
            ):
                Config.conflicted.add(body)
                status, reply = 409, "conflict: a concurrent update, retry"
            else:
                status, reply = Config.post_status, Config.post_body
        emit(
            {
                "ev": "req",
                "n": n,
                "method": self.command,
                "path": self.path,
                "status": status,
                "len": len(body),
                "content_length": cl,
                "transfer_encoding": te,
                "body": text[:64],
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        )
        self.answer(status, reply, extra)


def commands():
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        with STATE:
            if parts[0] == "post":
                Config.post_status = int(parts[1])
                Config.post_body = " ".join(parts[2:]) or "ok"
            elif parts[0] == "health":
                Config.health_status = int(parts[1])
            elif parts[0] == "redirect" and parts[1:] == ["off"]:
                Config.redirect_from = None
            elif parts[0] == "health-retry-after" and parts[1:] == ["off"]:
                Config.health_retry_after = None
            else:
                emit({"ev": "error", "what": f"unknown command {line.strip()!r}"})
                continue
        emit({"ev": "ack", "command": line.strip()})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--health-status", type=int, default=200)
    p.add_argument("--post-status", type=int, default=200)
    p.add_argument("--post-body", default="ok")
    p.add_argument("--require-length", action="store_true")
    p.add_argument("--max-body", type=int)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--conflict-marker")
    p.add_argument("--redirect-from")
    p.add_argument("--redirect-to")
    p.add_argument("--redirect-status", type=int, default=308)
    p.add_argument("--health-retry-after")
    p.add_argument("--date")
    a = p.parse_args()
    Config.health_status = a.health_status
    Config.post_status = a.post_status
    Config.post_body = a.post_body
    Config.require_length = a.require_length
    Config.max_body = a.max_body
    Config.fail_every = a.fail_every
    Config.fail_status = a.fail_status
    Config.conflict_marker = a.conflict_marker
    Config.redirect_from = a.redirect_from
    Config.redirect_to = a.redirect_to
    Config.redirect_status = a.redirect_status
    Config.health_retry_after = a.health_retry_after
    Config.date = a.date

    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    threading.Thread(target=commands, daemon=True).start()
    with OUT:
        sys.stdout.write(f"READY {server.server_address[1]}\n")
        sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
