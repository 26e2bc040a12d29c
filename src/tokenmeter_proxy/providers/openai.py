"""The OpenAI protocol (OpenAI, Azure OpenAI, OpenRouter, Groq, Ollama and every other
OpenAI-compatible server): chat completions, completions, embeddings and the Responses API,
JSON and SSE.

Chat completions, completions and embeddings name their counts `prompt_tokens` and
`completion_tokens`; the Responses API names them `input_tokens` and `output_tokens`. Both
namings are read everywhere, so servers that mix them still count. A path is metered by its end,
so Azure's `/openai/deployments/<name>/chat/completions?api-version=...` is too.
"""

from __future__ import annotations

from typing import Any

import orjson

from .. import tokens
from ..sse import ServerSentEvent, SSEDecoder
from ..types import Usage
from .base import (
    Headers,
    RequestFacts,
    ResponseReader,
    ResponseReading,
    count,
    first_count,
    header_key,
    reported_cost,
    text,
    with_header_key,
)

# Longest first: "/chat/completions" also ends with "/completions".
_ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "chat/completions"),
    ("/completions", "completions"),
    ("/embeddings", "embeddings"),
    ("/responses", "responses"),
)
# Endpoints whose streams report usage only when asked with stream_options.include_usage.
_USAGE_ON_REQUEST = frozenset({"chat/completions", "completions"})
_CREDENTIALS = (b"authorization", b"api-key")  # api-key: Azure's
# Events of the Responses API that carry the final response, with its usage.
_FINAL_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Events of the Responses API whose `delta` is generated text.
_TEXT_DELTA_EVENTS = frozenset({
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
})


class OpenAIProtocol:
    """The OpenAI API and its compatibles."""

    name = "openai"

    def endpoint(self, method: str, path: str) -> str | None:
        if method != "POST":
            return None
        for suffix, endpoint in _ENDPOINTS:
            if path.endswith(suffix):
                return endpoint
        return None

    def read_request(self, endpoint: str, path: str, raw: bytes, *, inject_usage: bool) -> RequestFacts:
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return RequestFacts(endpoint=endpoint, body=None)
        options = body.get("stream_options")
        stream = body.get("stream") is True
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        user = body.get("user")
        return RequestFacts(
            endpoint=endpoint, body=body, model=text(body.get("model")), stream=stream,
            user=user if isinstance(user, str) else None,
            max_output_tokens=first_count(body.get("max_completion_tokens"), body.get("max_output_tokens"),
                                          body.get("max_tokens")),
            hide_usage=inject_usage and stream and endpoint in _USAGE_ON_REQUEST and not wants_usage,
        )

    def upstream_body(self, raw: bytes, facts: RequestFacts) -> bytes:
        """With `hide_usage`, the body asks the upstream to report usage at the end of the stream."""
        if not facts.hide_usage or facts.body is None:
            return raw
        if "stream_options" not in facts.body:
            # Splice rather than re-serialise: the client's bytes stay exactly as sent.
            start = raw.index(b"{") + 1
            return raw[:start] + b'"stream_options":{"include_usage":true},' + raw[start:]
        options = facts.body["stream_options"]
        body = dict(facts.body, stream_options={**(options if isinstance(options, dict) else {}),
                                                "include_usage": True})
        return orjson.dumps(body)

    def count_input(self, facts: RequestFacts, raw: bytes) -> int:
        return tokens.count_input(facts.endpoint, facts.model, facts.body, raw)

    def credential(self, headers: Headers, query: bytes) -> str | None:
        return header_key(headers, _CREDENTIALS)

    def replace_credential(self, headers: Headers, query: bytes, key: str, *, provider: str) -> tuple[Headers, bytes]:
        usual = b"api-key" if provider == "azure" else b"authorization"
        return with_header_key(headers, key, names=_CREDENTIALS, usual=usual), query

    def stream_reader(self, facts: RequestFacts, *, status: int, content_type: bytes) -> ResponseReader | None:
        if not content_type.lower().startswith(b"text/event-stream"):
            return None
        return StreamReader(facts.endpoint, hide_usage_chunk=facts.hide_usage)

    def read_body(self, facts: RequestFacts, body: bytes) -> ResponseReading:
        return read_json_response(facts.endpoint, body)


