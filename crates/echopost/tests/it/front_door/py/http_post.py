#!/usr/bin/env python3
"""An unmodified application's HTTP client for the front_door tests: Python's
http.client over the daemon's UNIX socket, as if it were the main server.

    http_post.py SOCKET BIG_BYTES

Prints one `RESULT <json>` line per request: {"step", "status", "body", "retry_after",
"payload_b64"}. Each request is on a connection of its own. Steps:

* json: POST /v1/orders?tenant=t1 with a JSON body, Content-Type and X-Request-Id;
* binary: PUT /blobs/7 with every byte value (4 KiB), chunked, `Expect: 100-continue`;
* empty: DELETE /v1/orders/9 without a body;
* big: POST /big with BIG_BYTES bytes (over --max-record-bytes: 413).
"""

import base64
import http.client
import json
import socket
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=20)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(self.unix_path)
        self.sock = s


def send(sock, step, method, path, body, headers, chunked=False):
    conn = UnixConnection(sock)
    if chunked:
        conn.request(method, path, body=iter([body[:1000], body[1000:]]), headers=headers,
                     encode_chunked=True)
    else:
        conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode()
    print("RESULT " + json.dumps({
        "step": step,
        "status": resp.status,
        "body": text,
        "content_type": resp.getheader("Content-Type"),
        "retry_after": resp.getheader("Retry-After"),
        "payload_b64": base64.b64encode(body or b"").decode(),
    }), flush=True)
    conn.close()


def main():
    sock, big = sys.argv[1], int(sys.argv[2])
    order = json.dumps({"order": 1, "items": ["a", "b"], "note": "caf\u00e9"}).encode()
    send(sock, "json", "POST", "/v1/orders?tenant=t1", order,
         {"Content-Type": "application/json", "X-Request-Id": "r-1"})
    blob = bytes(range(256)) * 16
    send(sock, "binary", "PUT", "/blobs/7", blob,
         {"Content-Type": "application/octet-stream", "Expect": "100-continue"}, chunked=True)
    send(sock, "empty", "DELETE", "/v1/orders/9", None, {"X-Request-Id": "r-3"})
    send(sock, "big", "POST", "/big", b"z" * big, {"Content-Type": "text/plain"})


if __name__ == "__main__":
    main()
