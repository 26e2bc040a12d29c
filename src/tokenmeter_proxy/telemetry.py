"""OpenTelemetry, by the GenAI semantic conventions: one CLIENT span per metered request and the
`gen_ai.client.*` histograms, exported over OTLP/HTTP (http/protobuf) with the SDK's exporters, or
printed (OTEL_TRACES_EXPORTER=console).

The only module that runs the SDK. `create_app` builds a `Telemetry` when `TelemetrySettings` says
an export is on (the middleware gets None otherwise, and nothing here runs); the app's lifespan
shuts it down, which exports what is still queued. The SDK reads its own `OTEL_*` variables:
service name, resource attributes, endpoint, headers, TLS, compression, timeout, sampler, ids.

A request pays for as little as can be: when it arrives, the trace context the upstream needs
(the caller's `traceparent` read, this span's ids and sampling decided as `Tracer.start_span`
would); when its record is made, one tuple on a queue. A thread of our own (`_Worker`) turns the
queue into spans and histogram points in batches, every OTEL_BSP_SCHEDULE_DELAY or as soon as
OTEL_BSP_MAX_EXPORT_BATCH_SIZE wait, and sends them with the SDK's exporters. The SDK's own path
(`Tracer.start_span`, a batch span processor of `ReadableSpan`s, the generic OTLP encoder, its
synchronous histograms) cost, measured alone, ~40 µs a span, ~10 µs a histogram record and
~50 µs to encode a span: attributes validated under locks, each built as two protobuf messages.
Never a prompt, a completion or a key: spans and points carry counts, names, ids and cost.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation import set_span_in_context

from . import __version__, otlp
from .config import TelemetrySettings
from .histograms import Histogram, Key
from .metering import Exchange
from .routes import Route
from .span_attributes import OPERATIONS, REFUSED, Attributes, attributes, own_attributes, shared_attributes, shared_key
from .tracecontext import TraceParent, format_traceparent, parse_traceparent
from .types import UsageRecord

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
SCOPE = "tokenmeter_proxy"
# The explicit bucket boundaries the GenAI semantic conventions give for these histograms
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_SAMPLED, _RANDOM_TRACE_ID = 0x01, 0x02  # W3C trace flags
_CACHE_LIMIT = 4096  # encoded attributes kept for reuse (operation, provider, models...)


class Telemetry:
    """The SDK's tracer provider and exporters for this app, and what a request asks of them."""

    def __init__(self, settings: TelemetrySettings) -> None:
        self.resource = Resource.create({SERVICE_NAME: "tokenmeter-proxy", SERVICE_VERSION: __version__}).merge(
            OTELResourceDetector().detect())  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over ours
        self.scope = InstrumentationScope(SCOPE, __version__)
        # the sampler (OTEL_TRACES_SAMPLER) and id generator: the provider makes no spans itself
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False) \
            if settings.traces else None
        self.worker = _Worker(self.resource, self.scope, settings)

    def start(self, exchange: Exchange, headers: Headers) -> Trace:
        """The span of a metered request, begun when it arrived (`exchange.started`), a child of the
        client's `traceparent` if it sent one."""
        facts = exchange.facts
        trace = Trace(self.worker, exchange.started, facts.endpoint, exchange.route.provider, facts.model,
                      exchange.id, exchange.session_id)
        if self.tracer_provider is not None:
            trace.begin(self.tracer_provider, *_caller(headers))
        return trace

    def refused(self, route: Route, endpoint: str, request_id: str, *, status: int, started: float) -> None:
        """The span of a request refused before its body was read (413): no model is known."""
        trace = Trace(self.worker, started, endpoint, route.provider, None, request_id, None)
        if self.tracer_provider is not None:
            trace.begin(self.tracer_provider, None, None)
        trace.refused(status)

    def shutdown(self) -> None:
        """Export what is still queued and stop the worker (blocks: run it in a thread)."""
        self.worker.shutdown()


