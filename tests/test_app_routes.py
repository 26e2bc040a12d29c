"""The proxy in-process with routes: each path reaches its route's upstream (or none: a 404),
credentials are hashed and replaced per protocol, bodies a protocol cannot parse still pass, a
stream cut mid-event keeps what its upstream already counted, and a query key is never logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import admin_headers, proxy_client
from fake_providers import FakeProviders
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.providers.base import key_id

ROUTES = """\
routes:
  anthropic:  {upstream: http://anthropic.test, protocol: anthropic}
  gemini:     {upstream: http://gemini.test, protocol: gemini, provider: google}
  openrouter: {upstream: http://openrouter.test/api/v1, protocol: openai, provider: openrouter}
  team:       {upstream: http://anthropic.test, protocol: anthropic, provider: anthropic, api_key_env: TEAM_KEY}
  down:       {upstream: http://down.test, protocol: gemini, provider: google}
"""
pytestmark = pytest.mark.anyio
CLAUDE = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def routed(settings: Settings, tmp_path: Path) -> Settings:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    return Settings(**{**settings.__dict__, "routes": tmp_path / "routes.yaml"})


def providers_transport(fake: FakeProviders) -> httpx.AsyncBaseTransport:
    """The fake providers behind every route; `down.test` refuses every connection."""
    inner = httpx.ASGITransport(app=fake.app, raise_app_exceptions=False)

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down.test":
            raise httpx.ConnectError("connection refused")
        return await inner.handle_async_request(request)

    return httpx.MockTransport(handle)


async def records(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    await client.app.writer.drain()  # type: ignore[attr-defined]
    response = await client.get("/api/usage/records", params={"limit": "1000"}, headers=admin_headers())
    return list(reversed(response.json()["records"]))


async def test_each_path_reaches_its_routes_upstream_and_no_other(routed: Settings) -> None:
    fake = FakeProviders()
    app = create_app(routed, transport=providers_transport(fake))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        models = await client.get("/openrouter/models?limit=5")
        chat = await client.post("/openrouter/chat/completions", json={"model": "openai/gpt-4o", "messages": []},
                                 headers={"authorization": "Bearer sk-or-1"})
        nowhere = [await client.post(path, json=CLAUDE) for path in ("/nowhere/v1/messages",
                                                                     "/anthropicx/v1/messages", "/v2/chat/completions")]
        [record] = await records(client)
    assert [seen["path"] for seen in fake.seen] == ["/api/v1/chat/completions"]  # GET /api/v1/models: not in the fake
    assert models.status_code == 404 and chat.status_code == 200
    for response in nowhere:
        assert response.status_code == 404 and response.json()["error"]["message"]
    assert (record["provider"], record["route"], record["api_key_id"]) == ("openrouter", "openrouter",
                                                                            key_id("sk-or-1"))


async def test_a_routes_own_key_replaces_the_clients_upstream_but_the_record_keeps_the_clients(
        routed: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_KEY", "sk-ant-server")
    fake = FakeProviders()
    app = create_app(routed, transport=providers_transport(fake))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        response = await client.post("/team/v1/messages", json=CLAUDE, headers={"x-api-key": "sk-ant-client"})
        [record] = await records(client)
    assert response.status_code == 200
    assert fake.seen[0]["headers"]["x-api-key"] == "sk-ant-server"
    assert (record["route"], record["api_key_id"]) == ("team", key_id("sk-ant-client"))


async def test_a_body_the_protocol_cannot_parse_is_forwarded_and_recorded_with_its_status(routed: Settings) -> None:
    fake = FakeProviders()
    app = create_app(routed, transport=providers_transport(fake))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        response = await client.post("/anthropic/v1/messages", content=b"{not json",
                                     headers={"x-api-key": "k", "content-type": "application/json"})
        [record] = await records(client)
    assert fake.seen[0]["body"] == b"{not json"
    assert record["status_code"] == response.status_code >= 400
    assert (record["endpoint"], record["provider"], record["input_tokens"]) == ("messages", "anthropic", 0)


async def test_a_key_in_the_query_is_hashed_and_never_logged(routed: Settings,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    key = "AIzaSyQueryKeyThatMustNotLeak"
    app = create_app(routed, transport=providers_transport(FakeProviders()))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        with caplog.at_level(logging.DEBUG):
            response = await client.post(f"/down/v1beta/models/gemini-2.5-flash:generateContent?key={key}",
                                         json={"contents": []})
            [record] = await records(client)
    assert response.status_code == 502 and key not in response.text
    ours = "\n".join(entry.getMessage() for entry in caplog.records if entry.name.startswith("tokenmeter_proxy"))
    assert key not in ours and "/v1beta/models/gemini-2.5-flash:generateContent" in ours
    assert (record["status_code"], record["api_key_id"], record["provider"]) == (502, key_id(key), "google")


class _CutMessages(httpx.AsyncByteStream):
    """An Anthropic stream that breaks off after its first text, before its final usage."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        usage = {"input_tokens": 40, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0,
                 "output_tokens": 1}
        yield b"event: message_start\ndata: " + orjson.dumps({"type": "message_start", "message": {
            "model": "claude-sonnet-4-5-20250929", "usage": usage}}) + b"\n\n"
        yield b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, ' \
              b'"delta": {"type": "text_delta", "text": "Hello there, how are you doing today"}}\n\nevent: cont'
        await asyncio.sleep(0)
        raise httpx.ReadError("connection reset by peer")


async def test_a_stream_cut_mid_event_keeps_the_input_its_upstream_counted_and_estimates_the_output(
        routed: Settings) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_CutMessages()))
    app = create_app(routed, transport=transport)
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        response = await client.post("/anthropic/v1/messages", json={**CLAUDE, "stream": True})
        [record] = await records(client)
    assert response.status_code == 200 and "Hello there" in response.text
    assert (record["status_code"], record["streamed"], record["usage_source"]) == (502, True, "estimated")
    assert (record["input_tokens"], record["cached_input_tokens"]) == (1040, 1000)
    assert record["output_tokens"] >= 7  # "Hello there, how are you doing today", counted


async def test_a_budget_counts_every_route_and_estimates_each_request_in_its_own_protocol(
        routed: Settings, pricing_file: Path) -> None:
    pricing_file.write_text(pricing_file.read_text() + """providers:
  anthropic:
    models:
      claude-sonnet-4-5: {input: 3.00, output: 15.00}
  google:
    models:
      gemini-2.5-flash: {input: 0.30, output: 2.50}
""")
    app = create_app(routed, transport=providers_transport(FakeProviders()))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        budget = {"scope": "session", "subject": "s-b", "period": "day", "max_cost": 0.0106}
        assert (await client.put("/api/budgets", json=budget, headers=admin_headers())).status_code == 201
        usage = {"input_tokens": 1000, "output_tokens": 500}  # 0.0105 at the anthropic section's prices
        spent = await client.post("/anthropic/v1/messages", json=CLAUDE, headers={
            "x-session-id": "s-b", "x-fake-usage": orjson.dumps(usage).decode()})
        await client.app.writer.drain()  # type: ignore[attr-defined]
        gemini = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 1000}}
        refused = await client.post("/gemini/v1beta/models/gemini-2.5-flash:generateContent", json=gemini,
                                    headers={"x-session-id": "s-b"})
        small = await client.post("/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                                  json={**gemini, "generationConfig": {"maxOutputTokens": 10}},
                                  headers={"x-session-id": "s-b"})
    assert spent.status_code == 200 and spent.headers["x-tokenmeter-budget-remaining"]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"  # 1000 x 2.50/M
    assert small.status_code == 200  # 10 x 2.50/M and its few input tokens still fit
