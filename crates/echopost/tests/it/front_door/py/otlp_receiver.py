#!/usr/bin/env python3
"""A real OTLP/gRPC receiver for the front_door tests: a grpcio server built from the
opentelemetry-proto package's service definitions (TraceService, LogsService,
MetricsService), plus grpc.health.v1.Health for the daemon's probes.

    otlp_receiver.py --port P

Standard output: `READY <port>` once listening, then one `EVENT <json>` line per export
request: {"ev": "traces", "items": [span names]}, {"ev": "logs", "items": [log bodies]},
{"ev": "metrics", "items": ["name=value", ...]}.
"""

import argparse
import json
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

OUT = threading.Lock()


def emit(obj):
    with OUT:
        sys.stdout.write("EVENT " + json.dumps(obj) + "\n")
        sys.stdout.flush()


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        names = [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        emit({"ev": "traces", "items": names})
        return trace_service_pb2.ExportTraceServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request, context):
        bodies = [
            r.body.string_value
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for r in sl.log_records
        ]
        emit({"ev": "logs", "items": bodies})
        return logs_service_pb2.ExportLogsServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        items = []
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.gauge.data_points:
                        value = p.as_int if p.HasField("as_int") else p.as_double
                        items.append(f"{m.name}={value:g}")
        emit({"ev": "metrics", "items": items})
        return metrics_service_pb2.ExportMetricsServiceResponse()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    h = health.HealthServicer()
    h.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"READY {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
