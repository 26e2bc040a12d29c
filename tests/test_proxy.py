"""The metering proxy in-process: forwarding, metering and recording against a fake upstream."""

from __future__ import annotations

import asyncio
import gc
import hashlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import ADMIN_TOKEN, admin_headers, proxy_client
from fake_upstream import FakeUpstream
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.proxy import ForwardingApp
from tokenmeter_proxy.routes import builtin_route
from tokenmeter_proxy.tokens import count_text

pytestmark = pytest.mark.anyio
KEY = "sk-test-secret-key-123"
AUTH = {"authorization": f"Bearer {KEY}"}


async def records(proxy: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    """Every record stored so far, oldest first (after the writer has caught up)."""
    await proxy.app.writer.drain()  # type: ignore[attr-defined]
    response = await proxy.get("/api/usage/records", params={"limit": "1000", **query}, headers=admin_headers())
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["records"]))


async def test_a_chat_completion_is_forwarded_unchanged_and_metered(proxy: httpx.AsyncClient,
                                                                    fake_upstream: FakeUpstream) -> None:
    response = await proxy.post("/v1/chat/completions", headers={
        **AUTH, "x-session-id": "s-1", "x-user-id": "u-1", "x-fake-prompt-tokens": "1000",
        "x-fake-completion-tokens": "500", "x-fake-cached-tokens": "200",
    }, json={"model": "gpt-4o-2024-08-06", "messages": [{"role": "user", "content": "hi"}]})

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello from fake"
    assert response.headers["x-fake-upstream"] == "1"
    assert response.headers["x-tokenmeter-cost"] == "0.00725"
    assert response.headers["x-tokenmeter-request-id"]
    assert fake_upstream.seen[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    [record] = await records(proxy)
    assert record["id"] == response.headers["x-tokenmeter-request-id"]
    assert (record["session_id"], record["user_id"]) == ("s-1", "u-1")
    assert record["api_key_id"] == hashlib.sha256(KEY.encode()).hexdigest()[:16]
    assert (record["input_tokens"], record["cached_input_tokens"], record["output_tokens"]) == (1000, 200, 500)
    assert record["cost"] == pytest.approx(0.00725, abs=1e-12)
    assert record["usage_source"] == "upstream" and record["streamed"] is False
    assert record["model"] == "gpt-4o-2024-08-06" and record["endpoint"] == "chat/completions"
    assert record["status_code"] == 200 and record["price_version"]


async def test_the_user_comes_from_the_body_when_no_header_names_one(proxy: httpx.AsyncClient) -> None:
    await proxy.post("/v1/chat/completions", headers=AUTH,
                     json={"model": "gpt-4o", "user": "body-user", "messages": []})
    [record] = await records(proxy)
    assert record["user_id"] == "body-user" and record["session_id"] is None


async def test_stream_usage_is_requested_upstream_and_hidden_from_the_client(
        proxy: httpx.AsyncClient, fake_upstream: FakeUpstream) -> None:
    response = await proxy.post("/v1/chat/completions", headers={
        **AUTH, "x-fake-prompt-tokens": "300", "x-fake-completion-tokens": "40", "x-fake-chunks": "6",
    }, json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "stream"}]})

    assert fake_upstream.seen[-1]["json"]["stream_options"] == {"include_usage": True}
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    assert len(chunks) == 7 and all(chunk["choices"] for chunk in chunks)
    [record] = await records(proxy)
    assert (record["input_tokens"], record["output_tokens"], record["streamed"]) == (300, 40, True)
    assert Decimal(str(record["cost"])) == Decimal("0.000069")


