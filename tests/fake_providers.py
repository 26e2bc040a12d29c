"""Fake Anthropic, Gemini and OpenRouter upstreams, as one ASGI app, answering in each API's
wire format, JSON and streamed:

    POST /v1/messages                                      Anthropic Messages (SSE when "stream": true)
    POST /v1[beta]/models/<model>:generateContent          Gemini, JSON
    POST /v1[beta]/models/<model>:streamGenerateContent    Gemini, SSE with ?alt=sse, else a JSON array
    POST /api/v1/chat/completions                          OpenRouter (SSE when "stream": true)

Steered by request headers:

    x-fake-usage: <json>           the usage to report, in the API's own shape (Anthropic `usage`,
                                   Gemini `usageMetadata`, OpenRouter `usage` with its `cost`)
    x-fake-model-version: <name>   Gemini's `modelVersion` (default: the model in the path)

Every answer is deterministic (fixed ids and times), so the same request answered directly and
through the proxy can be compared whole. Streams are sent in pieces cut through their events and
objects. `FakeProviders.seen` lists the requests received (path, query, headers, raw body).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CREATED = 1_760_000_000
ANTHROPIC_USAGE = {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                   "output_tokens": 5}
GEMINI_USAGE = {"promptTokenCount": 8, "candidatesTokenCount": 4, "totalTokenCount": 12}
OPENROUTER_USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "cost": 0.0001}
TEXT = ["Hello", " from", " the fake", " provider."]


class FakeProviders:
    """The fake's record of requests and its ASGI app (`.app`)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            Route("/v1/messages", self.anthropic, methods=["POST"]),
            Route("/{version:str}/models/{call:str}", self.gemini, methods=["POST"]),  # v1 or v1beta
            Route("/api/v1/chat/completions", self.openrouter, methods=["POST"]),
        ])

    def received(self, session: str) -> list[dict[str, Any]]:
        """The requests that carried `x-session-id: session`, in order."""
        return [seen for seen in self.seen if seen["headers"].get("x-session-id") == session]

    async def _read(self, request: Request) -> tuple[dict[str, Any], Any]:
        raw = await request.body()
        self.seen.append({"path": request.url.path, "query": request.url.query, "headers": dict(request.headers),
                          "body": raw})
        try:
            body = json.loads(raw)
        except ValueError:
            raise HTTPException(400, "the body is not JSON") from None
        usage = request.headers.get("x-fake-usage")
        return body, json.loads(usage) if usage else None

    async def anthropic(self, request: Request) -> Response:
        body, usage = await self._read(request)
        usage = usage or ANTHROPIC_USAGE
        thinking = bool(body.get("thinking"))
        message = {"id": "msg_fake01", "type": "message", "role": "assistant", "model": body["model"],
                   "content": ([{"type": "thinking", "thinking": "Let me think.", "signature": "c2ln"}] if thinking
                               else []) + [{"type": "text", "text": "".join(TEXT)}],
                   "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return JSONResponse(message, headers={"request-id": "req_fake"})
        return _stream([_event(kind, data) for kind, data in _anthropic_events(message, usage, thinking=thinking)])

    async def gemini(self, request: Request) -> Response:
        _, usage = await self._read(request)
        model, _, method = request.path_params["call"].partition(":")
        version = request.headers.get("x-fake-model-version", model)
        chunks = _gemini_chunks(usage or GEMINI_USAGE, version)
        if method == "generateContent":
            whole = dict(chunks[-1], candidates=[_candidate("".join(TEXT), finish=True)])
            return JSONResponse(whole)
        if request.query_params.get("alt") == "sse":
            return _stream([b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in chunks])
        array = b"[" + b",\r\n".join(json.dumps(chunk, indent=2).encode() for chunk in chunks) + b"]"
        return _stream([array[at:at + 97] for at in range(0, len(array), 97)], media_type="application/json")

    async def openrouter(self, request: Request) -> Response:
        body, usage = await self._read(request)
        usage = usage or OPENROUTER_USAGE
        base = {"id": "gen-fake-01", "provider": "FakeProvider", "model": body["model"], "created": CREATED}
        if not body.get("stream"):
            choice = {"index": 0, "finish_reason": "stop", "native_finish_reason": "stop", "logprobs": None,
                      "message": {"role": "assistant", "content": "".join(TEXT), "refusal": None}}
            return JSONResponse(dict(base, object="chat.completion", choices=[choice], usage=usage))
        events = [b": OPENROUTER PROCESSING\n\n"]
        for i, piece in enumerate(TEXT):
            last = i == len(TEXT) - 1
            chunk = dict(base, object="chat.completion.chunk", choices=[{
                "index": 0, "delta": {"role": "assistant", "content": piece},
                "finish_reason": "stop" if last else None, "native_finish_reason": "stop" if last else None,
                "logprobs": None}])
            if last:  # OpenRouter reports usage unasked, on the chunk that ends the content
                chunk["usage"] = usage
            events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        return _stream([*events, b"data: [DONE]\n\n"])


def _anthropic_events(message: dict[str, Any], usage: dict[str, Any], *,
                      thinking: bool) -> list[tuple[str, dict[str, Any]]]:
    """The Messages stream: input counts in `message_start`, output counts in `message_delta`."""
    start_usage = {key: value for key, value in usage.items() if key != "output_tokens_details"} | {
        "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": dict(message, content=[], stop_reason=None, usage=start_usage)})]
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if thinking:
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""},
                       [{"type": "thinking_delta", "thinking": "Let me think."},
                        {"type": "signature_delta", "signature": "c2ln"}]))
    blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": piece} for piece in TEXT]))
    for index, (block, deltas) in enumerate(blocks):
        events.append(("content_block_start", {"index": index, "content_block": block}))
        if index == 0:
            events.append(("ping", {}))
        events += [("content_block_delta", {"index": index, "delta": delta}) for delta in deltas]
        events.append(("content_block_stop", {"index": index}))
    final = {key: usage[key] for key in ("output_tokens", "output_tokens_details") if key in usage}
    events.append(("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": final}))
    events.append(("message_stop", {}))
    return events


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: ".encode() + json.dumps(dict(data, type=kind)).encode() + b"\n\n"


def _candidate(text: str, *, finish: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return candidate


def _gemini_chunks(usage: dict[str, Any], version: str) -> list[dict[str, Any]]:
    """A streamed answer: one chunk per piece of text, each with the usage so far (the prompt
    count, a growing candidates count); the last one with the finish reason and the full usage."""
    chunks = []
    for i, piece in enumerate(TEXT):
        last = i == len(TEXT) - 1
        so_far = {"promptTokenCount": usage.get("promptTokenCount", 0), "candidatesTokenCount": i + 1,
                  "totalTokenCount": usage.get("promptTokenCount", 0) + i + 1}
        chunks.append({"candidates": [_candidate(piece, finish=last)], "usageMetadata": usage if last else so_far,
                       "modelVersion": version, "responseId": "fake-response-01"})
    return chunks


def _stream(pieces: list[bytes], *, media_type: str = "text/event-stream") -> StreamingResponse:
    """Send each piece cut in two, so no event or object arrives whole in one write."""
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            half = len(piece) // 2
            for part in (piece[:half], piece[half:]):
                if part:  # an empty write would end a chunked body
                    yield part

    return StreamingResponse(body(), media_type=media_type)
