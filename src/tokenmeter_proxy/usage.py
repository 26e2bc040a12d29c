"""What an upstream response says about usage: its `usage` object, its model, and (for an
estimate when it reports none) the text it generated. Pure: fed bytes, returns values.

Chat completions, completions and embeddings name their counts `prompt_tokens` and
`completion_tokens`; the Responses API names them `input_tokens` and `output_tokens`.
Both namings are read everywhere, so OpenAI-compatible servers that mix them still count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .sse import ServerSentEvent, SSEDecoder
from .types import Endpoint, Usage

# Events of the Responses API that carry the final response, with its usage.
_FINAL_RESPONSE_EVENTS = {"response.completed", "response.incomplete", "response.failed"}
# Events of the Responses API whose `delta` is generated text.
_TEXT_DELTA_EVENTS = {
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
}


def parse_usage(value: object) -> Usage | None:
    """A `Usage` from an OpenAI usage object of any endpoint, or None if it is not one."""
    if not isinstance(value, dict):
        return None
    input_tokens = _count(value.get("prompt_tokens", value.get("input_tokens")))
    output_tokens = _count(value.get("completion_tokens", value.get("output_tokens")))
    if input_tokens is None and output_tokens is None:
        return None
    input_details = value.get("prompt_tokens_details") or value.get("input_tokens_details") or {}
    output_details = value.get("completion_tokens_details") or value.get("output_tokens_details") or {}
    if not isinstance(input_details, dict):
        input_details = {}
    if not isinstance(output_details, dict):
        output_details = {}
    cache_write = _first_count(
        input_details.get("cache_write_tokens"),
        input_details.get("cache_creation_tokens"),
        value.get("cache_creation_input_tokens"),
    )
    return Usage(
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cached_input_tokens=_count(input_details.get("cached_tokens")) or 0,
        cache_write_tokens=cache_write or 0,
        reasoning_tokens=_count(output_details.get("reasoning_tokens")) or 0,
    )


@dataclass
class ResponseReading:
    """What a response told us: the upstream's usage (if any), its model, its generated text."""

    usage: Usage | None = None
    model: str | None = None
    output_parts: list[str] = field(default_factory=list)

    @property
    def output_text(self) -> str:
        return "".join(self.output_parts)


def read_json_response(endpoint: Endpoint, body: bytes) -> ResponseReading:
    """Read a non-streaming response body. A body that is not JSON yields an empty reading."""
    reading = ResponseReading()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return reading
    if not isinstance(document, dict):
        return reading
    reading.usage = parse_usage(document.get("usage"))
    reading.model = _text(document.get("model"))
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

    def __init__(self, endpoint: Endpoint, *, hide_usage_chunk: bool = False) -> None:
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
        usage = parse_usage(payload.get("usage"))
        if usage is not None:
            self.reading.usage = usage
        if self.reading.model is None:
            self.reading.model = _text(payload.get("model"))
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
                self.reading.usage = parse_usage(response.get("usage")) or self.reading.usage
                self.reading.model = _text(response.get("model")) or self.reading.model
                final: list[str] = []
                _collect_response_output(response, final)
                if final:
                    self.reading.output_parts = final


def _collect_choices(choices: object, into: list[str], *, key: str) -> None:
    """Generated text of chat (`message` or `delta`) and completion (`text`) choices."""
    if not isinstance(choices, list):
        return
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        text = choice.get("text")
        if isinstance(text, str):
            into.append(text)
        message = choice.get(key)
        if not isinstance(message, dict):
            continue
        for name in ("content", "refusal", "reasoning_content"):
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


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _first_count(*values: object) -> int | None:
    for value in values:
        count = _count(value)
        if count is not None:
            return count
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
