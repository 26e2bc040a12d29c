"""A fake OpenAI-compatible upstream, as an ASGI app, steered by request headers:

    x-fake-prompt-tokens / x-fake-completion-tokens / x-fake-cached-tokens / x-fake-reasoning-tokens
    x-fake-no-usage: 1     report no usage at all
    x-fake-chunks: N       content chunks when streaming (default 3)
    x-fake-delay-ms: D     pause before answering and between chunks
    x-fake-status: S       answer with this status and an OpenAI error body

`FakeUpstream.seen` lists the requests it received, `events` what happened to its streams
("stream-complete", "stream-abandoned" when the proxy closed the connection mid-stream).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class FakeUpstream:
    """The fake's state and its ASGI app (`.app`)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.app = Starlette(routes=[
            Route("/v1/models", self.models),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
            Route("/v1/echo/{rest:path}", self.echo, methods=["GET", "POST", "DELETE"]),
        ])

    async def models(self, request: Request) -> Response:
        self._remember(request, b"")
        return JSONResponse({"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]},
                            headers={"x-fake-upstream": "1", "set-cookie": "upstream_session=abc; Path=/"})

    async def echo(self, request: Request) -> Response:
        """Answers with what it received: method, path, query, headers, body."""
        body = await request.body()
        self._remember(request, body)
        return JSONResponse({
            "method": request.method, "path": request.url.path, "query": request.url.query,
            "headers": dict(request.headers), "body": body.decode("utf-8", "replace"),
        }, headers={"x-fake-upstream": "1", "connection": "keep-alive, x-hop", "x-hop": "drop me"})

    async def chat(self, request: Request) -> Response:
        return await self._answer(request, "chat/completions")

    async def completions(self, request: Request) -> Response:
        return await self._answer(request, "completions")

    async def embeddings(self, request: Request) -> Response:
        return await self._answer(request, "embeddings")

    async def responses(self, request: Request) -> Response:
        return await self._answer(request, "responses")

    async def _answer(self, request: Request, endpoint: str) -> Response:
        raw = await request.body()
        self._remember(request, raw)
        steer = request.headers
        delay = int(steer.get("x-fake-delay-ms", "0")) / 1000
        await asyncio.sleep(delay)
        if "x-fake-status" in steer:
            return JSONResponse({"error": {"message": "fake failure", "type": "server_error", "code": None,
                                           "param": None}}, status_code=int(steer["x-fake-status"]))
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": {"message": "We could not parse the JSON body of your request.",
                                           "type": "invalid_request_error", "code": None, "param": None}},
                                status_code=400)
        usage = None if steer.get("x-fake-no-usage") == "1" else _usage(endpoint, steer)
        model = body.get("model", "unknown")
        if body.get("stream"):
            chunks = int(steer.get("x-fake-chunks", "3"))
            if endpoint == "responses":
                events = _responses_stream(model, usage, chunks)
            else:
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                events = _chat_stream(endpoint, model, usage if include else None, chunks, include)
            return StreamingResponse(self._paced(events, delay), media_type="text/event-stream",
                                     headers={"x-fake-upstream": "1"})
        return JSONResponse(_document(endpoint, model, body, usage), headers={"x-fake-upstream": "1"})

    async def _paced(self, events: list[bytes], delay: float) -> AsyncIterator[bytes]:
        try:
            for event in events:
                yield event
                await asyncio.sleep(delay)
        except (asyncio.CancelledError, GeneratorExit):
            self.events.append("stream-abandoned")
            raise
        self.events.append("stream-complete")

    def _remember(self, request: Request, body: bytes) -> None:
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, RecursionError):
            parsed = None
        self.seen.append({"method": request.method, "path": request.url.path, "headers": dict(request.headers),
                          "body": body, "json": parsed})


def _usage(endpoint: str, steer: Any) -> dict[str, Any]:
    prompt = int(steer.get("x-fake-prompt-tokens", "11"))
    completion = 0 if endpoint == "embeddings" else int(steer.get("x-fake-completion-tokens", "7"))
    cached = int(steer.get("x-fake-cached-tokens", "0"))
    reasoning = int(steer.get("x-fake-reasoning-tokens", "0"))
    if endpoint == "embeddings":
        return {"prompt_tokens": prompt, "total_tokens": prompt}
    if endpoint == "responses":
        return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt + completion}
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


def _document(endpoint: str, model: str, body: dict[str, Any], usage: dict[str, Any] | None) -> dict[str, Any]:
    if endpoint == "embeddings":
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        document: dict[str, Any] = {"object": "list", "model": model, "data": [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2]} for i in range(count)]}
    elif endpoint == "responses":
        document = _response_object(model, "completed")
    elif endpoint == "completions":
        document = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "text": "hello from fake", "finish_reason": "stop", "logprobs": None}]}
    else:
        document = {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "hello from fake"}}]}
    if usage is not None:
        document["usage"] = usage
    return document


def _response_object(model: str, status: str) -> dict[str, Any]:
    return {"id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": status,
            "model": model, "output": [{"type": "message", "id": "msg_fake", "status": "completed",
                                        "role": "assistant",
                                        "content": [{"type": "output_text", "text": "hello from fake",
                                                     "annotations": []}]}]}


def _chat_stream(endpoint: str, model: str, usage: dict[str, Any] | None, chunks: int, include: bool) -> list[bytes]:
    base: dict[str, Any] = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model,
                            "object": "text_completion" if endpoint == "completions" else "chat.completion.chunk"}
    events = []
    for i in range(chunks + 1):
        last = i == chunks
        if endpoint == "completions":
            choice: dict[str, Any] = {"index": 0, "text": "" if last else f"tok{i} ",
                                      "finish_reason": "stop" if last else None}
        else:
            choice = {"index": 0, "delta": {} if last else {"content": f"tok{i} "},
                      "finish_reason": "stop" if last else None}
        chunk = dict(base, choices=[choice])
        if include:
            chunk["usage"] = None
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    if usage is not None:
        events.append(b"data: " + json.dumps(dict(base, choices=[], usage=usage)).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _responses_stream(model: str, usage: dict[str, Any] | None, chunks: int) -> list[bytes]:
    def event(kind: str, payload: dict[str, Any], number: int) -> bytes:
        return (f"event: {kind}\n".encode() + b"data: "
                + json.dumps(dict(payload, type=kind, sequence_number=number)).encode() + b"\n\n")

    created = dict(_response_object(model, "in_progress"), output=[], usage=None)
    events = [event("response.created", {"response": created}, 0)]
    for i in range(chunks):
        events.append(event("response.output_text.delta", {"item_id": "msg_fake", "output_index": 0,
                                                           "content_index": 0, "delta": f"tok{i} "}, i + 1))
    done = _response_object(model, "completed")
    if usage is not None:
        done["usage"] = usage
    events.append(event("response.completed", {"response": done}, chunks + 1))
    return events
