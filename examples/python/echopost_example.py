#!/usr/bin/env python3
"""Talk to EchoPost from Python with nothing but the proto file and grpcio.

Generates the gRPC stubs from proto/echopost/v1/echopost.proto at run time (into a
temporary directory, nothing is committed), connects to the daemon's UNIX socket,
appends three records in one atomic batch, reads them back, prints them, and exits
with status 1 if what came back differs from what was sent.

    python3 -m pip install -r examples/python/requirements.txt
    echopost run --dir /tmp/ep &
    python3 examples/python/echopost_example.py --socket /tmp/ep/echopost.sock
"""

import argparse
import importlib
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTO_FILE = "echopost/v1/echopost.proto"


def default_socket():
    """The daemon's default socket, resolved like `echopost run` does."""
    if os.environ.get("ECHOPOST_SOCKET"):
        return os.environ["ECHOPOST_SOCKET"]
    state = os.environ.get("ECHOPOST_DIR")
    if not state:
        xdg = os.environ.get("XDG_STATE_HOME", "")
        if os.path.isabs(xdg):
            state = os.path.join(xdg, "echopost")
        elif sys.platform == "darwin":
            state = os.path.expanduser("~/Library/Application Support/echopost")
        else:
            state = os.path.expanduser("~/.local/state/echopost")
    return os.path.join(state, "echopost.sock")


def load_stubs(proto_root, out_dir):
    """Compiles the proto with grpc_tools.protoc and imports the generated modules."""
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
    pb2 = importlib.import_module("echopost.v1.echopost_pb2")
    pb2_grpc = importlib.import_module("echopost.v1.echopost_pb2_grpc")
    return pb2, pb2_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=default_socket(), help="the daemon's UNIX socket")
    parser.add_argument("--proto-root", default=DEFAULT_PROTO_ROOT, help="directory holding echopost/v1/echopost.proto")
    args = parser.parse_args()

    import grpc

    with tempfile.TemporaryDirectory(prefix="echopost-stubs-") as out_dir:
        pb2, pb2_grpc = load_stubs(args.proto_root, out_dir)

        # gRPC's own name resolver understands unix:ABSOLUTE_PATH. A plain channel, no
        # options: EchoPost accepts whatever :authority gRPC core sends for a UNIX socket
        # (the percent-encoded path).
        target = "unix:" + os.path.abspath(args.socket)
        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=10)
            except grpc.FutureTimeoutError:
                sys.exit(f"no EchoPost daemon answers on {args.socket} (is `echopost run` running?)")
            stub = pb2_grpc.EchoPostStub(channel)

            sent = [
                pb2.Record(
                    id="py-1",
                    stream="python-example",
                    payload=b'{"event": "signup", "user": 42}',
                    headers={"content-type": "application/json"},
                    route="POST /events",
                ),
                pb2.Record(id="py-2", stream="python-example", payload="héllo".encode(), route="POST /events"),
                pb2.Record(id="py-3", stream="python-example", payload=bytes([0, 1, 2, 255]), route="POST /events"),
            ]
            # One atomic batch; the answer comes once it is durable.
            ack = stub.Append(pb2.AppendRequest(records=sent), timeout=30)
            print(f"stored as sequences {ack.first_sequence} to {ack.last_sequence}")

            got = []
            for response in stub.Read(pb2.ReadRequest(from_sequence=ack.first_sequence, limit=len(sent)), timeout=30):
                got.extend(response.records)
            for stored in got:
                r = stored.record
                print(f"  #{stored.sequence} id={r.id} stream={r.stream} route={r.route!r} "
                      f"headers={dict(r.headers)} payload={r.payload!r}")

            status = stub.Status(pb2.StatusRequest(), timeout=30)
            print(f"backlog: {status.backlog_records} records, daemon pid {status.pid}, version {status.version}")

    mismatches = []
    if len(got) != len(sent):
        mismatches.append(f"sent {len(sent)} records, read back {len(got)}")
    for i, (s, g) in enumerate(zip(sent, got)):
        if g.sequence != ack.first_sequence + i:
            mismatches.append(f"record {i}: sequence {g.sequence}, expected {ack.first_sequence + i}")
        r = g.record
        for field in ("id", "stream", "payload", "route"):
            if getattr(r, field) != getattr(s, field):
                mismatches.append(f"record {i}: {field} {getattr(r, field)!r} != {getattr(s, field)!r}")
        if dict(r.headers) != dict(s.headers):
            mismatches.append(f"record {i}: headers {dict(r.headers)} != {dict(s.headers)}")
        if r.timestamp_unix_nanos == 0:
            mismatches.append(f"record {i}: the daemon did not stamp the time of receipt")
    if mismatches:
        print("MISMATCH:\n  " + "\n  ".join(mismatches), file=sys.stderr)
        return 1
    print(f"read back {len(got)} records, identical to what was sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
