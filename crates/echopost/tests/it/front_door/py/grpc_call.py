#!/usr/bin/env python3
"""An unmodified application's gRPC client for the front_door tests: grpcio's generic
calls (no stubs, raw bytes) on the daemon's socket, as if it were the main server.

    grpc_call.py SOCKET

Prints one `RESULT <json>` line per step: {"step", "code", "details", "response_b64",
"payload_b64", "metadata"}. Steps, in order:

* create: unary /acme.orders.v1.Orders/Create, a 1 KiB binary payload, metadata
  x-tenant and order-bin, gzip-compressed;
* cancel: unary /acme.orders.v1.Orders/Cancel, uncompressed, metadata x-request-id;
* ping: unary /acme.orders.v1.Orders/Ping with an empty message;
* upload: a client-streaming call /acme.orders.v1.Orders/Upload with two messages;
* other: unary /other.v1.Elsewhere/Do (a service no pattern matches).
"""

import base64
import json
import sys

import grpc


def b64(b):
    return base64.b64encode(b).decode()


def result(step, payload, metadata, fn):
    try:
        resp = fn()
        out = {"step": step, "code": "OK", "details": "", "response_b64": b64(resp)}
    except grpc.RpcError as e:
        out = {"step": step, "code": e.code().name, "details": e.details() or ""}
    out["payload_b64"] = b64(payload)
    out["metadata"] = [[k, b64(v) if isinstance(v, bytes) else v] for k, v in metadata]
    print("RESULT " + json.dumps(out), flush=True)


def main():
    sock = sys.argv[1]
    with grpc.insecure_channel("unix:" + sock) as ch:
        unary = lambda m: ch.unary_unary(m)  # noqa: E731  (raw bytes in and out)
        create = bytes(range(256)) * 4
        md = [("x-tenant", "t1"), ("order-bin", b"\x00\xffbinary")]
        result("create", create, md, lambda: unary("/acme.orders.v1.Orders/Create")(
            create, metadata=md, compression=grpc.Compression.Gzip, timeout=20))
        cancel = b"cancel order 42"
        md = [("x-request-id", "r-2")]
        result("cancel", cancel, md, lambda: unary("/acme.orders.v1.Orders/Cancel")(
            cancel, metadata=md, timeout=20))
        result("ping", b"", [], lambda: unary("/acme.orders.v1.Orders/Ping")(b"", timeout=20))
        upload = ch.stream_unary("/acme.orders.v1.Orders/Upload")
        result("upload", b"part1part2", [], lambda: upload(iter([b"part1", b"part2"]), timeout=20))
        result("other", b"x", [], lambda: unary("/other.v1.Elsewhere/Do")(b"x", timeout=20))


if __name__ == "__main__":
    main()
