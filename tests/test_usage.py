"""Reading usage, model and generated text out of upstream responses, streamed or not."""

from __future__ import annotations

import orjson
import pytest

from tokenmeter_proxy.types import Usage
from tokenmeter_proxy.usage import StreamReader, parse_usage, read_json_response


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