class Trace:
    """One request's trace context, from its arrival to its record."""

    __slots__ = ("caller", "endpoint", "extra", "first", "flags", "model", "provider", "request_id", "sampled",
                 "session_id", "span_id", "start_ns", "started", "state", "trace_id", "traceparent", "worker")

    def __init__(self, worker: _Worker, started: float, endpoint: str, provider: str, model: str | None,
                 request_id: str, session_id: str | None) -> None:
        self.worker = worker
        self.started = started  # time.perf_counter() when the request arrived
        self.endpoint, self.provider, self.model = endpoint, provider, model
        self.request_id, self.session_id = request_id, session_id
        self.first: float | None = None
        self.traceparent: bytes | None = None  # sent upstream: this span (None while traces are off)
        self.sampled = False  # False: no span is exported
        self.caller: TraceParent | None = None
        self.state: str = ""  # the tracestate: the caller's, or the sampler's
        self.extra: Attributes | None = None  # the sampler's attributes
        self.trace_id = self.span_id = self.flags = self.start_ns = 0

    def begin(self, provider: TracerProvider, caller: TraceParent | None, state: str | None) -> None:
        """Ids, sampling and trace flags as `Tracer.start_span` decides them."""
        ids = provider.id_generator
        self.caller, self.state = caller, state or ""
        self.trace_id = ids.generate_trace_id() if caller is None else caller.trace_id
        if provider.sampler is DEFAULT_ON:  # parent-based, else always on: decided without the sampler's objects
            self.sampled = caller is None or bool(caller.flags & _SAMPLED)
        else:
            self._sample(provider, caller)
        random_id = ids.is_trace_id_random() if caller is None else caller.flags & _RANDOM_TRACE_ID
        self.flags = (_SAMPLED if self.sampled else 0) | (_RANDOM_TRACE_ID if random_id else 0)
        self.span_id = ids.generate_span_id()
        self.traceparent = format_traceparent(self.trace_id, self.span_id, self.flags)
        if self.sampled:
            self.start_ns = time.time_ns() - int((time.perf_counter() - self.started) * 1e9)

    def first_chunk(self) -> None:
        """A streamed response's first chunk reached the client."""
        if self.first is None:
            self.first = time.perf_counter()

    def end(self, record: UsageRecord | None, *, status: int | None, response_model: str | None) -> None:
        """The request's record is made (None: metering failed): the span ends."""
        self.worker.put((self, record, status, bool(response_model), time.time_ns(), time.perf_counter()))

    def refused(self, status: int) -> None:
        """The proxy refused the request itself (429 budget, 413 too large): nothing was used."""
        self.worker.put((self, REFUSED, status, False, time.time_ns(), time.perf_counter()))

    def name(self) -> str:
        operation = OPERATIONS.get(self.endpoint, self.endpoint)
        return f"{operation} {self.model}" if self.model else operation

    def _sample(self, provider: TracerProvider, caller: TraceParent | None) -> None:
        parent = None if caller is None else set_span_in_context(NonRecordingSpan(SpanContext(
            caller.trace_id, caller.span_id, True, TraceFlags(caller.flags), TraceState.from_header([self.state]))))
        result = provider.sampler.should_sample(parent, self.trace_id, self.name(), SpanKind.CLIENT)
        self.sampled = result.decision is Decision.RECORD_AND_SAMPLE
        self.state = result.trace_state.to_header() if result.trace_state else ""
        self.extra = dict(result.attributes) if result.attributes else None


# what a request leaves on the queue: its trace, its record (or None, or REFUSED), its status,
# whether the upstream named a model, when it ended (time.time_ns(), time.perf_counter())
Ended = tuple[Trace, Any, int | None, bool, int, float]