async def test_a_client_that_asked_for_stream_usage_gets_its_usage_chunk(proxy: httpx.AsyncClient) -> None:
    response = await proxy.post("/v1/chat/completions", headers={**AUTH, "x-fake-prompt-tokens": "50"}, json={
        "model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "messages": []})
    usage_chunks = [line for line in response.text.split("\n") if '"usage": {' in line]
    assert len(usage_chunks) == 1
    [record] = await records(proxy)
    assert record["input_tokens"] == 50


async def test_embeddings_completions_and_responses_are_metered(proxy: httpx.AsyncClient) -> None:
    steer = {**AUTH, "x-fake-prompt-tokens": "120", "x-fake-completion-tokens": "30",
             "x-fake-reasoning-tokens": "10"}
    await proxy.post("/v1/embeddings", headers=steer, json={"model": "text-embedding-3-small", "input": ["a", "b"]})
    await proxy.post("/v1/completions", headers=steer, json={"model": "gpt-4o", "prompt": "Once"})
    await proxy.post("/v1/responses", headers=steer, json={"model": "gpt-4o", "input": "hello"})
    await proxy.post("/v1/responses", headers=steer, json={"model": "gpt-4o", "input": "hello", "stream": True})
    embeddings, completion, response, streamed = await records(proxy)
    assert (embeddings["endpoint"], embeddings["input_tokens"], embeddings["output_tokens"]) == ("embeddings", 120, 0)
    assert (completion["endpoint"], completion["output_tokens"]) == ("completions", 30)
    assert (response["endpoint"], response["reasoning_tokens"], response["streamed"]) == ("responses", 10, False)
    assert (streamed["input_tokens"], streamed["output_tokens"], streamed["streamed"]) == (120, 30, True)


async def test_without_upstream_usage_tokens_are_estimated(proxy: httpx.AsyncClient) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    await proxy.post("/v1/chat/completions", headers={**AUTH, "x-fake-no-usage": "1"},
                     json={"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
    await proxy.post("/v1/chat/completions", headers={**AUTH, "x-fake-no-usage": "1"},
                     json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": text}]})
    plain, streamed = await records(proxy)
    assert plain["usage_source"] == streamed["usage_source"] == "estimated"
    # the text, 3 tokens of message framing, 1 for the role "user", 3 priming the reply
    assert plain["input_tokens"] == streamed["input_tokens"] == count_text("gpt-4o", text) + 3 + 1 + 3
    assert plain["output_tokens"] == count_text("gpt-4o", "hello from fake")
    assert streamed["output_tokens"] == count_text("gpt-4o", "tok0 tok1 tok2 ")


async def test_upstream_errors_come_back_unchanged_and_are_recorded(proxy: httpx.AsyncClient) -> None:
    response = await proxy.post("/v1/chat/completions", headers={**AUTH, "x-fake-status": "503"},
                                json={"model": "gpt-4o", "messages": []})
    assert response.status_code == 503 and response.json()["error"]["message"] == "fake failure"
    bad = await proxy.post("/v1/chat/completions", headers=AUTH, content=b"{this is not json")
    assert bad.status_code == 400 and "parse the JSON" in bad.json()["error"]["message"]
    failed, unparsable = await records(proxy)
    assert (failed["status_code"], failed["input_tokens"], failed["cost"]) == (503, 0, 0)
    assert (unparsable["status_code"], unparsable["model"]) == (400, None)


async def test_unmetered_paths_are_forwarded_with_path_query_and_method(proxy: httpx.AsyncClient,
                                                                        fake_upstream: FakeUpstream) -> None:
    response = await proxy.delete("/v1/echo/files/file%2Fabc?purpose=a%20b&x=1", headers={
        **AUTH, "connection": "keep-alive, x-private", "x-private": "hop", "x-custom": "kept"})
    echoed = response.json()
    assert response.status_code == 200 and echoed["method"] == "DELETE"
    assert echoed["path"] == "/v1/echo/files/file/abc" and echoed["query"] == "purpose=a%20b&x=1"
    assert echoed["headers"]["x-custom"] == "kept" and "x-private" not in echoed["headers"]
    assert "x-hop" not in response.headers and response.headers["x-tokenmeter-request-id"]
    assert await records(proxy) == []


async def test_upstream_cookies_reach_the_client_but_are_never_replayed(proxy: httpx.AsyncClient,
                                                                        fake_upstream: FakeUpstream) -> None:
    first = await proxy.get("/v1/models", headers=AUTH)
    assert "upstream_session=abc" in first.headers["set-cookie"]
    proxy.cookies.clear()
    await proxy.get("/v1/models", headers=AUTH)
    assert "cookie" not in fake_upstream.seen[-1]["headers"]


async def test_the_upstream_key_replaces_the_clients_when_configured(settings: Settings,
                                                                     fake_upstream: FakeUpstream) -> None:
    app = create_app(Settings(**{**settings.__dict__, "upstream_api_key": "sk-ours"}),
                     transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as client:
        await client.post("/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": []})
        await app.writer.drain()
    assert fake_upstream.seen[-1]["headers"]["authorization"] == "Bearer sk-ours"


async def test_a_body_over_the_limit_is_refused_and_not_forwarded(settings: Settings,
                                                                  fake_upstream: FakeUpstream) -> None:
    app = create_app(Settings(**{**settings.__dict__, "max_body_bytes": 1000}),
                     transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as client:
        metered = await client.post("/v1/chat/completions", headers=AUTH, content=b"x" * 1001)
        unmetered = await client.post("/v1/echo/upload", headers=AUTH, content=b"x" * 1001)
    for response in (metered, unmetered):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
    assert fake_upstream.seen == []


@pytest.mark.parametrize(("failure", "status", "code"), [
    (httpx.ConnectError("connection refused"), 502, "upstream_unreachable"),
    (httpx.ReadTimeout("read timed out"), 504, "upstream_timeout"),
])
async def test_an_unreachable_upstream_gets_an_openai_style_error(settings: Settings, failure: Exception,
                                                                  status: int, code: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    app = create_app(settings, transport=httpx.MockTransport(fail))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        response = await client.post("/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": []})
        [record] = await records(client)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert (record["status_code"], record["input_tokens"], record["usage_source"]) == (status, 0, "upstream")


async def test_no_raw_key_or_prompt_is_ever_stored(proxy: httpx.AsyncClient, settings: Settings) -> None:
    secret_prompt = "my very private prompt about the merger"
    await proxy.post("/v1/chat/completions", headers={**AUTH, "x-fake-no-usage": "1"},
                     json={"model": "gpt-4o", "messages": [{"role": "user", "content": secret_prompt}]})
    await proxy.post("/v1/chat/completions", headers={**AUTH, "x-fake-no-usage": "1"},
                     json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": secret_prompt}]})
    assert len(await records(proxy)) == 2
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    stored = b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*"))
    assert KEY.encode() not in stored
    assert secret_prompt.encode() not in stored and b"hello from fake" not in stored


async def test_a_path_cannot_reach_another_host_or_escape_the_prefix(proxy: httpx.AsyncClient,
                                                                     fake_upstream: FakeUpstream) -> None:
    for raw_path in (b"/v1%2F@evil.example/steal", b"/v1/../../admin", b"/v1/%2e%2e/admin"):
        url = httpx.URL("http://proxy.test").copy_with(raw_path=raw_path)
        response = await proxy.send(proxy.build_request("GET", url, headers=AUTH))
        assert response.status_code == 404 and "error" in response.json(), raw_path
    assert fake_upstream.seen == []


async def test_any_model_name_is_stored_cleaned(database_url: str, pricing_file: Path,
                                                fake_upstream: FakeUpstream) -> None:
    settings = Settings(upstream="http://upstream.test/v1", database_url=database_url, pricing=pricing_file,
                        spool_dir=pricing_file.parent / "spool",
                        admin_token=ADMIN_TOKEN)
    app = create_app(settings, transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        for model in ("m" * 300, "bad\u0000model", "ordinary"):
            response = await client.post("/v1/embeddings", headers={**AUTH, "x-fake-no-usage": "1"},
                                         json={"model": model, "input": "x"})
            assert response.status_code == 200
        stored = [record["model"] for record in await records(client)]
    assert stored == ["m" * 256, "badmodel", "ordinary"]


class _CutStream(httpx.AsyncByteStream):
    """Two SSE events, then (after `pause` seconds) a broken connection."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b'data: {"model": "gpt-4o", "choices": [{"delta": {"content": "Hello there"}}]}\n\n'
        await asyncio.sleep(self.pause)
        yield b'data: {"model": "gpt-4o", "choices": [{"delta": {"content": " friend"}}]}\n\n'
        raise httpx.ReadError("connection reset by peer")


def _streaming_upstream(pause: float = 0.0) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_CutStream(pause)))


@pytest.mark.parametrize(("total_timeout", "pause", "recorded"), [(0.0, 0.0, 502), (0.3, 2.0, 504)])
async def test_a_stream_cut_off_ends_cleanly_and_is_recorded_as_the_failure(
        settings: Settings, total_timeout: float, pause: float, recorded: int) -> None:
    app = create_app(Settings(**{**settings.__dict__, "upstream_total_timeout": total_timeout}),
                     transport=_streaming_upstream(pause))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        response = await client.post("/v1/chat/completions", headers=AUTH, json={
            "model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        [record] = await records(client)
    assert response.status_code == 200 and "Hello there" in response.text
    assert record["status_code"] == recorded and record["streamed"] is True
    assert record["usage_source"] == "estimated" and record["output_tokens"] >= 2


async def test_a_total_timeout_before_the_first_byte_is_a_504(settings: Settings) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(2)
        return httpx.Response(200, json={})

    app = create_app(Settings(**{**settings.__dict__, "upstream_total_timeout": 0.2}),
                     transport=httpx.MockTransport(slow))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        response = await client.post("/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": []})
        [record] = await records(client)
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert record["status_code"] == 504 and record["input_tokens"] == 0


async def test_user_ids_can_be_stored_pseudonymised(settings: Settings, fake_upstream: FakeUpstream) -> None:
    app = create_app(Settings(**{**settings.__dict__, "user_id_hash_secret": "pepper"}),
                     transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        for user in ("alice@example.com", "alice@example.com", "bob"):
            await client.post("/v1/chat/completions", headers={**AUTH, "x-user-id": user},
                              json={"model": "gpt-4o", "messages": []})
        stored = {record["user_id"] for record in await records(client)}
        alice = (await client.get("/api/usage/stats", params={"user_id": "alice@example.com"},
                                  headers=admin_headers())).json()
    assert len(stored) == 2 and all(user.startswith("u_") and "alice" not in user for user in stored)
    assert alice["totals"]["requests"] == 2  # the admin asks by the real id; the proxy hashes it the same way
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    assert b"alice@example.com" not in b"".join(path.read_bytes() for path in database.parent.glob("usage.db*"))


class _OneChunk:
    """An `Upstream` that answers every request with one JSON chunk."""

    def __init__(self) -> None:
        self.status = 200
        self.headers = [(b"content-type", b"application/json")]

    async def send(self, method: str, target: bytes, headers: Any, body: Any) -> _OneChunk:
        return self

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"{}"

    async def aclose(self) -> None:
        pass


async def test_a_finished_request_leaves_no_reference_cycles() -> None:
    """Collecting cycles pauses every stream; a request used to leave ~35 objects in them."""
    one = _OneChunk()
    app = ForwardingApp(lambda route: one, route=builtin_route("http://upstream.test/v1", api_key=None))  # type: ignore[arg-type,return-value]

    async def one_request() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        done = asyncio.Event()
        messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await done.wait()  # as ASGI servers do: after the response, a disconnect
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
        await app(scope, receive, send)
        return sent

    await one_request()
    gc.collect()
    for _ in range(10):
        sent = await one_request()
        assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    for _ in range(3):
        await asyncio.sleep(0)  # the watchers see the disconnect and end
    assert gc.collect() < 20  # it was ~160


class _CutBody(httpx.AsyncByteStream):
    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b'{"id": "x", "object": "chat.completion", "choices": ['
        raise httpx.ReadError("connection reset by peer")


async def test_a_non_streaming_answer_cut_off_becomes_a_502_not_half_a_body(settings: Settings) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "application/json", "content-length": "500"}, stream=_CutBody()))
    app = create_app(settings, transport=transport)
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        response = await client.post("/v1/chat/completions", headers=AUTH,
                                     json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        [record] = await records(client)
    assert response.status_code == 502 and response.json()["error"]["type"] == "upstream_error"
    assert record["status_code"] == 502 and record["usage_source"] == "estimated"
