"""Streaming load: N clients, each opening chat completion streams (or Anthropic message streams,
with --protocol anthropic) back to back on a kept-alive connection, for a duration. Prints one
JSON line: streams, streams/s, time to first byte (first body bytes) p50/p99 in ms, errors.

    python bench/streamload.py --url http://127.0.0.1:8080/v1/chat/completions --streams 256 --duration 8
    python bench/streamload.py --url http://127.0.0.1:8080/anthropic/v1/messages --protocol anthropic
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit

import httptools

PROMPT = [{"role": "user", "content": "Tell me a short story about a lighthouse."}]
# protocol -> (body, credential headers): the same prompt and output limit, each in its own API's shape
REQUESTS = {
    "openai": (json.dumps({"model": "gpt-4o-mini", "stream": True, "max_tokens": 64, "messages": PROMPT}).encode(),
               b"authorization: Bearer sk-bench\r\n"),
    "anthropic": (json.dumps({"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 64,
                              "messages": PROMPT}).encode(),
                  b"x-api-key: sk-ant-bench\r\nanthropic-version: 2023-06-01\r\n"),
}


class Response:
    """Collects one response from the parser's callbacks."""

    def __init__(self) -> None:
        self.first_byte: float | None = None
        self.done = asyncio.Event()

    def on_body(self, _: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    def on_message_complete(self) -> None:
        self.done.set()


async def client(host: str, port: int, path: str, deadline: float, results: dict[str, list[float]],
                 extra: bytes, protocol: str) -> None:
    reader = writer = None
    body, credentials = REQUESTS[protocol]
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n").encode() + credentials + extra + b"\r\n" + body
    n = 0
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            response = Response()
            parser = httptools.HttpResponseParser(response)
            started = time.perf_counter()
            writer.write(request.replace(b"x-session-id: 0", f"x-session-id: {n % 32}".encode()))
            n += 1
            while not response.done.is_set():
                data = await asyncio.wait_for(reader.read(65536), 30)  # type: ignore[union-attr]
                if not data:
                    raise ConnectionError("closed mid-response")
                parser.feed_data(data)
            status = parser.get_status_code()
            if status != 200 or response.first_byte is None:
                results["errors"].append(status)
                continue
            results["ttfb"].append((response.first_byte - started) * 1000)
            if not parser.should_keep_alive():
                writer.close()
                writer = None
        except (TimeoutError, OSError, httptools.HttpParserError, ConnectionError) as exc:
            results["errors"].append(str(exc))
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def run(url: str, streams: int, duration: float, headers: list[str], protocol: str) -> dict[str, object]:
    parts = urlsplit(url)
    extra = b"x-session-id: 0\r\n" + b"".join(f"{line}\r\n".encode() for line in headers)
    results: dict[str, list[float]] = {"ttfb": [], "errors": []}
    started = time.perf_counter()
    await asyncio.gather(*[client(parts.hostname or "127.0.0.1", parts.port or 80, parts.path, started + duration,
                                  results, extra, protocol) for _ in range(streams)])
    elapsed = time.perf_counter() - started
    ttfb = sorted(results["ttfb"])
    return {
        "streams": len(ttfb), "streams_per_s": round(len(ttfb) / elapsed, 2),
        "ttfb_p50_ms": round(statistics.median(ttfb), 3) if ttfb else None,
        "ttfb_p99_ms": round(ttfb[int(len(ttfb) * 0.99) - 1], 3) if ttfb else None,
        "errors": len(results["errors"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--header", action="append", default=[], help="'Name: value' added to every request")
    parser.add_argument("--protocol", choices=sorted(REQUESTS), default="openai")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.streams, args.duration, args.header, args.protocol))))


if __name__ == "__main__":
    main()
