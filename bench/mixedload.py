"""Mixed load against a running proxy: N requests at a concurrency, streaming and not, a share
of them answered by the upstream with an error. Prints one JSON line: how many came back as
expected, how many failed because of the proxy (any other status, or a broken connection),
how many records the proxy stored for the run (from its admin API), and by how many tokens its
totals differ from what the upstream reported.

    python bench/mixedload.py --url http://127.0.0.1:8080 --admin-token bench --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import urllib.request
import uuid

import httptools

BODY = json.dumps({"model": "gpt-4o-mini", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "Summarise the quarterly figures. " * 10}]}).encode()
PROMPT_TOKENS, COMPLETION_TOKENS = 42, 17  # what the fake upstream reports for each answered request
STREAM_BODY = json.dumps({"model": "gpt-4o-mini", "stream": True, "max_tokens": 64,
                          "messages": [{"role": "user", "content": "Tell me a short story."}]}).encode()


class Response:
    def __init__(self) -> None:
        self.done = asyncio.Event()

    def on_message_complete(self) -> None:
        self.done.set()


async def worker(host: str, port: int, plan: list[tuple[bool, bool]], session: str,
                 tally: dict[str, int]) -> None:
    reader = writer = None
    while plan:
        stream, failing = plan.pop()
        body = STREAM_BODY if stream else BODY
        extra = b"x-bench-chunks: 5\r\nx-bench-interval-ms: 5\r\n" if stream else b""
        if failing:
            extra += b"x-bench-status: 500\r\n"
        request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"content-type: application/json\r\nauthorization: Bearer sk-bench\r\n"
                   f"x-session-id: {session}\r\ncontent-length: {len(body)}\r\n"
                   f"x-bench-prompt-tokens: {PROMPT_TOKENS}\r\nx-bench-completion-tokens: {COMPLETION_TOKENS}\r\n"
                   ).encode() + extra + b"\r\n" + body
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            response = Response()
            parser = httptools.HttpResponseParser(response)
            writer.write(request)
            while not response.done.is_set():
                data = await asyncio.wait_for(reader.read(65536), 60)  # type: ignore[union-attr]
                if not data:
                    raise ConnectionError("closed mid-response")
                parser.feed_data(data)
            expected = 500 if failing else 200
            tally["expected" if parser.get_status_code() == expected else "proxy_errors"] += 1
            if not parser.should_keep_alive():
                writer.close()
                writer = None
        except (TimeoutError, OSError, httptools.HttpParserError, ConnectionError):
            tally["proxy_errors"] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def run(url: str, requests: int, concurrency: int, stream_share: float, error_share: float,
              session: str) -> dict[str, int]:
    host, port = url.removeprefix("http://").split(":")
    randomness = random.Random(7)
    plan = [(randomness.random() < stream_share, randomness.random() < error_share) for _ in range(requests)]
    tally = {"expected": 0, "proxy_errors": 0, "upstream_errors_injected": sum(failing for _, failing in plan)}
    share = [plan[n::concurrency] for n in range(concurrency)]
    await asyncio.gather(*[worker(host, int(port), part, session, tally) for part in share])
    return tally


def totals_of(url: str, token: str, session: str) -> dict[str, int]:
    """The session's totals as the proxy stored them (requests, input and output tokens)."""
    request = urllib.request.Request(f"{url}/api/usage/sessions/{session}?limit=1",
                                     headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            totals = json.loads(response.read())["totals"]
    except urllib.error.HTTPError:
        return {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    return {name: int(totals[name]) for name in ("requests", "input_tokens", "output_tokens")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--stream-share", type=float, default=0.3)
    parser.add_argument("--error-share", type=float, default=0.05)
    args = parser.parse_args()
    session = f"mixed-{uuid.uuid4().hex[:8]}"
    started = time.time()
    tally = asyncio.run(run(args.url, args.requests, args.concurrency, args.stream_share, args.error_share, session))
    seconds = time.time() - started
    deadline = time.time() + 10  # records are stored just after their responses
    totals = totals_of(args.url, args.admin_token, session)
    while totals["requests"] < args.requests and time.time() < deadline:
        time.sleep(0.2)
        totals = totals_of(args.url, args.admin_token, session)
    answered = args.requests - tally["upstream_errors_injected"]  # an upstream error bills nothing
    tokens_off = (abs(totals["input_tokens"] - answered * PROMPT_TOKENS)
                  + abs(totals["output_tokens"] - answered * COMPLETION_TOKENS))
    print(json.dumps({**tally, "requests": args.requests, "records": totals["requests"],
                      "records_lost": args.requests - totals["requests"], "tokens_off": tokens_off,
                      "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
