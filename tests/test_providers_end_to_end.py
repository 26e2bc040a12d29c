"""End to end, several providers: the proxy as a real process with a routes file, a fake Anthropic,
Gemini and OpenRouter upstream on a real socket, and each provider's official SDK pointed at
`http://<proxy>/<route>`. What an SDK returns through the proxy is what it returns straight from
the fake, and each call's record holds the usage the fake reported, priced as the pricing file's
section for that provider (or at the upstream's own cost) says."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types

from conftest import free_port, serve_in_thread
from fake_providers import FakeProviders
from processes import Proxy

ANTHROPIC_KEY = "sk-ant-client-key-0001"
GEMINI_KEY = "AIzaClientKey0002"
OPENROUTER_KEY = "sk-or-v1-client-key-0003"
QUERY_KEY = "AIzaQueryStringSecret0004"
SERVER_KEY = "sk-server-team-key-0005"

ROUTES = """\
routes:
  anthropic:   {{upstream: "{url}", protocol: anthropic}}
  team:        {{upstream: "{url}", protocol: anthropic, provider: anthropic, api_key_env: TEAM_KEY}}
  gemini:      {{upstream: "{url}", protocol: gemini, provider: google}}
  gemini-team: {{upstream: "{url}", protocol: gemini, provider: google, api_key_env: TEAM_KEY}}
  openrouter:  {{upstream: "{url}/api/v1", protocol: openai, provider: openrouter}}
  gemini-down: {{upstream: "http://127.0.0.1:{closed}", protocol: gemini, provider: google}}
"""
# The top-level models price openai and azure only: the same names there, at other prices, must
# not price an Anthropic or Google record.
PRICING = """\
currency: USD
unit_tokens: 1000000
models:
  claude-sonnet-4-5: {input: 100.00, output: 100.00}
  gemini-2.5-flash: {input: 100.00, output: 100.00}
providers:
  anthropic:
    models:
      claude-sonnet-4-5: {input: 3.00, cached_input: 0.30, cache_write: 3.75, output: 15.00}
  google:
    models:
      gemini-2.5-flash: {input: 0.30, cached_input: 0.03, output: 2.50}
  openrouter:
    models:
      openai/gpt-4o-mini: {input: 0.15, output: 0.60}
