"""The Anthropic Messages API: `POST .../v1/messages`, JSON and SSE (record endpoint "messages").

Anthropic counts cache reads and writes apart from `input_tokens`; a record counts them in its
input, as OpenAI does: input = input_tokens + cache_read_input_tokens + cache_creation_input_tokens,
cached = cache_read_input_tokens, and the written tokens are priced at `cache_write`. A stream
states its input counts in `message_start` and its output in `message_delta` (later non-null
values win, since the API has repeated the input counts there cumulatively); until that delta
arrives, the output is only estimated.
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
    text,
    with_header_key,
)

_CREDENTIALS = (b"x-api-key", b"authorization")
_USAGE_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")


class AnthropicProtocol:
    """Anthropic's Messages API."""

    name = "anthropic"

    def endpoint(self, method: str, path: str) -> str | None:
        return "messages" if method == "POST" and path.endswith("/v1/messages") else None

    def read_request(self, endpoint: str, path: str, raw: bytes, *, inject_usage: bool) -> RequestFacts:
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return RequestFacts(endpoint=endpoint, body=None)
        metadata = body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
        return RequestFacts(endpoint=endpoint, body=body, model=text(body.get("model")),
                            stream=body.get("stream") is True, user=user if isinstance(user, str) else None,
                            max_output_tokens=count(body.get("max_tokens")))

    def upstream_body(self, raw: bytes, facts: RequestFacts) -> bytes:
        return raw

    def count_input(self, facts: RequestFacts, raw: bytes) -> int:
        """The system prompt, the messages and the tool definitions, counted with o200k (the
        closest tokenizer available offline; Anthropic's own is not published)."""
        body = facts.body
        if body is None:
            return tokens.count_text(None, raw.decode("utf-8", errors="replace"))
        parts: list[str] = []
        _collect_content(body.get("system"), parts)
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else ():
            if isinstance(message, dict):
                _collect_content(message.get("content"), parts)
        if body.get("tools"):
            parts.append(orjson.dumps(body["tools"]).decode())
        return tokens.count_text(None, "\n".join(parts))

    def credential(self, headers: Headers, query: bytes) -> str | None:
        return header_key(headers, _CREDENTIALS)

    def replace_credential(self, headers: Headers, query: bytes, key: str, *, provider: str) -> tuple[Headers, bytes]:
        return with_header_key(headers, key, names=_CREDENTIALS, usual=b"x-api-key"), query

    def stream_reader(self, facts: RequestFacts, *, status: int, content_type: bytes) -> ResponseReader | None:
        return MessageStreamReader() if content_type.lower().startswith(b"text/event-stream") else None

    def read_body(self, facts: RequestFacts, body: bytes) -> ResponseReading:
        reading = ResponseReading()
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return reading
        if not isinstance(document, dict):
            return reading
        usage = document.get("usage")
        if isinstance(usage, dict):
            reading.usage = to_usage(usage)
        reading.model = text(document.get("model"))
        _collect_content(document.get("content"), reading.output_parts)
        return reading


def to_usage(fields: dict[str, Any]) -> Usage | None:
    """A `Usage` from Anthropic's usage object, or None when it holds no counts."""
    counts = {name: count(fields.get(name)) for name in _USAGE_FIELDS}
    if all(value is None for value in counts.values()):
        return None
    read, written = counts["cache_read_input_tokens"] or 0, counts["cache_creation_input_tokens"] or 0
    details = fields.get("output_tokens_details")
    thinking = first_count(details.get("thinking_tokens")) if isinstance(details, dict) else None
    return Usage(input_tokens=(counts["input_tokens"] or 0) + read + written,
                 output_tokens=counts["output_tokens"] or 0, cached_input_tokens=read, cache_write_tokens=written,
                 reasoning_tokens=thinking or 0)


class MessageStreamReader:
    """Reads a Messages stream as it is relayed (never changing a byte). Only `message_start` and
    `message_delta` are parsed as they come; text deltas are kept raw and read only if the stream
    ends before its final usage, for the estimate of its output."""

    def __init__(self) -> None:
        self.reading = ResponseReading()
        self._decoder = SSEDecoder()
        self._usage: dict[str, Any] = {}
        self._deltas: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        for event in self._decoder.feed(chunk):
            self._read(event)
        return chunk

    def end(self) -> bytes:
        for event in self._decoder.flush():
            self._read(event)
        if self.reading.usage is None or not self.reading.usage_final:
            self.reading.output_parts = self._delta_text()
        return b""

    def _read(self, event: ServerSentEvent) -> None:
        kind = event.event
        if kind == "content_block_delta":
            self._deltas.append(event.data)
            return
        if kind not in ("message_start", "message_delta", ""):
            return
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        kind = kind or str(payload.get("type"))
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self.reading.model = text(message.get("model")) or self.reading.model
                self._merge(message.get("usage"), final=False)
        elif kind == "message_delta":
            self._merge(payload.get("usage"), final=True)
        elif kind == "content_block_delta":
            self._deltas.append(event.data)

    def _merge(self, usage: object, *, final: bool) -> None:
        if not isinstance(usage, dict):
            return
        self._usage.update((name, value) for name, value in usage.items() if value is not None)
        self.reading.usage = to_usage(self._usage)
        self.reading.usage_final = final and self.reading.usage is not None

    def _delta_text(self) -> list[str]:
        parts: list[str] = []
        for data in self._deltas:
            try:
                delta = orjson.loads(data).get("delta")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(delta, dict):
                parts.extend(v for key in ("text", "thinking", "partial_json") if isinstance(v := delta.get(key), str))
        return parts


def _collect_content(content: object, into: list[str]) -> None:
    """The text of a string or a list of content blocks (text, thinking, tool use and results)."""
    if isinstance(content, str):
        into.append(content)
        return
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        for key in ("text", "thinking"):
            if isinstance(value := block.get(key), str):
                into.append(value)
        if "input" in block:
            into.append(orjson.dumps(block["input"]).decode())
        if "content" in block:
            _collect_content(block["content"], into)
