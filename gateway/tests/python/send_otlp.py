"""Sends traces, metrics and logs to the gateway with the OpenTelemetry Python SDK.

Driven by gateway/tests/python_sdk.rs through environment variables:
  PROTOCOL   grpc | http
  ENDPOINT   host:port (grpc) or http://host:port (http)
  NAMESPACE  value of k8s.namespace.name on the resource
  TOKEN      optional bearer token
  SIGNALS    comma-separated subset of traces,metrics,logs
  RUN_ID     marker put on every item so the test finds exactly its own data
"""
import logging
import os
import sys

from opentelemetry.sdk.resources import Resource

protocol = os.environ["PROTOCOL"]
endpoint = os.environ["ENDPOINT"]
namespace = os.environ["NAMESPACE"]
token = os.environ.get("TOKEN")
signals = set(os.environ.get("SIGNALS", "traces").split(","))
run_id = os.environ.get("RUN_ID", "run")

headers = {"authorization": f"Bearer {token}"} if token else None
resource = Resource.create(
    {
        "service.name": "py-svc",
        "service.namespace": "shop",
        "service.instance.id": "py-1",
        "k8s.namespace.name": namespace,
        "k8s.pod.name": "py-pod-0",
        "deployment.environment": "test",
    }
)

if protocol == "grpc":
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    kw = dict(endpoint=endpoint, insecure=True, headers=headers, compression=grpc.Compression.Gzip)
    span_exporter = OTLPSpanExporter(**kw)
    metric_exporter = OTLPMetricExporter(**kw)
    log_exporter = OTLPLogExporter(**kw)
else:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    kw = dict(headers=headers, compression=Compression.Gzip)
    span_exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", **kw)
    metric_exporter = OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", **kw)
    log_exporter = OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", **kw)

ok = True

if "traces" in signals:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    collected = []

    class Collect:
        def export(self, spans):
            collected.extend(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=0):
            return True

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(Collect()))
    tracer = provider.get_tracer("mop-test")
    for i in range(3):
        with tracer.start_as_current_span(f"GET /items/{i}") as root:
            root.set_attribute("test.run", run_id)
            with tracer.start_as_current_span("db.query") as child:
                child.set_attribute("test.run", run_id)
    result = span_exporter.export(collected)
    print("traces:", result, len(collected))
    ok &= result == SpanExportResult.SUCCESS

if "metrics" in signals:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    meter = mp.get_meter("mop-test", "1.2.3")
    requests = meter.create_counter("http.server.requests", unit="{request}", description="Requests served")
    duration = meter.create_histogram("http.server.request.duration", unit="s", description="Request duration")
    queue = meter.create_up_down_counter("queue.size", unit="{item}")
    for i in range(5):
        requests.add(1, {"http.route": "/items", "test.run": run_id})
        duration.record(0.02 * (i + 1), {"http.route": "/items", "test.run": run_id})
    queue.add(7, {"test.run": run_id})
    flushed = mp.force_flush(10_000)
    print("metrics flushed:", flushed)
    ok &= flushed
    mp.shutdown()

if "logs" in signals:
    try:
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    except ImportError:  # newer SDKs moved the logs API out of the underscore module
        from opentelemetry.sdk.logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk.logs.export import SimpleLogRecordProcessor

    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    handler = LoggingHandler(level=logging.INFO, logger_provider=lp)
    log = logging.getLogger("mop-test")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    for i in range(4):
        log.info("order %d shipped %s", i, run_id, extra={"test.run": run_id})
    lp.force_flush()
    lp.shutdown()
    print("logs: sent")

sys.exit(0 if ok else 1)