"""
ANTHROPIC_USAGE = {"input_tokens": 1200, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 3000,
                   "output_tokens": 400, "output_tokens_details": {"thinking_tokens": 150}}
# (1200 x 3.00 + 3000 x 0.30 + 500 x 3.75 + 400 x 15.00) / 1e6
ANTHROPIC_RECORD = {"provider": "anthropic", "endpoint": "messages", "model": "claude-sonnet-4-5-20250929",
                    "input_tokens": 4700, "cached_input_tokens": 3000, "output_tokens": 400, "reasoning_tokens": 150,
                    "cost": Decimal("0.012375"), "price_source": "pricing_file", "usage_source": "upstream",
                    "status_code": 200}
GEMINI_USAGE = {"promptTokenCount": 2000, "cachedContentTokenCount": 1500, "candidatesTokenCount": 300,
                "thoughtsTokenCount": 200, "toolUsePromptTokenCount": 50, "totalTokenCount": 2550}
# ((2050 - 1500) x 0.30 + 1500 x 0.03 + 500 x 2.50) / 1e6
GEMINI_RECORD = {"provider": "google", "route": "gemini", "endpoint": "generate_content", "model": "gemini-2.5-flash",
                 "input_tokens": 2050, "cached_input_tokens": 1500, "output_tokens": 500, "reasoning_tokens": 200,
                 "cost": Decimal("0.00146"), "price_source": "pricing_file", "usage_source": "upstream",
                 "status_code": 200}
OPENROUTER_USAGE = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200, "cost": 0.00612,
                    "is_byok": False, "prompt_tokens_details": {"cached_tokens": 100},
                    "completion_tokens_details": {"reasoning_tokens": 50}}
OPENROUTER_RECORD = {"provider": "openrouter", "route": "openrouter", "endpoint": "chat/completions",
                     "input_tokens": 1000, "cached_input_tokens": 100, "output_tokens": 200, "reasoning_tokens": 50,
                     "usage_source": "upstream", "status_code": 200}


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeProviders, str]]:
    providers = FakeProviders()
    with serve_in_thread(providers.app) as url:
        yield providers, url


@pytest.fixture(scope="module")
def proxy(fake: tuple[FakeProviders, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("providers")
    (workdir / "routes.yaml").write_text(ROUTES.format(url=fake[1], closed=free_port()))
    (workdir / "providers-pricing.yaml").write_text(PRICING)
    running = Proxy(workdir, fake[1], environ={"TOKENMETER_ROUTES": str(workdir / "routes.yaml"),
                                               "TOKENMETER_PRICING": str(workdir / "providers-pricing.yaml"),
                                               "TEAM_KEY": SERVER_KEY})
    yield running
    running.stop()


def steer(session: str, usage: dict[str, Any], **more: str) -> dict[str, str]:
    return {"X-Session-Id": session, "x-fake-usage": json.dumps(usage), **more}


def check(record: dict[str, Any], expected: dict[str, Any]) -> None:
    """The record holds `expected` (costs compared as decimals)."""
    got = {name: record[name] for name in expected}
    if "cost" in got and got["cost"] is not None:
        got["cost"] = Decimal(str(got["cost"]))
    assert got == expected


def same(through: Any, direct: Any) -> None:
    """An SDK object, or a list of them, equal field for field (the HTTP response left out)."""
    def dump(value: Any) -> Any:
        return value.model_dump(exclude={"sdk_http_response"}) if hasattr(value, "model_dump") else value

    if isinstance(direct, list):
        assert [dump(item) for item in through] == [dump(item) for item in direct]
    else:
        assert dump(through) == dump(direct)


# Anthropic

def anthropic_clients(proxy: Proxy, fake_url: str, route: str = "anthropic") -> tuple[anthropic.Anthropic, ...]:
    return (anthropic.Anthropic(base_url=f"{proxy.url}/{route}", api_key=ANTHROPIC_KEY, max_retries=0),
            anthropic.Anthropic(base_url=fake_url, api_key=ANTHROPIC_KEY, max_retries=0))


def credential(headers: dict[str, str]) -> str:
    """The key an Anthropic request carries (the SDK sends `x-api-key` or `Authorization: Bearer`)."""
    return headers.get("x-api-key") or headers["authorization"].removeprefix("Bearer ")


def messages_request(session: str) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5-20250929", "max_tokens": 2048,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "Say hello."}],
            "extra_headers": steer(session, ANTHROPIC_USAGE)}


def test_anthropic_messages(proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    through, direct = anthropic_clients(proxy, fake[1])
    message = through.messages.create(**messages_request("anthropic-json"))
    same(message, direct.messages.create(**messages_request("anthropic-json")))
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.usage.cache_read_input_tokens == 3000 and message.usage.output_tokens == 400
    [record] = proxy.session("anthropic-json")["records"]
    check(record, ANTHROPIC_RECORD | {"route": "anthropic", "streamed": False, "api_key_id": key_id(ANTHROPIC_KEY)})
    proxied, straight = fake[0].received("anthropic-json")
    assert proxied["path"] == "/v1/messages" and proxied["body"] == straight["body"]
    assert credential(proxied["headers"]) == ANTHROPIC_KEY


def test_anthropic_streams(proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    through, direct = anthropic_clients(proxy, fake[1])
    results = []
    for client in (through, direct):
        with client.messages.stream(**messages_request("anthropic-sse")) as stream:
            results.append((list(stream), stream.get_final_message()))
    (events, final), (direct_events, direct_final) = results
    same(events, direct_events)
    same(final, direct_final)
    assert final.usage.input_tokens == 1200 and final.usage.output_tokens == 400
    text = final.content[-1]
    assert text.type == "text" and text.text == "Hello from the fake provider."
    raw = list(through.messages.create(**messages_request("anthropic-sse"), stream=True))
    same(raw, list(direct.messages.create(**messages_request("anthropic-sse"), stream=True)))
    assert [event.type for event in raw][:3] == ["message_start", "content_block_start", "content_block_delta"]
    records = proxy.session("anthropic-sse", records=2)["records"]
    assert len(records) == 2
    for record in records:
        check(record, ANTHROPIC_RECORD | {"route": "anthropic", "streamed": True, "api_key_id": key_id(ANTHROPIC_KEY)})


def test_a_route_with_api_key_env_sends_the_server_key_and_records_the_clients(
        proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    through, direct = anthropic_clients(proxy, fake[1], route="team")
    same(through.messages.create(**messages_request("team")), direct.messages.create(**messages_request("team")))
    headers = fake[0].received("team")[0]["headers"]
    assert credential(headers) == SERVER_KEY and ANTHROPIC_KEY not in json.dumps(headers)
    [record] = proxy.session("team")["records"]
    check(record, ANTHROPIC_RECORD | {"route": "team", "streamed": False, "api_key_id": key_id(ANTHROPIC_KEY)})

    response = httpx.post(f"{proxy.url}/gemini-team/v1beta/models/gemini-2.5-flash:generateContent",
                          params={"key": QUERY_KEY, "prettyPrint": "false"}, headers=steer("team-query", GEMINI_USAGE),
                          json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
    assert response.status_code == 200, response.text
    [seen] = fake[0].received("team-query")
    assert seen["query"] == "prettyPrint=false" and seen["headers"]["x-goog-api-key"] == SERVER_KEY
    [record] = proxy.session("team-query")["records"]
    check(record, GEMINI_RECORD | {"route": "gemini-team", "streamed": False, "api_key_id": key_id(QUERY_KEY)})


# Gemini

def gemini_clients(proxy: Proxy, fake_url: str, headers: dict[str, str]) -> tuple[genai.Client, genai.Client]:
    return tuple(genai.Client(api_key=GEMINI_KEY, http_options=types.HttpOptions(base_url=base, headers=headers))
                 for base in (f"{proxy.url}/gemini", fake_url))  # type: ignore[return-value]


def test_gemini_generate_content(proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    # The record names the model the response reports (modelVersion), not the one in the path.
    headers = steer("gemini-json", GEMINI_USAGE, **{"x-fake-model-version": "gemini-2.5-flash-preview-09-2025"})
    through, direct = gemini_clients(proxy, fake[1], headers)
    response = through.models.generate_content(model="gemini-flash-latest", contents="Say hello.")
    same(response, direct.models.generate_content(model="gemini-flash-latest", contents="Say hello."))
    assert response.text == "Hello from the fake provider."
    assert response.usage_metadata is not None and response.usage_metadata.thoughts_token_count == 200
    [record] = proxy.session("gemini-json")["records"]
    check(record, GEMINI_RECORD | {"model": "gemini-2.5-flash-preview-09-2025", "streamed": False,
                                   "api_key_id": key_id(GEMINI_KEY)})
    proxied, straight = fake[0].received("gemini-json")
    assert proxied["path"].endswith("/models/gemini-flash-latest:generateContent")
    assert proxied["body"] == straight["body"] and proxied["headers"]["x-goog-api-key"] == GEMINI_KEY


def test_gemini_generate_content_stream(proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    through, direct = gemini_clients(proxy, fake[1], steer("gemini-sse", GEMINI_USAGE))
    chunks = list(through.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hello."))
    same(chunks, list(direct.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hello.")))
    assert "".join(chunk.text or "" for chunk in chunks) == "Hello from the fake provider."
    assert fake[0].received("gemini-sse")[0]["query"] == "alt=sse"
    [record] = proxy.session("gemini-sse")["records"]
    check(record, GEMINI_RECORD | {"streamed": True, "api_key_id": key_id(GEMINI_KEY)})


def test_gemini_stream_as_a_json_array(proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    headers = {"x-goog-api-key": GEMINI_KEY, **steer("gemini-array", GEMINI_USAGE)}
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    through = httpx.post(f"{proxy.url}/gemini{path}", headers=headers, json=body)
    direct = httpx.post(f"{fake[1]}{path}", headers=headers, json=body)
    assert through.status_code == 200 and through.content == direct.content
    assert [chunk["usageMetadata"]["candidatesTokenCount"] for chunk in through.json()] == [1, 2, 3, 300]
    [record] = proxy.session("gemini-array")["records"]
    check(record, GEMINI_RECORD | {"streamed": True, "api_key_id": key_id(GEMINI_KEY)})


def test_a_key_in_the_query_string_is_forwarded_but_never_logged_or_stored(
        proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    for method in ("generateContent", "streamGenerateContent"):
        response = httpx.post(f"{proxy.url}/gemini/v1beta/models/gemini-2.5-flash:{method}?key={QUERY_KEY}",
                              headers=steer("query-key", GEMINI_USAGE),
                              json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
        assert response.status_code == 200, response.text
    assert [seen["query"] for seen in fake[0].received("query-key")] == [f"key={QUERY_KEY}"] * 2
    # An upstream that cannot be reached is logged: still without the key.
    response = httpx.post(f"{proxy.url}/gemini-down/v1beta/models/gemini-2.5-flash:generateContent?key={QUERY_KEY}",
                          headers={"X-Session-Id": "query-key"}, json={"contents": []})
    assert response.status_code == 502 and QUERY_KEY not in response.text
    records = proxy.session("query-key", records=3)["records"]
    assert sorted((record["status_code"], record["api_key_id"]) for record in records) == [
        (200, key_id(QUERY_KEY)), (200, key_id(QUERY_KEY)), (502, key_id(QUERY_KEY))]
    workdir = proxy.log.parent
    leaks = [path.name for path in workdir.rglob("*") if path.is_file() and QUERY_KEY.encode() in path.read_bytes()]
    assert leaks == [], f"the query-string key was written to {leaks}"
    assert proxy.log.exists() and proxy.database.exists()


# OpenRouter (protocol openai)

def openrouter_clients(proxy: Proxy, fake_url: str) -> tuple[openai.OpenAI, openai.OpenAI]:
    return (openai.OpenAI(base_url=f"{proxy.url}/openrouter", api_key=OPENROUTER_KEY, max_retries=0),
            openai.OpenAI(base_url=f"{fake_url}/api/v1", api_key=OPENROUTER_KEY, max_retries=0))


def chat_request(session: str, model: str = "anthropic/claude-sonnet-4.5", **more: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
            "extra_headers": steer(session, OPENROUTER_USAGE), **more}


def test_openrouter_chat_completions(proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    through, direct = openrouter_clients(proxy, fake[1])
    completion = through.chat.completions.create(**chat_request("openrouter-json"))
    same(completion, direct.chat.completions.create(**chat_request("openrouter-json")))
    assert completion.usage is not None and completion.usage.model_extra == {"cost": 0.00612, "is_byok": False}

    chunks = list(through.chat.completions.create(**chat_request("openrouter-json", stream=True)))
    same(chunks, list(direct.chat.completions.create(**chat_request("openrouter-json", stream=True))))
    assert chunks[-1].choices[0].delta.content == " provider." and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 200

    # The model is not in the pricing file: the cost is what OpenRouter reported.
    records = sorted(proxy.session("openrouter-json", records=2)["records"], key=lambda record: record["streamed"])
    for record, streamed in zip(records, (False, True), strict=True):
        check(record, OPENROUTER_RECORD | {"api_key_id": key_id(OPENROUTER_KEY), "streamed": streamed,
                                           "model": "anthropic/claude-sonnet-4.5", "cost": Decimal("0.00612"),
                                           "price_source": "upstream"})
    # No stream_options injected: the fake received, through the proxy, the body the SDK sent it directly.
    proxied_json, direct_json, proxied_stream, direct_stream = fake[0].received("openrouter-json")
    assert proxied_json["body"] == direct_json["body"] and proxied_stream["body"] == direct_stream["body"]
    assert proxied_stream["path"] == "/api/v1/chat/completions" and b"stream_options" not in proxied_stream["body"]


def test_openrouter_model_in_the_pricing_file_is_priced_from_it(
        proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    through, _ = openrouter_clients(proxy, fake[1])
    list(through.chat.completions.create(**chat_request("openrouter-priced", model="openai/gpt-4o-mini", stream=True)))
    [record] = proxy.session("openrouter-priced")["records"]
    # (1000 x 0.15 + 200 x 0.60) / 1e6: the file's price wins over the upstream's own cost
    check(record, OPENROUTER_RECORD | {"api_key_id": key_id(OPENROUTER_KEY), "streamed": True,
                                       "model": "openai/gpt-4o-mini", "cost": Decimal("0.00027"),
                                       "price_source": "pricing_file"})


def test_a_path_under_no_route_is_not_forwarded(proxy: Proxy, fake: tuple[FakeProviders, str]) -> None:
    before = len(fake[0].seen)
    response = httpx.post(f"{proxy.url}/nowhere/v1/messages", json={})
    assert response.status_code == 404 and "error" in response.json() and len(fake[0].seen) == before
