"""`TokenMeterMiddleware` in front of an ASGI app that serves the OpenAI API itself (no proxy),
as a self-hosted model server would use it."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import httpx
import pytest

from conftest import PRICING
from fake_upstream import FakeUpstream
from tokenmeter_proxy.metering import CLIENT_CLOSED_REQUEST, Meter
from tokenmeter_proxy.middleware import TokenMeterMiddleware
from tokenmeter_proxy.pricing import parse_pricing
from tokenmeter_proxy.types import UsageRecord

pytestmark = pytest.mark.anyio
PRICES = parse_pricing(PRICING)
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


class ListSink:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def submit(self, record: UsageRecord) -> None:
        self.records.append(record)


def metered(app: object, sink: ListSink) -> TokenMeterMiddleware:
    meter = Meter(prices=lambda: PRICES, sink=sink, clock=lambda: NOW)
    return TokenMeterMiddleware(app, meter=meter)  # type: ignore[arg-type]


async def test_the_middleware_meters_an_in_process_model_server() -> None:
    sink = ListSink()
    model_server = FakeUpstream().app  # serves /v1/chat/completions itself, no upstream
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=metered(model_server, sink)),
                                 base_url="http://model.local") as client:
        response = await client.post("/v1/chat/completions", headers={
            "x-session-id": "local-1", "x-fake-prompt-tokens": "1000", "x-fake-completion-tokens": "500",
        }, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        streamed = await client.post("/v1/chat/completions", headers={"x-fake-prompt-tokens": "20"}, json={
            "model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        listed = await client.get("/v1/models")

    assert response.json()["choices"][0]["message"]["content"] == "hello from fake"
    assert response.headers["x-tokenmeter-cost"] == "0.00045"
    assert "data: [DONE]" in streamed.text and listed.headers["x-tokenmeter-request-id"]
    plain, stream = sink.records
    assert (plain.session_id, plain.usage.input_tokens, plain.cost) == ("local-1", 1000, Decimal("0.00045"))
    assert plain.created_at == NOW and plain.usage_source == "upstream" and not plain.streamed
    assert (stream.usage.input_tokens, stream.streamed) == (20, True)


async def test_a_response_that_never_ends_is_still_recorded() -> None:
    """The wrapped app stops mid-stream (as the forwarder does when the client leaves)."""
    sink = ListSink()

    async def stops_mid_stream(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "more_body": True,  # type: ignore[operator]
                    "body": b'data: {"choices":[{"delta":{"content":"partial answer"}}]}\n\n'})

    body = b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await metered(stops_mid_stream, sink)(scope, receive, send)
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    [record] = sink.records
    assert record.status_code == CLIENT_CLOSED_REQUEST and record.usage_source == "estimated"
    assert record.usage.output_tokens == 2 and record.usage.input_tokens > 0


async def test_an_app_that_fails_before_answering_is_recorded_as_500() -> None:
    sink = ListSink()

    async def broken(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=metered(broken, sink)),
                                     base_url="http://model.local") as client:
            await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    [record] = sink.records
    assert record.status_code == 500 and record.usage.input_tokens == 0


async def test_non_http_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        seen.append(scope["type"])

    await metered(app, ListSink())({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


async def test_a_metering_fault_never_reaches_the_client(caplog: pytest.LogCaptureFixture) -> None:
    def broken_prices() -> object:
        raise RuntimeError("pricing exploded")

    meter = Meter(prices=broken_prices, sink=ListSink(), clock=lambda: NOW)  # type: ignore[arg-type]
    app = TokenMeterMiddleware(FakeUpstream().app, meter=meter)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model.local") as client:
        response = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
    assert response.status_code == 200 and response.json()["choices"]
    assert "x-tokenmeter-cost" not in response.headers
    assert "metering request" in caplog.text and "pricing exploded" in caplog.text


async def test_a_client_that_leaves_mid_upload_sends_nothing_upstream() -> None:
    sink = ListSink()
    called: list[dict] = []  # type: ignore[type-arg]

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        called.append(scope)

    messages = iter([{"type": "http.request", "body": b'{"model": "gpt-4o", "messages": [{"content": "hal',
                      "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict:  # type: ignore[type-arg]
        return next(messages)

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        raise AssertionError("nothing should be sent to a client that left")

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await metered(app, sink)(scope, receive, send)
    assert called == [] and sink.records == []


async def test_tags_reach_the_record_and_invalid_ones_are_dropped_with_a_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    sink = ListSink()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=metered(FakeUpstream().app, sink)),
                                 base_url="http://model.local") as client:
        with caplog.at_level(logging.WARNING):
            response = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []},
                                         headers={"x-tokenmeter-tags": "feature=summarize, Bad=x"})
    assert response.status_code == 200
    [record] = sink.records
    assert record.tags == {"feature": "summarize"} and "'Bad=x' has a name" in caplog.text
