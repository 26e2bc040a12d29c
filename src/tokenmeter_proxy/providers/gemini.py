"""The Gemini API: `POST .../models/<model>:generateContent` and `:streamGenerateContent`
(record endpoint "generate_content"), JSON, SSE (`?alt=sse`) and, without `alt=sse`, a JSON array
streamed element by element.

Usage comes from `usageMetadata`, which a stream repeats, growing, in its chunks (the last one
counts): input = promptTokenCount + toolUsePromptTokenCount, cached = cachedContentTokenCount,
output = candidatesTokenCount + thoughtsTokenCount, reasoning = thoughtsTokenCount. The model is
the response's `modelVersion`, else the one the path names. A key may come as `?key=`, which is
hashed like any other credential and never kept, logged or shown.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import orjson

from .. import tokens
from ..sse import SSEDecoder
from ..types import Usage
from .base import Headers, RequestFacts, ResponseReader, ResponseReading, count, first_count, header_key, text

_METHOD = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")
_CREDENTIALS = (b"x-goog-api-key", b"authorization")
_KEY_PARAMETER = b"key="


class GeminiProtocol:
    """Google's Gemini API (generativelanguage.googleapis.com)."""

    name = "gemini"

    def endpoint(self, method: str, path: str) -> str | None:
        return "generate_content" if method == "POST" and _METHOD.search(path) else None

    def read_request(self, endpoint: str, path: str, raw: bytes, *, inject_usage: bool) -> RequestFacts:
        found = _METHOD.search(path)
        model = found.group(1) if found else None
        stream = found is not None and found.group(2) == "streamGenerateContent"
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return RequestFacts(endpoint=endpoint, body=None, model=model, stream=stream)
        config = body.get("generationConfig", body.get("generation_config"))
        limit = first_count(config.get("maxOutputTokens"), config.get("max_output_tokens")) if isinstance(
            config, dict) else None
        return RequestFacts(endpoint=endpoint, body=body, model=model, stream=stream, max_output_tokens=limit)

    def upstream_body(self, raw: bytes, facts: RequestFacts) -> bytes:
        return raw

    def count_input(self, facts: RequestFacts, raw: bytes) -> int:
        """The contents, the system instruction and the tool declarations, counted with o200k (the
        closest tokenizer available offline)."""
        body = facts.body
        if body is None:
            return tokens.count_text(None, raw.decode("utf-8", errors="replace"))
        parts: list[str] = []
        contents = body.get("contents")
        for content in contents if isinstance(contents, list) else [contents]:
            _collect_parts(content, parts)
        _collect_parts(body.get("systemInstruction", body.get("system_instruction")), parts)
        if body.get("tools"):
            parts.append(orjson.dumps(body["tools"]).decode())
        return tokens.count_text(None, "\n".join(parts))

    def credential(self, headers: Headers, query: bytes) -> str | None:
        return header_key(headers, _CREDENTIALS) or _query_key(query)

    def replace_credential(self, headers: Headers, query: bytes, key: str, *, provider: str) -> tuple[Headers, bytes]:
        """The server's key always goes in `x-goog-api-key` (Gemini takes no API key as a bearer
        token); the client's, in any header or in `?key=`, is removed."""
        kept = [(name, value) for name, value in headers if name not in _CREDENTIALS]
        rest = b"&".join(part for part in query.split(b"&") if part and not part.startswith(_KEY_PARAMETER))
        return [*kept, (b"x-goog-api-key", key.encode("latin-1"))], rest

    def stream_reader(self, facts: RequestFacts, *, status: int, content_type: bytes) -> ResponseReader | None:
        kind = content_type.lower()
        if kind.startswith(b"text/event-stream"):
            return GenerateStreamReader(sse=True)
        if facts.stream and status < 300 and kind.startswith(b"application/json"):
            return GenerateStreamReader(sse=False)
        return None

    def read_body(self, facts: RequestFacts, body: bytes) -> ResponseReading:
        reading = ResponseReading()
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return reading
        if isinstance(document, dict):
            read_chunk(document, reading)
        return reading


def to_usage(metadata: dict[str, Any]) -> Usage | None:
    """A `Usage` from a `usageMetadata` object, or None when it holds no counts."""
    prompt, candidates = count(metadata.get("promptTokenCount")), count(metadata.get("candidatesTokenCount"))
    thoughts = count(metadata.get("thoughtsTokenCount")) or 0
    if prompt is None and candidates is None and not thoughts:
        return None
    return Usage(input_tokens=(prompt or 0) + (count(metadata.get("toolUsePromptTokenCount")) or 0),
                 output_tokens=(candidates or 0) + thoughts,
                 cached_input_tokens=count(metadata.get("cachedContentTokenCount")) or 0,
                 reasoning_tokens=thoughts)


