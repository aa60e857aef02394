"""Traces whose spans come from three services, each with its own OpenTelemetry
SDK pipeline exporting (OTLP gRPC, BatchSpanProcessor) to a different gateway
replica: the way a client span and its server spans leave different nodes.

Trace n: root on service (n % 3), child on (n + 1) % 3, grandchild on
(n + 2) % 3, parent context propagated as W3C traceparent would carry it.
Kinds by n % 10: 0 = the child fails (error policy), 1 = the root lasts 2.5 s
(latency policy, explicit timestamps: no sleeping), 2 = the grandchild carries
customer.tier=gold (attribute policy), others match no policy.

Env: ENDPOINTS (three comma-separated host:port), TRACES, NAMESPACE.
Prints one JSON line: {"traces": {trace_id_hex: kind}}.
"""
import json
import os
import time

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

endpoints = os.environ["ENDPOINTS"].split(",")
n_traces = int(os.environ["TRACES"])
namespace = os.environ["NAMESPACE"]

providers = []
tracers = []
for i, ep in enumerate(endpoints):
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"svc-{i}", "k8s.namespace.name": namespace}
        )
    )
    # Queue large enough that the SDK drops nothing; export every 200 ms.
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://{ep}", insecure=True),
            max_queue_size=200_000,
            schedule_delay_millis=200,
            max_export_batch_size=512,
        )
    )
    providers.append(provider)
    tracers.append(provider.get_tracer("ring-test"))

out = {}
base = time.time_ns()
for n in range(n_traces):
    kind = n % 10
    start = base + n * 1_000
    root = tracers[n % 3].start_span("op-0", context=Context(), start_time=start)
    child = tracers[(n + 1) % 3].start_span(
        "op-1", context=set_span_in_context(root), start_time=start + 10
    )
    grandchild = tracers[(n + 2) % 3].start_span(
        "op-2", context=set_span_in_context(child), start_time=start + 20
    )
    if kind == 2:
        grandchild.set_attribute("customer.tier", "gold")
    grandchild.end(end_time=start + 100_000)
    if kind == 0:
        child.set_status(Status(StatusCode.ERROR, "boom"))
    child.end(end_time=start + 200_000)
    root.end(end_time=start + (2_500_000_000 if kind == 1 else 300_000))
    out[format(root.get_span_context().trace_id, "032x")] = kind

for p in providers:
    p.force_flush(30_000)
for p in providers:
    p.shutdown()
print(json.dumps({"traces": out}))
