#!/usr/bin/env python3
"""A raw HTTP/2 gRPC client that sends whatever `:authority` it is told, for
crates/echopost/tests/it/real_clients/raw_h2.rs.

    h2_authority.py --socket ABS_PATH --case NAME=HEX [--case NAME=- ...]

Each case is one real gRPC call of `echopost.v1.EchoPost/Status`: a request HEADERS block
(`:method POST`, `:scheme http`, `:path /echopost.v1.EchoPost/Status`, then `:authority`
with the value HEX decodes to, or none at all for `-`, then `content-type:
application/grpc` and `te: trailers`) and one DATA frame with a gRPC message of length 0
(an empty StatusRequest). The `h2` package is told not to validate or normalise what it
sends, so the odd values go out as they are.

Every case is sent twice: on a connection of its own, and as one stream among all the
cases on a single shared connection (so that the header blocks also go through one HPACK
context, with indexed references to earlier ones).

It checks nothing itself: for every call it prints one line `RESULT <json>` with the
response headers, trailers, body (hex) and any RST_STREAM or GOAWAY, and the Rust test
asserts on them.
"""

import argparse
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events

PATH = b"/echopost.v1.EchoPost/Status"
# The gRPC message frame: not compressed, length 0 (an empty StatusRequest).
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"
TIMEOUT_S = 20


def request_headers(authority):
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", PATH)]
    if authority is not None:
        headers.append((b":authority", authority))
    headers += [
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"user-agent", b"echopost-test-raw-h2"),
    ]
    return headers


def text(pairs):
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in pairs}


def run(sock_path, cases):
    """Sends every case on one connection; returns a result per case, in order."""
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(
            client_side=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            header_encoding=None,
        )
    )
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT_S)
    s.connect(sock_path)
    conn.initiate_connection()
    results = {}
    by_stream = {}
    for name, authority in cases:
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, request_headers(authority))
        conn.send_data(stream, EMPTY_MESSAGE, end_stream=True)
        by_stream[stream] = name
        results[name] = {
            "case": name,
            "authority_hex": None if authority is None else authority.hex(),
            "stream": stream,
            "headers": None,
            "trailers": None,
            "body_hex": "",
            "reset": None,
            "ended": False,
        }
    s.sendall(conn.data_to_send())
    goaway = None
    open_streams = set(by_stream)
    while open_streams and goaway is None:
        data = s.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            r = results.get(by_stream.get(getattr(event, "stream_id", None)))
            if isinstance(event, h2.events.ResponseReceived):
                r["headers"] = text(event.headers)
            elif isinstance(event, h2.events.TrailersReceived):
                r["trailers"] = text(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                r["body_hex"] += event.data.hex()
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                r["ended"] = True
                open_streams.discard(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                r["reset"] = int(event.error_code)
                open_streams.discard(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                goaway = {"error_code": int(event.error_code), "debug": (event.additional_data or b"").hex()}
        out = conn.data_to_send()
        if out:
            s.sendall(out)
    conn.close_connection()
    try:
        s.sendall(conn.data_to_send())
    except OSError:
        pass
    s.close()
    for r in results.values():
        r["goaway"] = goaway
    return [results[name] for name, _ in cases]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the daemon's UNIX socket")
    parser.add_argument(
        "--case",
        action="append",
        required=True,
        help="NAME=HEX: a call with :authority bytes.fromhex(HEX); NAME=- sends no :authority",
    )
    args = parser.parse_args()
    cases = []
    for c in args.case:
        name, _, value = c.partition("=")
        cases.append((name, None if value == "-" else bytes.fromhex(value)))

    print(f"h2 {h2.__version__}: {len(cases)} Status calls, each on its own connection and all on one")
    for name, authority in cases:
        [r] = run(args.socket, [(name, authority)])
        r["connection"] = "own"
        print("RESULT " + json.dumps(r, sort_keys=True))
    for r in run(args.socket, cases):
        r["connection"] = "shared"
        print("RESULT " + json.dumps(r, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
