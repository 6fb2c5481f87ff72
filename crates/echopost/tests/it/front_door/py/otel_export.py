#!/usr/bin/env python3
"""An unmodified OpenTelemetry application for the front_door tests: the Python SDK with
the OTLP/gRPC exporters, configured only by the environment (OTEL_EXPORTER_OTLP_ENDPOINT
=unix:///..., OTEL_EXPORTER_OTLP_INSECURE=true).

    otel_export.py FIRST COUNT

Exports, for i in FIRST..FIRST+COUNT, in this order: span `span-i`, log record `log-i`
and the gauge `queue.depth` set to i, each as an export of its own (simple processors,
a metrics flush per value). The exporters are the SDK's own, subclassed only to print
what each export carried and whether it was acknowledged: one `RESULT <json>` line per
export, {"signal": "traces"|"logs"|"metrics", "items": [...], "ok": bool}.
"""

import json
import logging
import sys

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult


def result(signal, items, ok):
    print("RESULT " + json.dumps({"signal": signal, "items": items, "ok": ok}), flush=True)


class Spans(OTLPSpanExporter):
    def export(self, spans, *args, **kwargs):
        r = super().export(spans, *args, **kwargs)
        result("traces", [s.name for s in spans], r == SpanExportResult.SUCCESS)
        return r


class Logs(OTLPLogExporter):
    def export(self, batch, *args, **kwargs):
        r = super().export(batch, *args, **kwargs)
        result("logs", [str(b.log_record.body) for b in batch], r == LogRecordExportResult.SUCCESS)
        return r


class Metrics(OTLPMetricExporter):
    def export(self, data, *args, **kwargs):
        r = super().export(data, *args, **kwargs)
        items = [
            f"{m.name}={p.value:g}"
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            for p in m.data.data_points
        ]
        result("metrics", items, r == MetricExportResult.SUCCESS)
        return r


def main():
    first, count = int(sys.argv[1]), int(sys.argv[2])
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(Spans()))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(Logs()))
    log = logging.getLogger("app")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(logger_provider=logger_provider))
    reader = PeriodicExportingMetricReader(Metrics(), export_interval_millis=3_600_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    gauge = meter_provider.get_meter("app").create_gauge("queue.depth")
    tracer = tracer_provider.get_tracer("app")
    for i in range(first, first + count):
        with tracer.start_as_current_span(f"span-{i}"):
            pass
        log.info("log-%d", i)
        gauge.set(i)
        meter_provider.force_flush()
    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()


if __name__ == "__main__":
    main()
