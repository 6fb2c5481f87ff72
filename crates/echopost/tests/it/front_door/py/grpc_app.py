#!/usr/bin/env python3
"""An application's gRPC main server for the front_door tests: grpcio with a generic
handler that accepts every unary call, whatever its method, as raw bytes.

    grpc_app.py [--port P]

Serves grpc.health.v1.Health (SERVING) for the daemon's probes. Standard output:
`READY <port>` once listening, then one `EVENT <json>` line per call:
{"ev": "call", "method": "/pkg.Service/Method", "metadata": [[key, value], ...],
"body_b64": ...}; a `-bin` key's value is base64 of its bytes. Each call is answered OK
with an empty message.
"""

import argparse
import base64
import json
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

OUT = threading.Lock()


def emit(obj):
    with OUT:
        sys.stdout.write("EVENT " + json.dumps(obj) + "\n")
        sys.stdout.flush()


def b64(b):
    return base64.b64encode(b).decode()


class Everything(grpc.GenericRpcHandler):
    def service(self, details):
        method = details.method
        if method.startswith("/grpc.health.v1.Health/"):
            return None
        metadata = [
            [k, b64(v) if k.endswith("-bin") else v]
            for k, v in details.invocation_metadata
        ]

        def unary(request, context):
            emit({"ev": "call", "method": method, "metadata": metadata, "body_b64": b64(request)})
            return b""

        return grpc.unary_unary_rpc_method_handler(unary)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    h = health.HealthServicer()
    h.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
    server.add_generic_rpc_handlers((Everything(),))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"READY {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
