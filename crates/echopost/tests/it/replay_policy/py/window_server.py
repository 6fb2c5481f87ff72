#!/usr/bin/env python3
"""A slow main server for the delivery-window tests (issue 16): Python's http.server,
HTTP/1.1 keep-alive, one thread per connection, answers held for a pseudo-random time so
that with several requests in flight they are answered out of order.

    window_server.py [--port P] [--delay-ms-min A] [--delay-ms-max B] [--fail-every N]
                     [--fail-status S] [--seed X]

`GET /healthz` answers 200 at once. Every other request is held for a delay drawn
uniformly from [A, B] ms (from --seed and the request's number, so a run is repeatable),
then answered: every N-th request (--fail-every, counted over all non-health requests)
with --fail-status (default 503), the others with 200.

Standard output: `READY <port>` once listening, then per request an `arrive` event when
it is read ({"ev": "arrive", "n", "body", "inflight"}: the body's first 64 characters and
how many requests the server held at that moment, this one included) and an `answer`
event just before the answer is written ({"ev": "answer", "n", "status", "body", "key"}:
the Idempotency-Key header). A request the client saw answered therefore always has its
`answer` event.
"""

import argparse
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = threading.Lock()
STATE = threading.Lock()


def emit(obj):
    line = "EVENT " + json.dumps(obj) + "\n"
    with OUT:
        sys.stdout.write(line)
        sys.stdout.flush()


class Config:
    delay_min = 0.0
    delay_max = 0.0
    fail_every = 0
    fail_status = 503
    seed = 1
    requests = 0
    inflight = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.split("?")[0] == "/healthz":
            self.answer(200, "ok")
            return
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    do_PUT = do_POST

    def handle_request(self):
        cl = self.headers.get("Content-Length")
        body = self.rfile.read(int(cl)) if cl is not None else b""
        text = body.decode("utf-8", "replace")[:64]
        with STATE:
            Config.requests += 1
            n = Config.requests
            Config.inflight += 1
            inflight = Config.inflight
            failed = Config.fail_every and n % Config.fail_every == 0
        emit({"ev": "arrive", "n": n, "body": text, "inflight": inflight})
        delay = random.Random(Config.seed * 1_000_003 + n).uniform(
            Config.delay_min, Config.delay_max
        )
        time.sleep(delay / 1000.0)
        status = Config.fail_status if failed else 200
        emit(
            {
                "ev": "answer",
                "n": n,
                "status": status,
                "body": text,
                "key": self.headers.get("Idempotency-Key"),
            }
        )
        with STATE:
            Config.inflight -= 1
        self.answer(status, "try again" if failed else "ok")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-ms-min", type=float, default=0.0)
    p.add_argument("--delay-ms-max", type=float, default=0.0)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    Config.delay_min = a.delay_ms_min
    Config.delay_max = max(a.delay_ms_max, a.delay_ms_min)
    Config.fail_every = a.fail_every
    Config.fail_status = a.fail_status
    Config.seed = a.seed

    ThreadingHTTPServer.daemon_threads = True
    # Room for a whole window of connections opened at once.
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    with OUT:
        sys.stdout.write(f"READY {server.server_address[1]}\n")
        sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
