"""The OpenAI protocol: which requests are metered, what they say, and usage, model and generated
text read out of the responses, streamed or not."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from tokenmeter_proxy.providers.base import key_id
from tokenmeter_proxy.providers.openai import OpenAIProtocol, StreamReader, parse_usage, read_json_response
from tokenmeter_proxy.types import Usage

OPENAI = OpenAIProtocol()


def read_request(endpoint: str, raw: bytes, *, inject_usage: bool = True) -> object:
    return OPENAI.read_request(endpoint, "/v1/" + endpoint, raw, inject_usage=inject_usage)


@pytest.mark.parametrize(("method", "path", "endpoint"), [
    ("POST", "/v1/chat/completions", "chat/completions"),
    ("POST", "/v1/completions", "completions"),
    ("POST", "/v1/embeddings", "embeddings"),
    ("POST", "/v1/responses", "responses"),
    ("POST", "/azure/openai/deployments/gpt4o/chat/completions", "chat/completions"),
    ("GET", "/v1/chat/completions", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/responses/resp_123/cancel", None),
    ("POST", "/v1/files", None),
])
def test_metered_endpoints_are_known_by_method_and_path(method: str, path: str, endpoint: str | None) -> None:
    assert OPENAI.endpoint(method, path) == endpoint


def test_the_facts_metering_needs_are_read_from_the_body() -> None:
    facts = OPENAI.read_request("chat/completions", "/v1/chat/completions", orjson.dumps({
        "model": "gpt-4o", "stream": True, "user": "u-9", "max_completion_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }), inject_usage=True)
    assert (facts.model, facts.stream, facts.user, facts.max_output_tokens) == ("gpt-4o", True, "u-9", 64)
    assert facts.hide_usage


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'"text"', b"\xff\xfe", b'{"model": 5, "stream": "yes"}'])
def test_a_body_of_any_shape_never_raises(raw: bytes) -> None:
    facts = OPENAI.read_request("chat/completions", "/v1/chat/completions", raw, inject_usage=True)
    assert facts.model is None and not facts.stream and not facts.hide_usage


def test_usage_is_asked_for_only_where_the_client_did_not_and_the_route_lets_it() -> None:
    def hides(endpoint: str, body: object, *, inject_usage: bool = True) -> bool:
        return OPENAI.read_request(endpoint, "/v1/x", orjson.dumps(body), inject_usage=inject_usage).hide_usage

    assert hides("chat/completions", {"model": "m", "stream": True})
    assert not hides("chat/completions", {"model": "m", "stream": True, "stream_options": {"include_usage": True}})
    assert not hides("responses", {"model": "m", "stream": True})
    assert not hides("chat/completions", {"model": "m"})
    assert not hides("chat/completions", {"model": "m", "stream": True}, inject_usage=False)  # OpenRouter's routes


def test_usage_is_asked_for_by_splicing_the_clients_bytes() -> None:
    raw = b'  {"model": "gpt-4o",\n "stream": true, "messages": []}'
    facts = OPENAI.read_request("chat/completions", "/v1/chat/completions", raw, inject_usage=True)
    injected = OPENAI.upstream_body(raw, facts)
    assert injected.endswith(raw[raw.index(b"{") + 1 :])
    assert orjson.loads(injected) == {"stream_options": {"include_usage": True}, "model": "gpt-4o", "stream": True,
                                      "messages": []}


def test_existing_stream_options_are_kept_when_usage_is_asked_for() -> None:
    raw = orjson.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": False, "x": 1}})
    facts = OPENAI.read_request("chat/completions", "/v1/chat/completions", raw, inject_usage=True)
    assert orjson.loads(OPENAI.upstream_body(raw, facts))["stream_options"] == {"include_usage": True, "x": 1}


def test_the_credential_is_the_bearer_key_or_azures_api_key() -> None:
    key = "sk-secret-123"
    assert key_id(OPENAI.credential([(b"authorization", f"Bearer {key}".encode())], b"")) == key_id(key)
    assert OPENAI.credential([(b"api-key", b"azure-key")], b"") == "azure-key"
    assert OPENAI.credential([(b"authorization", b"Basic dXNlcjpwYXNz")], b"") is None
    assert OPENAI.credential([], b"") is None


def test_a_routes_own_key_replaces_the_clients_in_the_header_it_came_in() -> None:
    bearer = [(b"authorization", b"Bearer sk-client"), (b"x-session-id", b"s")]
    assert OPENAI.replace_credential(bearer, b"", "sk-ours", provider="openai")[0] == [
        (b"x-session-id", b"s"), (b"authorization", b"Bearer sk-ours")]
    azure = [(b"api-key", b"client")]
    assert OPENAI.replace_credential(azure, b"", "ours", provider="azure")[0] == [(b"api-key", b"ours")]
    assert OPENAI.replace_credential([], b"", "ours", provider="azure")[0] == [(b"api-key", b"ours")]
    assert OPENAI.replace_credential([], b"", "ours", provider="groq")[0] == [(b"authorization", b"Bearer ours")]


def test_the_cost_openrouter_reports_is_kept_exactly() -> None:
    body = orjson.dumps({"model": "anthropic/claude-sonnet-4.5", "choices": [{"message": {"content": "hi"}}],
                         "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "cost": 0.00123456}})
    reading = read_json_response("chat/completions", body)
    assert reading.reported_cost == Decimal("0.00123456")
    assert read_json_response("chat/completions", orjson.dumps({"usage": CHAT_USAGE})).reported_cost is None


def sse(payload: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


CHAT_USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
              "prompt_tokens_details": {"cached_tokens": 200},
              "completion_tokens_details": {"reasoning_tokens": 64}}
CHAT_STREAM = [
    sse({"model": "gpt-4o-2024-08-06", "choices": [{"delta": {"role": "assistant", "content": ""}}], "usage": None}),
    sse({"model": "gpt-4o-2024-08-06", "choices": [{"delta": {"content": "Hello"}}], "usage": None}),
    sse({"model": "gpt-4o-2024-08-06", "choices": [{"delta": {}, "finish_reason": "stop"}], "usage": None}),
    sse({"model": "gpt-4o-2024-08-06", "choices": [], "usage": CHAT_USAGE}),
    b"data: [DONE]\n\n",
]


def test_chat_usage_with_cached_and_reasoning_details() -> None:
    assert parse_usage(CHAT_USAGE) == Usage(input_tokens=1000, output_tokens=500, cached_input_tokens=200,
                                            reasoning_tokens=64)


def test_responses_usage_uses_its_own_names() -> None:
    usage = {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 20}, "output_tokens": 30,
             "output_tokens_details": {"reasoning_tokens": 10}}
    assert parse_usage(usage) == Usage(input_tokens=120, output_tokens=30, cached_input_tokens=20, reasoning_tokens=10)


def test_cache_writes_are_read_where_a_compatible_server_reports_them() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 1, "prompt_tokens_details": {"cache_write_tokens": 40}}
    assert parse_usage(usage) == Usage(input_tokens=100, output_tokens=1, cache_write_tokens=40)


@pytest.mark.parametrize("value", [None, "12", [], {}, {"prompt_tokens": "many"}, {"prompt_tokens": -1}])
def test_anything_that_is_not_a_usage_object_is_none(value: object) -> None:
    assert parse_usage(value) is None


def test_a_non_streaming_chat_response() -> None:
    body = orjson.dumps({"model": "gpt-4o-2024-08-06", "usage": CHAT_USAGE,
                         "choices": [{"message": {"content": "Hi there", "tool_calls": [
                             {"function": {"name": "lookup", "arguments": "{}"}}]}}]})
    reading = read_json_response("chat/completions", body)
    assert reading.usage == parse_usage(CHAT_USAGE)
    assert reading.model == "gpt-4o-2024-08-06"
    assert reading.output_text == "Hi therelookup{}"


def test_a_body_that_is_not_json_reads_as_nothing() -> None:
    reading = read_json_response("chat/completions", b"<html>502 Bad Gateway</html>")
    assert reading.usage is None and reading.model is None and reading.output_text == ""


def test_a_stream_is_forwarded_untouched_when_the_client_asked_for_usage() -> None:
    reader = StreamReader("chat/completions")
    forwarded = [reader.feed(chunk) for chunk in CHAT_STREAM]
    assert forwarded == CHAT_STREAM and reader.end() == b""
    assert reader.reading.usage == parse_usage(CHAT_USAGE)
    assert reader.reading.output_text == "Hello"


def test_the_usage_chunk_the_client_did_not_ask_for_is_left_out() -> None:
    reader = StreamReader("chat/completions", hide_usage_chunk=True)
    stream = b"".join(CHAT_STREAM)
    forwarded = b"".join(reader.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + reader.end()
    assert forwarded == b"".join(CHAT_STREAM[:3] + CHAT_STREAM[4:])
    assert reader.reading.usage == parse_usage(CHAT_USAGE)


def test_hiding_keeps_bytes_that_never_formed_a_whole_event() -> None:
    reader = StreamReader("chat/completions", hide_usage_chunk=True)
    assert reader.feed(CHAT_STREAM[0] + b"data: {\"trunc") == CHAT_STREAM[0]
    assert reader.end() == b"data: {\"trunc"


def test_a_stream_cut_off_keeps_the_text_seen_so_far_for_an_estimate() -> None:
    reader = StreamReader("chat/completions")
    for chunk in CHAT_STREAM[:2]:
        reader.feed(chunk)
    assert reader.reading.usage is None and reader.reading.output_text == "Hello"


def test_a_streamed_completion_reads_its_text() -> None:
    reader = StreamReader("completions")
    reader.feed(sse({"model": "gpt-3.5-turbo-instruct", "choices": [{"text": "Once upon"}]}))
    assert reader.reading.output_text == "Once upon" and reader.reading.model == "gpt-3.5-turbo-instruct"


def test_a_responses_stream_reports_usage_in_response_completed() -> None:
    usage = {"input_tokens": 100, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5}}
    reader = StreamReader("responses")
    for chunk in [
        sse({"type": "response.created", "response": {"model": "gpt-4o", "usage": None}}, "response.created"),
        sse({"type": "response.output_text.delta", "delta": "Hel"}, "response.output_text.delta"),
        sse({"type": "response.output_text.delta", "delta": "lo"}, "response.output_text.delta"),
    ]:
        reader.feed(chunk)
    assert reader.reading.output_text == "Hello" and reader.reading.usage is None
    reader.feed(sse({"type": "response.completed", "response": {
        "model": "gpt-4o-2024-08-06", "usage": usage,
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hello"}]}]}},
        "response.completed"))
    assert reader.reading.usage == Usage(input_tokens=100, output_tokens=20, reasoning_tokens=5)
    assert reader.reading.model == "gpt-4o-2024-08-06"