class _Worker:
    """The thread that makes spans and points of ended requests, in batches, and sends them: spans
    with the SDK's OTLP/HTTP span exporter (endpoint, headers, TLS, compression, timeout, retries;
    we hand its client the bytes `otlp` writes) or printed by its console exporter, histograms with
    its OTLP metric exporter every OTEL_METRIC_EXPORT_INTERVAL and on shutdown. Past
    OTEL_BSP_MAX_QUEUE_SIZE requests waiting, the next are dropped (and counted in the log)."""

    def __init__(self, resource: Resource, scope: InstrumentationScope, settings: TelemetrySettings) -> None:
        self.resource, self.scope = resource, scope
        self.exporter = OTLPSpanExporter() if settings.otlp_traces else None
        self.client: Any = None if self.exporter is None else getattr(self.exporter, "_client", None)
        if self.exporter is not None and self.client is None:
            raise RuntimeError("this opentelemetry-exporter-otlp-proto-http has no _client: install the version "
                               "pyproject.toml names")
        self.console = ConsoleSpanExporter() if settings.console_traces else None
        self.metrics = _Metrics(resource, scope, settings) if settings.otlp_metrics else None
        self.of = otlp.resource(resource.attributes, resource.schema_url)
        self.by = otlp.scope(scope.name, scope.version or "", scope.attributes, scope.schema_url or "")
        self.cache: otlp.Cache = {}
        self.shared: dict[tuple[Any, ...], bytes] = {}  # encoded shared attributes, by `shared_key`
        self.delay, self.limit, self.batch = settings.span_delay, settings.span_queue, settings.span_batch
        self.interval = settings.metric_interval
        self.queue: collections.deque[Ended] = collections.deque()
        self.dropped = 0
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="tokenmeter-telemetry", daemon=True)
        self.thread.start()

    def put(self, ended: Ended) -> None:
        if len(self.queue) >= self.limit:
            self.dropped += 1
            return
        self.queue.append(ended)
        if len(self.queue) >= self.batch and not self.wake.is_set():
            self.wake.set()

    def shutdown(self) -> None:
        """The last spans and points, then the exporters closed."""
        self.stopping = True
        self.wake.set()
        self.thread.join()
        if self.exporter is not None:
            self.exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
        if self.metrics is not None:
            self.metrics.exporter.shutdown()

    def _run(self) -> None:
        due = time.monotonic() + self.interval
        while True:
            self.wake.wait(min(self.delay, max(due - time.monotonic(), 0)) if self.metrics else self.delay)
            self.wake.clear()
            stopping = self.stopping
            self._drain()
            if self.metrics is not None and (stopping or time.monotonic() >= due):
                due = time.monotonic() + self.interval
                self.metrics.export()
            if stopping:
                return

    def _drain(self) -> None:
        spans: list[bytes] = []
        printed: list[ReadableSpan] = []
        while self.queue:  # the interpreter hands the event loop its turn every switch interval (5 ms)
            self._observe(self.queue.popleft(), spans, printed)
            if len(spans) >= self.batch:
                self._send(spans)
                spans = []
        if spans:
            self._send(spans)
        if printed and self.console is not None:
            self.console.export(printed)
        if self.dropped:
            log.warning("telemetry of %d requests dropped: more than OTEL_BSP_MAX_QUEUE_SIZE=%d waited",
                        self.dropped, self.limit)
            self.dropped = 0

    def _observe(self, ended: Ended, spans: list[bytes], printed: list[ReadableSpan]) -> None:
        """One ended request's points, and its span when sampled."""
        trace, record, status, named, end_ns, ended_at = ended
        failed = status is not None and status >= 400
        if self.metrics is not None:
            self.metrics.observe(trace, record if isinstance(record, UsageRecord) else None, status, ended_at)
        if not trace.sampled:
            return
        if self.exporter is not None:
            spans.append(otlp.span(
                trace_id=trace.trace_id, span_id=trace.span_id, trace_state=trace.state, remote_parent=True,
                parent_id=trace.caller.span_id if trace.caller else 0, name=trace.name(), start=trace.start_ns,
                end=end_ns, attributes=self._encoded(trace, record, status=status, named=named),
                status=otlp.STATUS_ERROR if failed else otlp.STATUS_UNSET))
        if self.console is not None:
            printed.append(_readable(trace, attributes(trace, record, status=status, named=named), self.resource,
                                     self.scope, end=end_ns, failed=failed))

    def _encoded(self, trace: Trace, record: Any, *, status: int | None, named: bool) -> bytes:
        """A span's attributes as OTLP: those spans share (operation, provider, models, session,
        outcome, currency) encoded once per combination and kept, the request's own each time."""
        if len(self.cache) > _CACHE_LIMIT or len(self.shared) > _CACHE_LIMIT:  # models, sessions: the client's
            self.cache.clear()
            self.shared.clear()
        key = shared_key(trace, record, status=status, named=named)
        shared = self.shared.get(key) if key is not None else None
        if shared is None:
            shared = otlp.attributes(shared_attributes(trace, record, status=status, named=named), self.cache)
            if key is not None:
                self.shared[key] = shared
        return shared + otlp.attributes(own_attributes(trace, record), self.cache, keep=False)

    def _send(self, spans: list[bytes]) -> None:
        try:
            self.client.export(otlp.request(self.of, self.by, spans))  # it logs its own failures
        except Exception:  # whatever happens, the thread goes on
            log.exception("exporting %d spans failed", len(spans))


