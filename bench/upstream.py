"""A fast fake OpenAI and Anthropic upstream for benchmarks: asyncio + httptools, keep-alive, no
framework.

Chat completions as JSON or SSE (with the usage chunk when `stream_options.include_usage` is
set), and Anthropic's `POST /v1/messages` as JSON or SSE with as many events as the chat stream
a metering proxy reads. Headers steer it: x-bench-chunks (20), x-bench-interval-ms (50),
x-bench-prompt-tokens (42), x-bench-completion-tokens (17), x-bench-status (200).

    python bench/upstream.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import httptools

try:
    import uvloop
except ImportError:  # plain asyncio works too, a little slower
    uvloop = None


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path, headers, body = self.url.split(b"?")[0], self.headers, b"".join(self.body)
        self.url, self.headers, self.body = b"", {}, []
        asyncio.get_running_loop().create_task(self.answer(path, headers, body))

    async def answer(self, path: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        status = int(headers.get(b"x-bench-status", b"200"))
        if status != 200:
            self.send(status, b"application/json", b'{"error":{"message":"bench failure","type":"server_error"}}')
            return
        try:
            # a huge prompt is not parsed: the fake must not slow the requests beside it
            request = json.loads(body) if body and len(body) < 65_536 else {"stream": b'"stream":true' in body}
        except ValueError:
            request = {}
        if path.endswith(b"/v1/messages"):
            await self.messages(request, headers)
            return
        model = request.get("model", "gpt-4o-mini")
        usage = {"prompt_tokens": int(headers.get(b"x-bench-prompt-tokens", b"42")),
                 "completion_tokens": int(headers.get(b"x-bench-completion-tokens", b"17"))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not request.get("stream"):
            self.send(200, b"application/json", json.dumps({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bench reply."},
                             "finish_reason": "stop"}], "usage": usage}).encode())
            return
        await self.stream(model, usage, headers, bool((request.get("stream_options") or {}).get("include_usage")))

    async def stream(self, model: str, usage: dict[str, int], headers: dict[bytes, bytes], include: bool) -> None:
        chunks = int(headers.get(b"x-bench-chunks", b"20"))
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model}
        events = []
        for i in range(chunks):
            chunk = dict(base, choices=[{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}])
            if include:
                chunk["usage"] = None
            events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if include:
            events.append(b"data: " + json.dumps(dict(base, choices=[], usage=usage)).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        await self.relay(events, paced=chunks, headers=headers)

    async def messages(self, request: dict[str, Any], headers: dict[bytes, bytes]) -> None:
        """Anthropic's Messages API. Its stream has as many SSE events as the chat stream a metering
        proxy reads (x-bench-chunks content chunks + the usage chunk it asks for + [DONE], 22 by
        default), paced alike (a pause after each of the first x-bench-chunks events, the last two
        together), so CPU per stream compares like with like: message_start, content_block_start,
        ping, x-bench-chunks - 4 text deltas, content_block_stop, message_delta, message_stop."""
        chunks = int(headers.get(b"x-bench-chunks", b"20"))
        model = request.get("model", "claude-sonnet-4-5")
        output = int(headers.get(b"x-bench-completion-tokens", b"17"))
        usage = {"input_tokens": int(headers.get(b"x-bench-prompt-tokens", b"42")), "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        message = {"id": "msg_bench", "type": "message", "role": "assistant", "model": model, "stop_sequence": None}
        if not request.get("stream"):
            self.send(200, b"application/json", json.dumps(dict(
                message, content=[{"type": "text", "text": "Bench reply."}], stop_reason="end_turn",
                usage=dict(usage, output_tokens=output))).encode())
            return
        events = [("message_start", {"type": "message_start", "message": dict(
                      message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
                  ("ping", {"type": "ping"})]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": f"word{i} "}})
                   for i in range(max(chunks - 4, 1))]
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                         "stop_sequence": None},
                                      "usage": {"output_tokens": output}}),
                   ("message_stop", {"type": "message_stop"})]
        await self.relay([f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events],
                         paced=chunks, headers=headers)

    async def relay(self, events: list[bytes], *, paced: int, headers: dict[bytes, bytes]) -> None:
        """An SSE response, one chunked write per event, pausing x-bench-interval-ms after each of
        the first `paced` events; the rest follow at once."""
        interval = int(headers.get(b"x-bench-interval-ms", b"50")) / 1000
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
        for i, event in enumerate(events):
            if self.transport.is_closing():
                return
            self.write_chunk(event)
            if i < paced:
                await asyncio.sleep(interval)
        if not self.transport.is_closing():
            self.transport.write(b"0\r\n\r\n")

    def write_chunk(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))

    def send(self, status: int, content_type: bytes, body: bytes) -> None:
        reason = b"OK" if status == 200 else b"Error"
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
            status, reason, content_type, len(body), body))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    if uvloop is not None:
        uvloop.run(serve(port))
    else:
        asyncio.run(serve(port))


if __name__ == "__main__":
    main()
