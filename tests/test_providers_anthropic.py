"""The Anthropic protocol: /v1/messages requests, their usage in JSON answers and in streams
(message_start, then the last message_delta), cache reads and writes, thinking tokens."""

from __future__ import annotations

import orjson
import pytest

from tokenmeter_proxy.providers.anthropic import AnthropicProtocol, MessageStreamReader, to_usage
from tokenmeter_proxy.types import Usage

ANTHROPIC = AnthropicProtocol()
REQUEST = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 1024, "stream": True,
           "metadata": {"user_id": "user-7"},
           "system": [{"type": "text", "text": "You are concise.", "cache_control": {"type": "ephemeral"}}],
           "messages": [{"role": "user", "content": "Hello, Claude"},
                        {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                      "content": [{"type": "text", "text": "42"}]}]}],
           "tools": [{"name": "lookup", "description": "Find a fact", "input_schema": {"type": "object"}}]}
USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 2000,
         "output_tokens": 60, "output_tokens_details": {"thinking_tokens": 25}}


def event(kind: str, data: object) -> bytes:
    return f"event: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def stream(usage: dict[str, object], *, cumulative: bool = False) -> list[bytes]:
    """A Messages stream as the API sends it: input counts up front, output counts at the end."""
    start = dict(usage, output_tokens=1)
    start.pop("output_tokens_details", None)
    final = {key: usage[key] for key in ("output_tokens", "output_tokens_details") if key in usage}
    delta_usage = dict(usage) if cumulative else final
    return [
        event("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [], "usage": start}}),
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}),
        event("ping", {"type": "ping"}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": "Hello"}}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": " there"}}),
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta_usage}),
        event("message_stop", {"type": "message_stop"}),
    ]


def test_only_messages_is_metered() -> None:
    assert ANTHROPIC.endpoint("POST", "/anthropic/v1/messages") == "messages"
    assert ANTHROPIC.endpoint("POST", "/anthropic/v1/messages/count_tokens") is None
    assert ANTHROPIC.endpoint("POST", "/anthropic/v1/messages/batches") is None
    assert ANTHROPIC.endpoint("GET", "/anthropic/v1/models") is None


def test_a_request_says_its_model_stream_output_limit_and_user() -> None:
    facts = ANTHROPIC.read_request("messages", "/anthropic/v1/messages", orjson.dumps(REQUEST), inject_usage=False)
    assert (facts.model, facts.stream, facts.max_output_tokens, facts.user) == (
        "claude-sonnet-4-5-20250929", True, 1024, "user-7")
    assert ANTHROPIC.upstream_body(b"{}", facts) == b"{}"  # never rewritten


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b'{"model": 3, "max_tokens": "lots"}'])
def test_a_body_of_any_shape_never_raises(raw: bytes) -> None:
    facts = ANTHROPIC.read_request("messages", "/v1/messages", raw, inject_usage=False)
    assert facts.model is None and facts.max_output_tokens is None
    assert ANTHROPIC.count_input(facts, raw) >= 0


def test_the_input_estimate_counts_system_messages_tool_results_and_tools() -> None:
    raw = orjson.dumps(REQUEST)
    facts = ANTHROPIC.read_request("messages", "/v1/messages", raw, inject_usage=False)
    without_tools = ANTHROPIC.read_request("messages", "/v1/messages",
                                           orjson.dumps({**REQUEST, "tools": []}), inject_usage=False)
    assert ANTHROPIC.count_input(facts, raw) > ANTHROPIC.count_input(without_tools, raw) > 8


def test_usage_counts_cache_reads_and_writes_as_input_and_thinking_as_reasoning() -> None:
    assert to_usage(USAGE) == Usage(input_tokens=2512, output_tokens=60, cached_input_tokens=2000,
                                    cache_write_tokens=500, reasoning_tokens=25)
    assert to_usage({"service_tier": "standard"}) is None


def test_a_json_answer() -> None:
    body = orjson.dumps({"id": "msg_1", "type": "message", "model": "claude-sonnet-4-5-20250929",
                         "content": [{"type": "thinking", "thinking": "Hmm"}, {"type": "text", "text": "Hi"}],
                         "usage": USAGE})
    reading = ANTHROPIC.read_body(ANTHROPIC.read_request("messages", "/v1/messages", b"{}", inject_usage=False), body)
    assert reading.usage == to_usage(USAGE) and reading.usage_final
    assert reading.model == "claude-sonnet-4-5-20250929" and reading.output_text == "HmmHi"


@pytest.mark.parametrize("cumulative", [False, True])
def test_a_stream_is_relayed_untouched_and_read_at_every_cut(cumulative: bool) -> None:
    whole = b"".join(stream(USAGE, cumulative=cumulative))
    for cut in range(len(whole) + 1):
        reader = MessageStreamReader()
        assert reader.feed(whole[:cut]) + reader.feed(whole[cut:]) == whole
        assert reader.end() == b""
        assert reader.reading.usage == to_usage(USAGE) and reader.reading.usage_final, cut
        assert reader.reading.model == "claude-sonnet-4-5-20250929"


def test_a_stream_cut_before_its_final_usage_keeps_the_input_and_the_text_for_an_estimate() -> None:
    reader = MessageStreamReader()
    for chunk in stream(USAGE)[:5]:  # message_start and both text deltas, no message_delta
        reader.feed(chunk)
    reader.end()
    reading = reader.reading
    assert not reading.usage_final and reading.usage is not None
    assert (reading.usage.input_tokens, reading.usage.cached_input_tokens) == (2512, 2000)
    assert reading.output_text == "Hello there"


def test_a_stream_without_event_lines_is_read_by_its_types() -> None:
    reader = MessageStreamReader()
    for chunk in stream(USAGE):
        reader.feed(chunk.split(b"\n", 1)[1])  # data lines only, as some compatible servers send
    assert reader.reading.usage == to_usage(USAGE) and reader.reading.usage_final


def test_the_credential_is_x_api_key_or_a_bearer_token_and_a_routes_key_takes_its_place() -> None:
    assert ANTHROPIC.credential([(b"x-api-key", b"sk-ant-1")], b"") == "sk-ant-1"
    assert ANTHROPIC.credential([(b"authorization", b"Bearer sk-ant-2")], b"") == "sk-ant-2"
    headers, _ = ANTHROPIC.replace_credential([(b"authorization", b"Bearer sk-ant-2"), (b"anthropic-version", b"1")],
                                              b"", "sk-server", provider="anthropic")
    assert headers == [(b"anthropic-version", b"1"), (b"authorization", b"Bearer sk-server")]
    headers, _ = ANTHROPIC.replace_credential([], b"", "sk-server", provider="anthropic")
    assert headers == [(b"x-api-key", b"sk-server")]
