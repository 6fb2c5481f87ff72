#!/usr/bin/env python3
"""A stock grpcio client of the daemon, for crates/echopost/tests/it/real_clients/python.rs.

    grpcio_client.py --target TARGET --proto-root DIR --tag TAG

Opens a plain `grpc.insecure_channel(TARGET)` (no options at all: whatever :authority
grpc-core sends for the target is what the daemon gets), then calls, in order:

* `echopost.v1.EchoPost/Append` with the three records `records(TAG)` describes,
* `echopost.v1.EchoPost/Status`,
* `echopost.v1.EchoPost/Read` from the first appended sequence,
* `grpc.health.v1.Health/Check` for "" and for "echopost.v1.EchoPost".

It checks nothing itself: it prints one line `RESULT <json>` with what each call returned,
and the Rust test asserts on it (and on the daemon's own view). An RPC that fails ends the
program with its traceback and a non-zero status.

The stubs are generated at run time from the repository's proto with grpcio-tools (as
examples/python/echopost_example.py does); the health stubs come from
grpcio-health-checking.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile

PROTO_FILE = "echopost/v1/echopost.proto"


def records(pb2, tag):
    """The three records appended: a JSON body with a header, UTF-8 text, raw bytes."""
    return [
        pb2.Record(
            id=f"{tag}-1",
            stream=tag,
            payload=b'{"event": "signup", "user": 42}',
            headers={"content-type": "application/json", "x-client": "grpcio"},
            route="POST /events",
        ),
        pb2.Record(id=f"{tag}-2", stream=tag, payload="h\u00e9llo".encode(), route="POST /events"),
        pb2.Record(id=f"{tag}-3", stream=tag, payload=bytes([0, 1, 2, 255]), route="PUT /raw"),
    ]


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


def record_json(stored):
    r = stored.record
    return {
        "sequence": stored.sequence,
        "id": r.id,
        "stream": r.stream,
        "payload_hex": r.payload.hex(),
        "headers": dict(r.headers),
        "route": r.route,
        "timestamp_unix_nanos": r.timestamp_unix_nanos,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="gRPC target, e.g. unix:/abs/echopost.sock")
    parser.add_argument("--proto-root", required=True, help="directory holding echopost/v1/echopost.proto")
    parser.add_argument("--tag", required=True, help="stream name and id prefix of the records")
    args = parser.parse_args()

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="echopost-stubs-") as out_dir:
        pb2, pb2_grpc = load_stubs(args.proto_root, out_dir)
        print(f"grpcio {grpc.__version__}: plain insecure_channel({args.target!r}), no options")
        with grpc.insecure_channel(args.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            stub = pb2_grpc.EchoPostStub(channel)
            sent = records(pb2, args.tag)
            ack = stub.Append(pb2.AppendRequest(records=sent), timeout=30)
            print(f"Append: sequences {ack.first_sequence}..{ack.last_sequence}")
            status = stub.Status(pb2.StatusRequest(), timeout=30)
            print(f"Status: next_sequence {status.next_sequence}, backlog {status.backlog_records} records")
            got = []
            for response in stub.Read(pb2.ReadRequest(from_sequence=ack.first_sequence, limit=0), timeout=30):
                got.extend(response.records)
            print(f"Read: {len(got)} records")
            health = health_pb2_grpc.HealthStub(channel)
            checks = {}
            for service in ("", "echopost.v1.EchoPost"):
                r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
                checks[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            print(f"Health/Check: {checks}")

    result = {
        "grpcio": grpc.__version__,
        "cwd": os.getcwd(),
        "append": {"first_sequence": ack.first_sequence, "last_sequence": ack.last_sequence},
        "status": {
            "first_sequence": status.first_sequence,
            "next_sequence": status.next_sequence,
            "backlog_records": status.backlog_records,
            "backlog_bytes": status.backlog_bytes,
            "pid": status.pid,
            "version": status.version,
            "dir": status.dir,
            "session_id": status.session_id,
        },
        "read": [record_json(s) for s in got],
        "health": checks,
    }
    print("RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
