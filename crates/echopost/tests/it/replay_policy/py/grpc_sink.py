#!/usr/bin/env python3
"""A stock grpcio main server for the replay_policy tests.

    grpc_sink.py --proto-root DIR [--port P] [--no-sink] [--max-receive BYTES]
                 [--poison TEXT] [--seconds-per-record S]

Serves `grpc.health.v1.Health` (SERVING for "") and, unless --no-sink,
`echopost.v1.Sink/Deliver` (without it, grpcio answers Deliver with UNIMPLEMENTED, as a
server that lacks the service does). --max-receive sets grpcio's
`grpc.max_receive_message_length` (default: grpcio's own, 4 MiB): grpcio refuses a larger
request itself, with RESOURCE_EXHAUSTED, before the handler runs. With --poison, the
handler raises on a batch holding a record whose payload contains TEXT, which grpcio
answers with UNKNOWN ("Exception calling application"). With --seconds-per-record, the
handler works S seconds per record before it answers (a server whose work grows with the
batch); a call whose client gave up meanwhile is reported with "ok": false, "cancelled":
true.

The Sink stubs are generated at run time from the repository's proto with grpcio-tools;
the health service comes from grpcio-health-checking.

Standard output: `READY <port>` once serving, then one `EVENT <json>` line per Deliver
call the handler saw: {"ev": "deliver", "ok", "source", "seqs", "bytes",
"max_payload"}. The Rust test counts and asserts on these.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

PROTO_FILE = "echopost/v1/echopost.proto"
OUT = threading.Lock()


def emit(obj):
    line = "EVENT " + json.dumps(obj) + "\n"
    with OUT:
        sys.stdout.write(line)
        sys.stdout.flush()


def load_stubs(proto_root, out_dir):
    from grpc_tools import protoc
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(proto_root, PROTO_FILE),
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed ({rc}) on {os.path.join(proto_root, PROTO_FILE)}")
    sys.path.insert(0, out_dir)
    return (
        importlib.import_module("echopost.v1.echopost_pb2"),
        importlib.import_module("echopost.v1.echopost_pb2_grpc"),
    )


def make_sink(pb2, pb2_grpc, poison, seconds_per_record):
    marker = poison.encode() if poison else None

    class Sink(pb2_grpc.SinkServicer):
        def Deliver(self, request, context):
            seqs = [r.sequence for r in request.records]
            bad = None
            if marker is not None:
                bad = next((r.sequence for r in request.records if marker in r.record.payload), None)
            cancelled = False
            if seconds_per_record:
                time.sleep(seconds_per_record * len(seqs))
                cancelled = not context.is_active()
            emit(
                {
                    "ev": "deliver",
                    "ok": bad is None and not cancelled,
                    "cancelled": cancelled,
                    "source": request.source,
                    "seqs": seqs,
                    "bytes": request.ByteSize(),
                    "max_payload": max((len(r.record.payload) for r in request.records), default=0),
                }
            )
            if bad is not None:
                # A bug in the application's handler: grpcio answers UNKNOWN.
                raise RuntimeError(f"cannot process record {bad}")
            return pb2.DeliverResponse()

    return Sink()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto-root", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--no-sink", action="store_true")
    p.add_argument("--max-receive", type=int)
    p.add_argument("--poison")
    p.add_argument("--seconds-per-record", type=float, default=0.0)
    a = p.parse_args()

    options = []
    if a.max_receive is not None:
        options.append(("grpc.max_receive_message_length", a.max_receive))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    with tempfile.TemporaryDirectory(prefix="ep-stubs") as out_dir:
        if not a.no_sink:
            pb2, pb2_grpc = load_stubs(a.proto_root, out_dir)
            pb2_grpc.add_SinkServicer_to_server(make_sink(pb2, pb2_grpc, a.poison, a.seconds_per_record), server)
        port = server.add_insecure_port(f"127.0.0.1:{a.port}")
        if port == 0:
            sys.exit(f"cannot bind 127.0.0.1:{a.port}")
        server.start()
        with OUT:
            sys.stdout.write(f"READY {port}\n")
            sys.stdout.flush()
        server.wait_for_termination()


if __name__ == "__main__":
    main()