def read_chunk(chunk: dict[str, Any], reading: ResponseReading) -> bool:
    """Take a response (or one chunk of a stream) into `reading`: its usage, model and text.
    True when it ends the answer (a candidate with a `finishReason`)."""
    metadata = chunk.get("usageMetadata")
    usage = to_usage(metadata) if isinstance(metadata, dict) else None
    if usage is not None:
        reading.usage = usage
    reading.model = text(chunk.get("modelVersion")) or reading.model
    candidates = chunk.get("candidates")
    ended = False
    for candidate in candidates if isinstance(candidates, list) else ():
        if isinstance(candidate, dict):
            _collect_parts(candidate.get("content"), reading.output_parts)
            ended = ended or bool(candidate.get("finishReason"))
    return ended


class GenerateStreamReader:
    """Reads a streamed answer as it is relayed (never changing a byte): SSE events, or the
    elements of a JSON array as each completes. A chunk cut short is not read; the chunks before
    it are, and until one with a `finishReason`, the output counts only as far as they said."""

    def __init__(self, *, sse: bool) -> None:
        self.reading = ResponseReading()
        self._sse = SSEDecoder() if sse else None
        self._array = JSONArrayDecoder()
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        sse = self._sse
        elements = [event.data for event in sse.feed(chunk)] if sse is not None else self._array.feed(chunk)
        for element in elements:
            self._read(element)
        return chunk

    def end(self) -> bytes:
        if self._sse is not None:
            for event in self._sse.flush():
                self._read(event.data)
        return b""

    def _read(self, element: bytes) -> None:
        try:
            chunk = orjson.loads(element)
        except orjson.JSONDecodeError:
            return
        if isinstance(chunk, dict):
            self._ended = read_chunk(chunk, self.reading) or self._ended
            self.reading.usage_final = self._ended or self.reading.usage is None


class JSONArrayDecoder:
    """Splits a streamed JSON array of objects (or arrays) into its elements as each completes:
    fed bytes cut anywhere (inside strings and escapes too), returns each whole element's bytes.
    Only the characters that change the nesting are looked at, so text is skipped, not walked."""

    _STRUCTURE = re.compile(rb'["{}\[\]]')
    _IN_STRING = re.compile(rb'["\\]')

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0  # how far _buffer has been scanned
        self._depth = 0  # 1 inside the array, 2 and more inside an element
        self._in_string = False
        self._start: int | None = None  # where the element being read starts in _buffer

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the elements they complete, in order."""
        buffer = self._buffer + chunk if self._buffer else chunk
        position, elements = self._position, []
        while True:
            if self._in_string:
                found = self._IN_STRING.search(buffer, position)
                if found is None:
                    position = len(buffer)
                    break
                at = found.start()
                if buffer[at] == 0x5C:  # a backslash escapes the next byte, which may not be here yet
                    if at + 1 >= len(buffer):
                        position = at
                        break
                    position = at + 2
                    continue
                self._in_string, position = False, at + 1
                continue
            found = self._STRUCTURE.search(buffer, position)
            if found is None:
                position = len(buffer)
                break
            at, byte = found.start(), buffer[found.start()]
            position = at + 1
            if byte == 0x22:  # '"'
                self._in_string = True
            elif byte in (0x7B, 0x5B):  # '{' '['
                self._depth += 1
                if self._depth == 2:
                    self._start = at
            else:
                self._depth -= 1
                if self._depth == 1 and self._start is not None:
                    elements.append(buffer[self._start:position])
                    self._start = None
        self._keep(buffer, position)
        return elements

    def _keep(self, buffer: bytes, position: int) -> None:
        """Hold only the bytes of the element in progress (or the escape that was cut)."""
        start = self._start if self._start is not None else position
        self._buffer = buffer[start:]
        self._position = position - start
        if self._start is not None:
            self._start = 0


def _collect_parts(content: object, into: list[str]) -> None:
    """The text of a `Content` (`{"parts": [{"text": ...}]}`), function calls included."""
    if not isinstance(content, dict):
        return
    parts = content.get("parts")
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        if isinstance(value := part.get("text"), str):
            into.append(value)
        for key in ("functionCall", "functionResponse"):
            if key in part:
                into.append(orjson.dumps(part[key]).decode())


def _query_key(query: bytes) -> str | None:
    """The API key of a `?key=` query parameter (percent-decoded), if the request carries one."""
    for part in query.split(b"&"):
        if part.startswith(_KEY_PARAMETER):
            key = unquote(part[len(_KEY_PARAMETER):].decode("latin-1"))
            return key or None
    return None
