"""Spans from the OpenTelemetry Python SDK itself, for
engines/infra/tests/traces.rs: a three-service request flow, instrumented as
instrumentation libraries do it (a SERVER span per request served, a CLIENT
span per call, W3C trace context carried in the call's headers), seeded so
its call graph is known.

    python tests/python/otel_traces.py OUT.json > truth.json

OUT.json gets the spans as OTLP JSON, protobuf's JSON mapping of the OTLP
export request (base64 ids, int64s as strings, enums by name), one request
per service and line, as the OpenTelemetry Collector's file exporter writes
them. Standard output gets what was generated: visits, entries, errors, the
number of visits making at least k calls to each callee, and self times.

The flow: requests enter at `web` (80 %) or straight at `orders` (20 %, a
batch job); `web` calls `orders` once; `orders` calls `stock` twice (25 %),
once (50 %) or not at all; 5 % of `stock`'s answers are errors. Each
service's own work takes a constant time, split around its calls.
"""

import json
import random
import sys

from google.protobuf.json_format import MessageToJson
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

REQUESTS = 2000
SERVICES = ["web", "orders", "stock"]
# Each service's own work per request, in nanoseconds (whole, so exact).
SELF_NS = {"web": 2_000_000, "orders": 3_000_000, "stock": 1_000_000}
# The network each way between a CLIENT span and the SERVER span it calls.
NETWORK_NS = 100_000
START_NS = 1_750_000_000_000_000_000

# The SDK draws span and trace ids from the global `random`: seeded, the
# output is the same every run. The flow draws from its own generator.
random.seed(82)
draws = random.Random(7)

exporters = {}
tracers = {}
for service in SERVICES:
    exporters[service] = InMemorySpanExporter()
    # A fixed instance id (the SDK's default is a random UUID): the same
    # seed writes the same file.
    resource = Resource.create({"service.name": service, "service.instance.id": f"{service}-0"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporters[service]))
    tracers[service] = provider.get_tracer("hanzo-twin-test")
propagator = TraceContextTextMapPropagator()

truth = {
    "requests": REQUESTS,
    "visits": {s: 0 for s in SERVICES},
    "entries": {s: 0 for s in SERVICES},
    "errors": {s: 0 for s in SERVICES},
    # caller -> callee -> [visits making at least 1 call, at least 2, ...]
    "calls": {"web": {"orders": [0]}, "orders": {"stock": [0, 0]}},
    "self_time_s": {s: SELF_NS[s] / 1e9 for s in SERVICES},
}


def callees(service):
    if service == "web":
        return ["orders"]
    if service == "orders":
        u = draws.random()
        return ["stock"] * (2 if u < 0.25 else 1 if u < 0.75 else 0)
    return []


def call(tracer, parent_context, callee, at):
    """A call as an HTTP client instrumentation makes it: a CLIENT span
    whose context travels in the request's headers. Returns when it ends."""
    client = tracer.start_span(
        f"GET /{callee}", context=parent_context, kind=SpanKind.CLIENT, start_time=at
    )
    headers = {}
    propagator.inject(headers, context=trace.set_span_in_context(client))
    answered = serve(callee, propagator.extract(headers), at + NETWORK_NS)
    client.end(end_time=answered + NETWORK_NS)
    return answered + NETWORK_NS


def serve(service, context, at):
    """A request served: a SERVER span in the caller's context (none for an
    entering request), the service's own work split around its calls.
    Returns when it ends."""
    span = tracers[service].start_span(
        f"{service} handler", context=context, kind=SpanKind.SERVER, start_time=at
    )
    truth["visits"][service] += 1
    if context is None:
        truth["entries"][service] += 1
    planned = callees(service)
    for callee in dict.fromkeys(planned):
        counts = truth["calls"][service][callee]
        for k in range(planned.count(callee)):
            counts[k] += 1
    piece = SELF_NS[service] // (len(planned) + 1)
    first = SELF_NS[service] - piece * len(planned)
    inside = trace.set_span_in_context(span)
    t = at + first
    for callee in planned:
        t = call(tracers[service], inside, callee, t) + piece
    if service == "stock" and draws.random() < 0.05:
        span.set_status(Status(StatusCode.ERROR, "out of stock"))
        truth["errors"][service] += 1
    span.end(end_time=t)
    return t


for request in range(REQUESTS):
    entry = "web" if draws.random() < 0.8 else "orders"
    serve(entry, None, START_NS + request * 50_000_000)

with open(sys.argv[1], "w") as out:
    for service in SERVICES:
        request = encode_spans(exporters[service].get_finished_spans())
        out.write(MessageToJson(request, indent=None) + "\n")
json.dump(truth, sys.stdout)