def parse_usage(value: object) -> Usage | None:
    """A `Usage` from an OpenAI usage object of any endpoint, or None if it is not one."""
    if not isinstance(value, dict):
        return None
    input_tokens = count(value.get("prompt_tokens", value.get("input_tokens")))
    output_tokens = count(value.get("completion_tokens", value.get("output_tokens")))
    if input_tokens is None and output_tokens is None:
        return None
    input_details = value.get("prompt_tokens_details") or value.get("input_tokens_details") or {}
    output_details = value.get("completion_tokens_details") or value.get("output_tokens_details") or {}
    if not isinstance(input_details, dict):
        input_details = {}
    if not isinstance(output_details, dict):
        output_details = {}
    cache_write = first_count(
        input_details.get("cache_write_tokens"),
        input_details.get("cache_creation_tokens"),
        value.get("cache_creation_input_tokens"),
    )
    return Usage(
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cached_input_tokens=count(input_details.get("cached_tokens")) or 0,
        cache_write_tokens=cache_write or 0,
        reasoning_tokens=count(output_details.get("reasoning_tokens")) or 0,
    )


def read_json_response(endpoint: str, body: bytes) -> ResponseReading:
    """Read a non-streaming response body. A body that is not JSON yields an empty reading."""
    reading = ResponseReading()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return reading
    if not isinstance(document, dict):
        return reading
    _read_usage(document.get("usage"), reading)
    reading.model = text(document.get("model"))
    if endpoint == "responses":
        _collect_response_output(document, reading.output_parts)
    elif endpoint != "embeddings":
        _collect_choices(document.get("choices"), reading.output_parts, key="message")
    return reading


class StreamReader:
    """Reads a streamed (SSE) response as it is relayed.

    `feed(chunk)` returns the bytes to forward: the chunk itself, untouched, unless
    `hide_usage_chunk` is set (the proxy asked for usage the client did not), in which
    case whole events are forwarded as they complete and the usage-only chunk is left out.
    """

    def __init__(self, endpoint: str, *, hide_usage_chunk: bool = False) -> None:
        self.endpoint = endpoint
        self.hide_usage_chunk = hide_usage_chunk
        self.reading = ResponseReading()
        self._decoder = SSEDecoder()

    def feed(self, chunk: bytes) -> bytes:
        events = self._decoder.feed(chunk)
        if not self.hide_usage_chunk:
            for event in events:
                self._read(event)
            return chunk
        return b"".join(event.raw for event in events if self._read(event))

    def end(self) -> bytes:
        """The stream is over: the bytes still owed to the client, if any."""
        events = self._decoder.flush()
        kept = [event.raw for event in events if self._read(event)]
        if not self.hide_usage_chunk:
            return b""
        return b"".join(kept) + self._decoder.pending()

    def _read(self, event: ServerSentEvent) -> bool:
        """Take what metering needs from one event; False if the client must not see it."""
        data = event.data
        if not data or data == b"[DONE]":
            return True
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(payload, dict):
            return True
        if self.endpoint == "responses":
            self._read_responses_event(payload)
            return True
        usage = _read_usage(payload.get("usage"), self.reading)
        if self.reading.model is None:
            self.reading.model = text(payload.get("model"))
        choices = payload.get("choices")
        if choices:
            _collect_choices(choices, self.reading.output_parts, key="delta")
            return True
        return not (self.hide_usage_chunk and usage is not None)

    def _read_responses_event(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        if kind in _TEXT_DELTA_EVENTS:
            delta = payload.get("delta")
            if isinstance(delta, str):
                self.reading.output_parts.append(delta)
        elif kind in _FINAL_RESPONSE_EVENTS:
            response = payload.get("response")
            if isinstance(response, dict):
                _read_usage(response.get("usage"), self.reading)
                self.reading.model = text(response.get("model")) or self.reading.model
                final: list[str] = []
                _collect_response_output(response, final)
                if final:
                    self.reading.output_parts = final


def _read_usage(value: object, reading: ResponseReading) -> Usage | None:
    """Keep a usage object's counts (and the cost an upstream such as OpenRouter reports in it)."""
    usage = parse_usage(value)
    if usage is not None:
        reading.usage = usage
        assert isinstance(value, dict)
        reading.reported_cost = reported_cost(value.get("cost"))
    return usage


def _collect_choices(choices: object, into: list[str], *, key: str) -> None:
    """Generated text of chat (`message` or `delta`) and completion (`text`) choices."""
    if not isinstance(choices, list):
        return
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        generated = choice.get("text")
        if isinstance(generated, str):
            into.append(generated)
        message = choice.get(key)
        if not isinstance(message, dict):
            continue
        for name in ("content", "refusal", "reasoning_content", "reasoning"):
            value = message.get(name)
            if isinstance(value, str):
                into.append(value)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    into.extend(v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str))


def _collect_response_output(response: dict[str, Any], into: list[str]) -> None:
    """Generated text of a Responses API response: message text, refusals, function calls."""
    output = response.get("output")
    if not isinstance(output, list):
        return
    for item in output:
        if not isinstance(item, dict):
            continue
        into.extend(v for v in (item.get("name"), item.get("arguments")) if isinstance(v, str))
        content = item.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    into.extend(v for v in (part.get("text"), part.get("refusal")) if isinstance(v, str))
