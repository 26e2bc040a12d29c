"""The Gemini protocol: generateContent and streamGenerateContent (SSE and the streamed JSON
array), usageMetadata with tool-use prompts, cached content and thoughts, the model from the
response or the path, and keys in headers or in ?key=."""

from __future__ import annotations

import json

import orjson
import pytest

from tokenmeter_proxy.providers.base import key_id
from tokenmeter_proxy.providers.gemini import GeminiProtocol, GenerateStreamReader, JSONArrayDecoder, to_usage
from tokenmeter_proxy.types import Usage

GEMINI = GeminiProtocol()
GENERATE = "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"
USAGE = {"promptTokenCount": 1200, "candidatesTokenCount": 80, "cachedContentTokenCount": 1000,
         "toolUsePromptTokenCount": 30, "thoughtsTokenCount": 200, "totalTokenCount": 1510}


def chunks(usage: dict[str, int]) -> list[dict[str, object]]:
    """Three chunks as Gemini streams them: usageMetadata growing in each, the last one final."""
    out: list[dict[str, object]] = []
    for n, word in enumerate(["Hello", " there, {\"quoted\\\" [braces]}", " bye."]):
        last = n == 2
        grown = dict(usage, candidatesTokenCount=usage["candidatesTokenCount"] * (n + 1) // 3)
        candidate: dict[str, object] = {"content": {"parts": [{"text": word}], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        out.append({"candidates": [candidate], "usageMetadata": grown, "modelVersion": "gemini-2.5-flash-001"})
    return out


def facts(path: str = STREAM, body: object = None) -> object:
    return GEMINI.read_request("generate_content", path, orjson.dumps(body or {}), inject_usage=False)


@pytest.mark.parametrize(("method", "path", "endpoint"), [
    ("POST", GENERATE, "generate_content"),
    ("POST", STREAM, "generate_content"),
    ("POST", "/g/v1/projects/p/locations/us/publishers/google/models/gemini-2.5-pro:generateContent",
     "generate_content"),
    ("POST", "/gemini/v1beta/models/gemini-2.5-flash:countTokens", None),
    ("POST", "/gemini/v1beta/models/text-embedding-004:embedContent", None),
    ("GET", "/gemini/v1beta/models", None),
])
def test_generate_content_is_metered(method: str, path: str, endpoint: str | None) -> None:
    assert GEMINI.endpoint(method, path) == endpoint


def test_a_request_says_its_model_from_the_path_and_its_output_limit() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Explain AI"}]}],
            "generationConfig": {"maxOutputTokens": 1000}}
    streamed = GEMINI.read_request("generate_content", STREAM, orjson.dumps(body), inject_usage=False)
    assert (streamed.model, streamed.stream, streamed.max_output_tokens) == ("gemini-2.5-flash", True, 1000)
    whole = GEMINI.read_request("generate_content", GENERATE, b"not json", inject_usage=False)
    assert (whole.model, whole.stream, whole.body) == ("gemini-2.5-flash", False, None)
    snake = GEMINI.read_request("generate_content", GENERATE, orjson.dumps(
        {"generation_config": {"max_output_tokens": 7}}), inject_usage=False)
    assert snake.max_output_tokens == 7


def test_the_input_estimate_counts_contents_system_instruction_and_tools() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Explain how AI works in a few words"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    raw = orjson.dumps(body)
    plain = GEMINI.count_input(GEMINI.read_request("generate_content", GENERATE, raw, inject_usage=False), raw)
    tooled = orjson.dumps({**body, "tools": [{"functionDeclarations": [{"name": "lookup"}]}]})
    assert GEMINI.count_input(GEMINI.read_request("generate_content", GENERATE, tooled, inject_usage=False),
                              tooled) > plain >= 10


def test_usage_metadata_maps_to_input_cached_output_and_reasoning() -> None:
    assert to_usage(USAGE) == Usage(input_tokens=1230, output_tokens=280, cached_input_tokens=1000,
                                    reasoning_tokens=200)
    assert to_usage({"totalTokenCount": 5}) is None


def test_a_json_answer_names_its_model_or_the_path_does() -> None:
    body = orjson.dumps(chunks(USAGE)[-1])
    reading = GEMINI.read_body(facts(GENERATE), body)
    assert reading.usage == to_usage(USAGE) and reading.model == "gemini-2.5-flash-001" and reading.usage_final
    assert GEMINI.read_body(facts(GENERATE), b"<html>").usage is None


def test_an_sse_stream_counts_its_last_usage_metadata_at_every_cut() -> None:
    whole = b"".join(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n" for chunk in chunks(USAGE))
    reader_of = GEMINI.stream_reader
    for cut in range(len(whole) + 1):
        reader = reader_of(facts(), status=200, content_type=b"text/event-stream")  # type: ignore[arg-type]
        assert reader is not None
        assert reader.feed(whole[:cut]) + reader.feed(whole[cut:]) == whole
        reader.end()
        assert reader.reading.usage == to_usage(USAGE) and reader.reading.usage_final, cut


def test_a_streamed_json_array_is_relayed_as_it_arrives_and_read_at_every_cut() -> None:
    whole = b"[" + b"\r\n,\r\n".join(json.dumps(chunk, indent=2).encode() for chunk in chunks(USAGE)) + b"]"
    for cut in range(len(whole) + 1):
        reader = GEMINI.stream_reader(facts(), status=200,  # type: ignore[arg-type]
                                      content_type=b"application/json; charset=UTF-8")
        assert isinstance(reader, GenerateStreamReader)
        assert reader.feed(whole[:cut]) + reader.feed(whole[cut:]) == whole
        assert reader.reading.usage == to_usage(USAGE) and reader.reading.usage_final, cut
        assert reader.reading.output_text.startswith("Hello there, {\"quoted\\\" [braces]}")


def test_the_array_decoder_finds_elements_fed_a_byte_at_a_time() -> None:
    elements = [{"a": "x\\\"]}", "b": [1, {"c": "}"}]}, {"d": "\\\\"}, {}]
    whole = json.dumps(elements).encode()
    decoder = JSONArrayDecoder()
    found = [element for byte in range(len(whole)) for element in decoder.feed(whole[byte:byte + 1])]
    assert [json.loads(element) for element in found] == elements


def test_a_stream_cut_mid_array_keeps_the_chunks_before_the_cut() -> None:
    whole = b"[" + b",".join(orjson.dumps(chunk) for chunk in chunks(USAGE)) + b"]"
    cut = whole.rindex(b"usageMetadata")  # inside the last chunk
    reader = GEMINI.stream_reader(facts(), status=200, content_type=b"application/json")  # type: ignore[arg-type]
    assert reader is not None
    reader.feed(whole[:cut])
    reader.end()
    second = chunks(USAGE)[1]["usageMetadata"]
    assert reader.reading.usage == to_usage(second)  # type: ignore[arg-type]
    assert not reader.reading.usage_final  # the output goes on past the last count: estimated from the text


def test_an_error_answer_to_a_stream_request_is_read_whole() -> None:
    assert GEMINI.stream_reader(facts(), status=400, content_type=b"application/json") is None  # type: ignore[arg-type]
    assert GEMINI.stream_reader(facts(GENERATE), status=200,  # type: ignore[arg-type]
                                content_type=b"application/json") is None


def test_the_key_comes_from_a_header_or_the_query_and_a_routes_key_replaces_both() -> None:
    assert GEMINI.credential([(b"x-goog-api-key", b"AIza-header")], b"") == "AIza-header"
    assert key_id(GEMINI.credential([], b"alt=sse&key=AIza%2Dquery")) == key_id("AIza-query")
    assert GEMINI.credential([], b"alt=sse") is None
    headers, query = GEMINI.replace_credential([(b"x-goog-api-key", b"AIza-client"), (b"accept", b"*/*")],
                                               b"key=AIza-client&alt=sse", "AIza-server", provider="google")
    assert headers == [(b"accept", b"*/*"), (b"x-goog-api-key", b"AIza-server")] and query == b"alt=sse"
