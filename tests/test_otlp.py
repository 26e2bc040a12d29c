"""`otlp` writes the very message the SDK's generic encoder makes from the equivalent
`ReadableSpan`s, for every kind of span and attribute value a span can carry."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from tokenmeter_proxy import otlp

RESOURCE = Resource.create({"service.name": "tokenmeter-test", "host.cores": 2, "deployment.tags": ("a", "b")},
                           schema_url="https://opentelemetry.io/schemas/1.26.0")
SCOPE = InstrumentationScope("tokenmeter_proxy", "0.1.0", "https://example.com/schema", {"scope.kind": "proxy"})


def spans(n: int) -> tuple[list[bytes], list[ReadableSpan]]:
    """n spans, as otlp writes them and as the SDK has them."""
    cache: otlp.Cache = {}
    ours, theirs = [], []
    for i in range(n):
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": f"gpt-4o-{i % 3}",
            "tokenmeter.request_id": f"r{i}",
            "gen_ai.usage.input_tokens": 1000 * i, "tokenmeter.cost": 0.000435 * i, "flag": i % 2 == 0,
            "negative": -i, "big": 2**63 - 1, "text": "é" * 70 * i, "empty": "", "words": ["a", "b"],
            "numbers": (1, 2.5), "raw": b"\x00\x01", "nested": {"k": "v", "deeper": {"ok": True}}, "nothing": None}
        trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C + i, 0xB7AD6B7169203331 + i
        parent_id = 0x1234 + i if i % 2 else 0
        state = f"vendor=v{i},other=x" if i % 3 else ""
        status, error = (otlp.STATUS_ERROR, "503") if i % 4 == 3 else (otlp.STATUS_UNSET, "")
        start, end = 1_700_000_000_000_000_000 + i, 1_700_000_000_500_000_000 + i
        ours.append(otlp.span(trace_id=trace_id, span_id=span_id, parent_id=parent_id, remote_parent=True,
                              trace_state=state, name=f"chat gpt-4o {i}", start=start, end=end,
                              attributes=otlp.attributes(attributes, cache), status=status, description=error))
        trace_state = TraceState.from_header([state]) if state else None
        theirs.append(ReadableSpan(
            f"chat gpt-4o {i}", SpanContext(trace_id, span_id, False, TraceFlags(1), trace_state),
            SpanContext(trace_id, parent_id, True, TraceFlags(1)) if parent_id else None, RESOURCE, attributes,
            kind=SpanKind.CLIENT, status=Status(StatusCode(status), error or None), start_time=start, end_time=end,
            instrumentation_scope=SCOPE))
    return ours, theirs


def ours(encoded: list[bytes]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(otlp.request(
        otlp.resource(RESOURCE.attributes, RESOURCE.schema_url),
        otlp.scope(SCOPE.name, SCOPE.version or "", SCOPE.attributes, SCOPE.schema_url or ""), encoded))


def test_the_same_message_as_the_sdks_encoder() -> None:
    encoded, readable = spans(12)
    assert ours(encoded) == ExportTraceServiceRequest.FromString(encode_spans(readable).SerializePartialToString())


def test_long_fields_and_a_large_batch() -> None:
    encoded, readable = spans(300)  # lengths past one varint byte at every level
    assert ours(encoded) == ExportTraceServiceRequest.FromString(encode_spans(readable).SerializePartialToString())


def test_the_cache_keeps_values_apart() -> None:
    cache: otlp.Cache = {}
    for value in ("1", 1, True, 1.0, "True"):
        otlp.attributes({"k": value}, cache)
    one = otlp.span(trace_id=1, span_id=1, name="x", start=0, end=0, attributes=otlp.attributes({"k": 1}, cache))
    got = ExportTraceServiceRequest.FromString(otlp.request(otlp.resource({}), otlp.scope("s"), [one]))
    assert got.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.int_value == 1
