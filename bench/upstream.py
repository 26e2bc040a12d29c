"""A fast fake OpenAI upstream for benchmarks: asyncio + httptools, keep-alive, no framework.

Chat completions as JSON or SSE (with the usage chunk when `stream_options.include_usage` is
set). Headers steer it: x-bench-chunks (20), x-bench-interval-ms (50), x-bench-prompt-tokens
(42), x-bench-completion-tokens (17), x-bench-status (200).

    python bench/upstream.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httptools

try:
    import uvloop
except ImportError:  # plain asyncio works too, a little slower
    uvloop = None


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        headers, body = self.headers, b"".join(self.body)
        self.headers, self.body = {}, []
        asyncio.get_running_loop().create_task(self.answer(headers, body))

    async def answer(self, headers: dict[bytes, bytes], body: bytes) -> None:
        status = int(headers.get(b"x-bench-status", b"200"))
        if status != 200:
            self.send(status, b"application/json", b'{"error":{"message":"bench failure","type":"server_error"}}')
            return
        try:
            # a huge prompt is not parsed: the fake must not slow the requests beside it
            request = json.loads(body) if body and len(body) < 65_536 else {"stream": b'"stream":true' in body}
        except ValueError:
            request = {}
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
        interval = int(headers.get(b"x-bench-interval-ms", b"50")) / 1000
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model}
        for i in range(chunks):
            if self.transport.is_closing():
                return
            chunk = dict(base, choices=[{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}])
            if include:
                chunk["usage"] = None
            self.write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(interval)
        if include:
            self.write_chunk(b"data: " + json.dumps(dict(base, choices=[], usage=usage)).encode() + b"\n\n")
        self.write_chunk(b"data: [DONE]\n\n")
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