class _Metrics:
    """gen_ai.client.token.usage, gen_ai.client.operation.duration and .time_to_first_chunk: aggregated
    by the worker, sent with the SDK's OTLP metric exporter."""

    def __init__(self, resource: Resource, scope: InstrumentationScope, settings: TelemetrySettings) -> None:
        now = time.time_ns()
        self.usage = Histogram(TOKEN_BUCKETS, started=now)
        self.duration = Histogram(SECONDS_BUCKETS, started=now)
        self.first_chunk = Histogram(SECONDS_BUCKETS, started=now)
        self.resource, self.scope = resource, scope
        self.delta = settings.delta_histograms
        self.timeout_millis = settings.metric_timeout * 1000
        self.exporter = OTLPMetricExporter()
        self.keys: dict[tuple[str, str, str | None, int | None], tuple[Key, Key, Key]] = {}

    def observe(self, trace: Trace, record: UsageRecord | None, status: int | None, ended: float) -> None:
        failed = status is not None and status >= 400
        timed, inputs, outputs = self._keys(trace, status if failed else None)
        self.duration.record(ended - trace.started, timed)
        if trace.first is not None:
            self.first_chunk.record(trace.first - trace.started, timed)
        if record is not None and (record.usage.total_tokens or not failed):  # an error that billed nothing: none
            self.usage.record(record.usage.input_tokens, inputs)
            self.usage.record(record.usage.output_tokens, outputs)

    def _keys(self, trace: Trace, error: int | None) -> tuple[Key, Key, Key]:
        """The points' attributes: for the duration, for input tokens, for output tokens."""
        found = self.keys.get((trace.endpoint, trace.provider, trace.model, error))
        if found is None:
            key: Key = (("gen_ai.operation.name", OPERATIONS.get(trace.endpoint, trace.endpoint)),
                        ("gen_ai.provider.name", trace.provider))
            if trace.model:
                key += (("gen_ai.request.model", trace.model),)
            found = ((*key, ("error.type", str(error))) if error else key, (*key, ("gen_ai.token.type", "input")),
                     (*key, ("gen_ai.token.type", "output")))
            if len(self.keys) > _CACHE_LIMIT:  # models are the client's to name: bounded
                self.keys.clear()
            self.keys[(trace.endpoint, trace.provider, trace.model, error)] = found
        return found

    def export(self) -> None:
        data = self.collect()
        if data.resource_metrics[0].scope_metrics[0].metrics:
            try:
                self.exporter.export(data, timeout_millis=self.timeout_millis)
            except Exception:  # the exporter logs its own failures; anything else must not end the thread
                log.exception("exporting metrics failed")

    def collect(self) -> MetricsData:
        """Every histogram's points now (the delta since the last collection, with delta temporality)."""
        now = time.time_ns()
        temporality = AggregationTemporality.DELTA if self.delta else AggregationTemporality.CUMULATIVE
        metrics = []
        for name, unit, description, histogram in (
            ("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.", self.usage),
            ("gen_ai.client.operation.duration", "s", "GenAI operation duration.", self.duration),
            ("gen_ai.client.operation.time_to_first_chunk", "s",
             "Time to receive the first chunk of a streamed response.", self.first_chunk),
        ):
            collected = histogram.collect(now, reset=self.delta)
            points = [HistogramDataPoint(
                attributes=dict(key), start_time_unix_nano=collected.start, time_unix_nano=now, count=point.count,
                sum=point.total, bucket_counts=point.counts, explicit_bounds=histogram.bounds, min=point.low,
                max=point.high) for key, point in collected.points.items()]
            if points:
                metrics.append(Metric(name=name, description=description, unit=unit,
                                      data=HistogramData(data_points=points, aggregation_temporality=temporality)))
        return MetricsData(resource_metrics=[ResourceMetrics(resource=self.resource, schema_url="", scope_metrics=[
            ScopeMetrics(scope=self.scope, metrics=metrics, schema_url="")])])


def _caller(headers: Headers) -> tuple[TraceParent | None, str | None]:
    """The client's span (its `traceparent`, when there is exactly one valid one) and `tracestate`."""
    found: list[bytes] = []
    states: list[bytes] = []
    for name, value in headers:
        if name == b"traceparent":
            found.append(value)
        elif name == b"tracestate":
            states.append(value)
    caller = parse_traceparent(found[0]) if len(found) == 1 else None
    return caller, (b",".join(states).decode("latin-1") if caller is not None and states else None)


def _readable(trace: Trace, values: Attributes, resource: Resource, scope: InstrumentationScope, *, end: int,
              failed: bool) -> ReadableSpan:
    """The span as the SDK's own exporters take it (the console's)."""
    state = TraceState.from_header([trace.state])
    caller = trace.caller
    return ReadableSpan(
        trace.name(), SpanContext(trace.trace_id, trace.span_id, False, TraceFlags(trace.flags), state),
        None if caller is None else SpanContext(caller.trace_id, caller.span_id, True, TraceFlags(caller.flags), state),
        resource, values, kind=SpanKind.CLIENT, status=Status(StatusCode.ERROR if failed else StatusCode.UNSET),
        start_time=trace.start_ns, end_time=end, instrumentation_scope=scope)
