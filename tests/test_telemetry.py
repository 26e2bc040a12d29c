"""OpenTelemetry (telemetry.py and its seam in the middleware), checked the way a collector sees it:
a real OTLP/HTTP receiver, started here, decodes what the proxy exports with opentelemetry-proto.

The app runs in-process with its lifespan; leaving the lifespan shuts the SDK down, which flushes
every queued span and metric point, so the receiver holds them all when a test looks. One test runs
a real process and stops it with SIGTERM: the spans still queued then must arrive too."""

from __future__ import annotations

import dataclasses
import gzip
import json
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from conftest import proxy_client, serve_in_thread
from fake_upstream import FakeUpstream
from processes import Proxy
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings, TelemetrySettings, telemetry_settings
from tokenmeter_proxy.errors import ConfigError
from tokenmeter_proxy.telemetry import SECONDS_BUCKETS, TOKEN_BUCKETS

PROMPT = "PROMPT-CANARY summarise the quarterly report"
COMPLETIONS = (b"hello from fake", b"tok0", b"tok1")  # what the fake upstream answers
KEY = "sk-telemetry-test-key"
ON = TelemetrySettings(otlp_traces=True, otlp_metrics=True)

pytestmark = pytest.mark.anyio


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP receiver: every body as received (decompressed), and decoded."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.daemon_threads = True
        self.lock = threading.Lock()
        self.bodies: list[tuple[str, str | None, bytes]] = []  # (path, content type, body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """(resource attributes, span) of every span received."""
        found = []
        for request in self._decoded("/v1/traces", ExportTraceServiceRequest):
            for resource_spans in request.resource_spans:
                resource = values(resource_spans.resource.attributes)
                found += [(resource, span) for scope in resource_spans.scope_spans for span in scope.spans]
        return found

    def metrics(self, name: str) -> list[Metric]:
        return [metric for request in self._decoded("/v1/metrics", ExportMetricsServiceRequest)
                for resource in request.resource_metrics for scope in resource.scope_metrics
                for metric in scope.metrics if metric.name == name]

    def raw(self) -> bytes:
        with self.lock:
            return b"".join(body for _, _, body in self.bodies)

    def _decoded(self, path: str, kind: Any) -> list[Any]:
        with self.lock:
            bodies = [(content_type, body) for got, content_type, body in self.bodies if got == path]
        decoded = []
        for content_type, body in bodies:
            assert content_type == "application/x-protobuf", content_type
            message = kind()
            message.ParseFromString(body)
            decoded.append(message)
        return decoded


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.lock:
            self.server.bodies.append((self.path, self.headers.get("content-type"), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def otel_environ(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own variables, which it reads when the app builds it."""
    for name, value in (("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url), ("OTEL_SERVICE_NAME", "tokenmeter-test"),
                        ("OTEL_BSP_SCHEDULE_DELAY", "50"), ("OTEL_METRIC_EXPORT_INTERVAL", "60000")):
        monkeypatch.setenv(name, value)


@asynccontextmanager
async def traced_proxy(settings: Settings, upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    """The app with telemetry on; on leaving, its lifespan has ended and every export is flushed."""
    app = create_app(dataclasses.replace(settings, telemetry=ON), transport=httpx.ASGITransport(app=upstream.app))
    assert app.proxy.tracing is not None
    async with proxy_client(app) as client:
        yield client


def values(attributes: Any) -> dict[str, Any]:
    """OTLP attributes as {key: value}; ints, doubles and strings keep their wire type."""
    out = {}
    for kv in attributes:
        assert isinstance(kv, KeyValue)
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
        if kind == "double_value":
            out[kv.key] = ("double", out[kv.key])
    return out


def chat(client: httpx.AsyncClient, *, session: str | None = None, stream: bool = False, model: str = "gpt-4o-mini",
         **headers: str) -> Any:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    sent = {"authorization": f"Bearer {KEY}", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if session:
        sent["x-session-id"] = session
    return client.post("/v1/chat/completions", json=body, headers=sent)


def one_span(receiver: Receiver, request_id: str) -> Span:
    found = [span for _, span in receiver.spans() if values(span.attributes).get("tokenmeter.request_id") == request_id]
    assert len(found) == 1, f"{len(found)} spans for request {request_id}: {[s.name for _, s in receiver.spans()]}"
    return found[0]


def assert_nothing_secret(receiver: Receiver) -> None:
    raw = receiver.raw()
    assert raw, "nothing was exported"
    for text in (PROMPT.encode(), KEY.encode(), *COMPLETIONS):
        assert text not in raw, f"{text!r} was exported"


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, TelemetrySettings()),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_BSP_SCHEDULE_DELAY": "200"}, TelemetrySettings()),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, TelemetrySettings(otlp_traces=True, otlp_metrics=True)),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, TelemetrySettings(otlp_traces=True)),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}, TelemetrySettings(otlp_metrics=True)),
    ({"OTEL_TRACES_EXPORTER": "console"}, TelemetrySettings(console_traces=True)),
    ({"OTEL_TRACES_EXPORTER": "console,otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
     TelemetrySettings(otlp_traces=True, otlp_metrics=True, console_traces=True)),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
     TelemetrySettings(otlp_metrics=True)),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, TelemetrySettings()),
])
def test_on_only_where_an_export_is_configured(environ: dict[str, str], expected: TelemetrySettings) -> None:
    assert telemetry_settings(environ) == expected
    assert Settings.load(environ=environ).telemetry == expected


@pytest.mark.parametrize(("environ", "named"), [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf"),
    ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER must be otlp, console, none"),
    ({"OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "OTEL_METRIC_EXPORT_INTERVAL must be a positive number"),
    ({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "both"}, "TEMPORALITY_PREFERENCE must be"),
])
def test_unusable_settings_stop_startup(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.load(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", **environ})


def test_other_programs_settings_do_not_matter_while_off() -> None:
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRIC_EXPORT_INTERVAL": "soon"}
    assert Settings.load(environ=environ).telemetry == TelemetrySettings()


def test_metric_settings() -> None:
    settings = telemetry_settings({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics",
                                   "OTEL_METRIC_EXPORT_INTERVAL": "1500", "OTEL_METRIC_EXPORT_TIMEOUT": "250",
                                   "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "Delta"})
    assert (settings.metric_interval, settings.metric_timeout, settings.delta_histograms) == (1.5, 0.25, True)


def test_telemetry_is_never_a_worker_variable() -> None:
    environ = Settings.load(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}).to_environ()
    assert not [name for name in environ if "TELEMETRY" in name]


# ---------------------------------------------------------------- spans


@pytest.mark.usefixtures("otel_environ")
async def test_a_span_per_request_child_of_the_callers_trace(
    settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver
) -> None:
    trace, parent = secrets.token_hex(16), secrets.token_hex(8)
    async with traced_proxy(settings, fake_upstream) as client:
        response = await chat(client, session="s-otel", traceparent=f"00-{trace}-{parent}-01",
                              tracestate="vendor=abc", x_fake_prompt_tokens="1000",
                              x_fake_completion_tokens="500", x_fake_cached_tokens="200")
        assert response.status_code == 200
    request_id = response.headers["x-tokenmeter-request-id"]
    span = one_span(receiver, request_id)
    assert span.name == "chat gpt-4o-mini" and span.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert (span.trace_id.hex(), span.parent_span_id.hex()) == (trace, parent)
    assert span.trace_state == "vendor=abc"
    # (800 x 0.15 + 200 x 0.075 + 500 x 0.60) / 1e6
    assert values(span.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500, "gen_ai.usage.cache_read.input_tokens": 200,
        "tokenmeter.request_id": request_id, "tokenmeter.session_id": "s-otel",
        "tokenmeter.cost": ("double", pytest.approx(0.000435)), "tokenmeter.currency": "USD",
    }
    assert span.status.code == Status.STATUS_CODE_UNSET
    assert span.start_time_unix_nano < span.end_time_unix_nano
    (resource, _), = receiver.spans()
    assert resource["service.name"] == "tokenmeter-test", "OTEL_SERVICE_NAME applies"
    sent = fake_upstream.seen[-1]["headers"]
    assert sent["traceparent"] == f"00-{trace}-{span.span_id.hex()}-01", "the upstream's parent is our span"
    assert sent["tracestate"] == "vendor=abc"
    assert_nothing_secret(receiver)


@pytest.mark.usefixtures("otel_environ")
async def test_a_request_without_a_traceparent_starts_a_trace(
    settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver
) -> None:
    async with traced_proxy(settings, fake_upstream) as client:
        response = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": PROMPT})
        assert response.status_code == 200
    span = one_span(receiver, response.headers["x-tokenmeter-request-id"])
    assert span.name == "embeddings text-embedding-3-small" and not span.parent_span_id
    attributes = values(span.attributes)
    assert attributes["gen_ai.operation.name"] == "embeddings" and "tokenmeter.session_id" not in attributes
    version, trace, parent, flags = fake_upstream.seen[-1]["headers"]["traceparent"].split("-")
    assert (version, trace, parent) == ("00", span.trace_id.hex(), span.span_id.hex())
    assert int(flags, 16) & 1, "sampled (and, by W3C Trace Context level 2, 02: a random trace id)"


@pytest.mark.usefixtures("otel_environ")
async def test_a_streamed_request_has_its_streams_usage_and_first_chunk(
    settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver
) -> None:
    async with traced_proxy(settings, fake_upstream) as client:
        response = await chat(client, stream=True, model="gpt-4o", x_fake_prompt_tokens="300",
                              x_fake_completion_tokens="40", x_fake_delay_ms="30")
        assert response.status_code == 200 and b"tok0" in response.content
    span = one_span(receiver, response.headers["x-tokenmeter-request-id"])
    attributes = values(span.attributes)
    assert span.name == "chat gpt-4o" and "error.type" not in attributes
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (300, 40)
    assert attributes["tokenmeter.cost"] == ("double", pytest.approx((300 * 2.5 + 40 * 10) / 1e6))
    first, = receiver.metrics("gen_ai.client.operation.time_to_first_chunk")
    point, = first.histogram.data_points
    assert first.unit == "s" and point.count == 1 and 0.025 <= point.sum < (span.end_time_unix_nano
                                                                              - span.start_time_unix_nano) / 1e9
    assert list(point.explicit_bounds) == list(SECONDS_BUCKETS)
    assert_nothing_secret(receiver)


@pytest.mark.usefixtures("otel_environ")
async def test_an_upstream_error_has_its_status_as_error_type(
    settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver
) -> None:
    async with traced_proxy(settings, fake_upstream) as client:
        response = await chat(client, model="gpt-4o", x_fake_status="503")
        assert response.status_code == 503
    span = one_span(receiver, response.headers["x-tokenmeter-request-id"])
    attributes = values(span.attributes)
    assert span.name == "chat gpt-4o" and attributes["error.type"] == "503"
    assert span.status.code == Status.STATUS_CODE_ERROR
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (0, 0)
    assert "gen_ai.response.model" not in attributes, "the error named no model"
    duration, = receiver.metrics("gen_ai.client.operation.duration")
    point, = duration.histogram.data_points
    assert values(point.attributes)["error.type"] == "503"
    assert not receiver.metrics("gen_ai.client.token.usage"), "an error that billed nothing used no tokens"


@pytest.mark.usefixtures("otel_environ")
async def test_spans_alike_but_for_session_model_or_outcome_each_carry_their_own(
    settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver
) -> None:
    # what spans share is encoded once and kept: none may carry another's session, model or error
    asked = [("s-a", "gpt-4o-mini", "200"), ("s-b", "gpt-4o-mini", "200"), ("s-a", "gpt-4o", "200"),
             ("s-a", "gpt-4o-mini", "503"), (None, "gpt-4o-mini", "200"), ("s-a", "gpt-4o-mini", "200")]
    async with traced_proxy(settings, fake_upstream) as client:
        responses = [await chat(client, session=session, model=model, **({"x_fake_status": status} if status != "200"
                                                                           else {}))
                     for session, model, status in asked]
    seen = set()
    for (session, model, status), response in zip(asked, responses, strict=True):
        request_id = response.headers["x-tokenmeter-request-id"]
        attributes = values(one_span(receiver, request_id).attributes)
        assert attributes["tokenmeter.request_id"] == request_id
        assert attributes.get("tokenmeter.session_id") == session and attributes["gen_ai.request.model"] == model
        assert attributes.get("error.type") == (status if status != "200" else None)
        assert ("gen_ai.response.model" in attributes) == (status == "200")
        seen.add(attributes["gen_ai.usage.input_tokens"])
    assert len(seen) == 2, "each span its own usage: the error's is 0"


@pytest.mark.usefixtures("otel_environ")
async def test_a_budget_refusal_has_a_span_and_goes_nowhere(
    settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver
) -> None:
    budgeted = dataclasses.replace(settings, default_budgets='[{"scope": "session", "period": "day", "max_tokens": 1}]')
    async with traced_proxy(budgeted, fake_upstream) as client:
        response = await chat(client, session="s-over", traceparent=f"00-{'a' * 32}-{'b' * 16}-01")
        assert response.status_code == 429
    span = one_span(receiver, response.headers["x-tokenmeter-request-id"])
    assert span.name == "chat gpt-4o-mini" and span.parent_span_id.hex() == "b" * 16
    attributes = values(span.attributes)
    assert attributes["error.type"] == "429" and attributes["tokenmeter.session_id"] == "s-over"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (0, 0)
    assert not fake_upstream.seen


@pytest.mark.usefixtures("otel_environ")
async def test_a_body_too_large_has_a_span(settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver
                                           ) -> None:
    async with traced_proxy(dataclasses.replace(settings, max_body_bytes=64), fake_upstream) as client:
        response = await chat(client)
        assert response.status_code == 413
    span = one_span(receiver, response.headers["x-tokenmeter-request-id"])
    assert span.name == "chat", "the model is in the body, which was not read"
    assert values(span.attributes)["error.type"] == "413" and span.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert not fake_upstream.seen


# ---------------------------------------------------------------- metrics


@pytest.mark.usefixtures("otel_environ")
async def test_token_usage_and_duration_metrics(settings: Settings, fake_upstream: FakeUpstream,
                                                receiver: Receiver) -> None:
    async with traced_proxy(settings, fake_upstream) as client:
        for prompt, completion in ((1000, 500), (24, 6)):
            response = await chat(client, x_fake_prompt_tokens=str(prompt), x_fake_completion_tokens=str(completion))
            assert response.status_code == 200
        response = await chat(client, model="gpt-4o", x_fake_prompt_tokens="7", x_fake_completion_tokens="3",
                              x_fake_delay_ms="100")
        assert response.status_code == 200
    usage, = receiver.metrics("gen_ai.client.token.usage")
    assert usage.unit == "{token}" and usage.WhichOneof("data") == "histogram"
    points = {(values(p.attributes)["gen_ai.request.model"], values(p.attributes)["gen_ai.token.type"]): p
              for p in usage.histogram.data_points}
    assert {key: (p.count, p.sum) for key, p in points.items()} == {
        ("gpt-4o-mini", "input"): (2, 1024), ("gpt-4o-mini", "output"): (2, 506),
        ("gpt-4o", "input"): (1, 7), ("gpt-4o", "output"): (1, 3)}
    for point in usage.histogram.data_points:
        assert list(point.explicit_bounds) == list(TOKEN_BUCKETS)
        assert set(values(point.attributes)) == {"gen_ai.operation.name", "gen_ai.provider.name",
                                                 "gen_ai.request.model", "gen_ai.token.type"}
        assert values(point.attributes)["gen_ai.operation.name"] == "chat"
    mini = points[("gpt-4o-mini", "input")]
    assert (mini.bucket_counts[3], mini.bucket_counts[5]) == (1, 1), "24 in (16, 64], 1000 in (256, 1024]"
    duration, = receiver.metrics("gen_ai.client.operation.duration")
    assert duration.unit == "s" and duration.WhichOneof("data") == "histogram"
    by_model = {values(p.attributes)["gen_ai.request.model"]: p for p in duration.histogram.data_points}
    assert by_model["gpt-4o-mini"].count == 2 and by_model["gpt-4o"].count == 1
    assert 0.1 <= by_model["gpt-4o"].sum < 5, "the upstream took 100 ms: seconds, not milliseconds"
    assert list(by_model["gpt-4o"].explicit_bounds) == list(SECONDS_BUCKETS)
    assert not receiver.metrics("gen_ai.client.operation.time_to_first_chunk"), "no stream, no first chunk"
    assert_nothing_secret(receiver)


# ---------------------------------------------------------------- off


async def test_off_nothing_is_exported_and_the_traceparent_passes(
    settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "tokenmeter-test")  # the SDK's variables, but no endpoint
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    off = Settings.load({"upstream": settings.upstream, "database_url": settings.database_url,
                         "pricing": str(settings.pricing)}, environ={"OTEL_SERVICE_NAME": "tokenmeter-test"})
    app = create_app(off, transport=httpx.ASGITransport(app=fake_upstream.app))
    assert app.proxy.tracing is None
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    async with proxy_client(app) as client:
        response = await chat(client, traceparent=traceparent)
        assert response.status_code == 200
    assert fake_upstream.seen[-1]["headers"]["traceparent"] == traceparent
    assert not receiver.bodies


# ---------------------------------------------------------------- a real process


def test_sigterm_flushes_the_last_spans(tmp_path: Path, receiver: Receiver) -> None:
    """A process stopped while its spans wait for the next batch (a minute away) still exports them,
    and with OTEL_TRACES_EXPORTER=console,otlp prints them too."""
    upstream = FakeUpstream()
    with serve_in_thread(upstream.app) as base:
        proxy = Proxy(tmp_path, base, environ={
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url + "/v1/traces", "OTEL_TRACES_EXPORTER": "console,otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "60000"})
        response = httpx.post(f"{proxy.url}/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                              json={"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]})
        assert response.status_code == 200
        assert proxy.stop() == 0
    span = one_span(receiver, response.headers["x-tokenmeter-request-id"])
    assert span.name == "chat gpt-4o"
    assert not receiver.metrics("gen_ai.client.token.usage"), "only traces have an endpoint"
    printed = proxy.log.read_text()
    start = printed.index('{\n    "name": "chat gpt-4o"')
    assert json.loads(printed[start:printed.index("\n}", start) + 2])["kind"] == "SpanKind.CLIENT"
    assert PROMPT not in printed
    assert_nothing_secret(receiver)


# ---------------------------------------------------------------- sampling and temporality


@pytest.mark.usefixtures("otel_environ")
async def test_an_unsampled_caller_is_not_exported_but_still_propagated(
    settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver
) -> None:
    trace = secrets.token_hex(16)
    async with traced_proxy(settings, fake_upstream) as client:
        response = await chat(client, traceparent=f"00-{trace}-{'c' * 16}-00")
        assert response.status_code == 200
    _, sent_trace, parent, flags = fake_upstream.seen[-1]["headers"]["traceparent"].split("-")
    assert (sent_trace, flags) == (trace, "00") and parent != "c" * 16
    assert not receiver.spans(), "the caller decided not to sample this trace"
    assert receiver.metrics("gen_ai.client.token.usage"), "metrics count every request"


@pytest.mark.usefixtures("otel_environ")
async def test_the_sdks_sampler_variable_applies(settings: Settings, fake_upstream: FakeUpstream,
                                                 receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    async with traced_proxy(settings, fake_upstream) as client:
        assert (await chat(client)).status_code == 200
    assert fake_upstream.seen[-1]["headers"]["traceparent"].endswith("-02"), "not sampled (and a random trace id)"
    assert not receiver.spans()


@pytest.mark.usefixtures("otel_environ")
async def test_delta_temporality(settings: Settings, fake_upstream: FakeUpstream, receiver: Receiver) -> None:
    delta = dataclasses.replace(settings, telemetry=dataclasses.replace(ON, delta_histograms=True))
    app = create_app(delta, transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as client:
        for _ in range(2):
            assert (await chat(client, x_fake_prompt_tokens="10")).status_code == 200
    usage, = receiver.metrics("gen_ai.client.token.usage")
    assert usage.histogram.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    point = next(p for p in usage.histogram.data_points if values(p.attributes)["gen_ai.token.type"] == "input")
    assert (point.count, point.sum, point.min, point.max) == (2, 20, 10, 10)
