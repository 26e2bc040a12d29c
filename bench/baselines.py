"""Naive pass-through proxies, the yardsticks a metering proxy must beat: Starlette with one
pooled `httpx.AsyncClient`, or with one `aiohttp.ClientSession`, relaying bytes and metering
nothing.

    python bench/baselines.py naive_httpx --port 9001 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "te", "upgrade"}


def naive_httpx(upstream: str) -> Starlette:
    client = httpx.AsyncClient(timeout=600)

    async def forward(request: Request) -> StreamingResponse:
        headers = [(k, v) for k, v in request.headers.items() if k not in HOP]
        upstream_request = client.build_request(request.method, upstream + request.url.path[3:],
                                                headers=headers, content=await request.body())
        response = await client.send(upstream_request, stream=True)
        return StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                 headers={k: v for k, v in response.headers.items() if k not in HOP},
                                 background=BackgroundTask(response.aclose))

    return Starlette(routes=[Route("/v1/{path:path}", forward, methods=["GET", "POST"])])


def naive_aiohttp(upstream: str) -> Starlette:
    sessions: list[aiohttp.ClientSession] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession(auto_decompress=False))
        yield
        await sessions[0].close()

    async def forward(request: Request) -> StreamingResponse:
        headers = {k: v for k, v in request.headers.items() if k not in HOP}
        response = await sessions[0].request(request.method, upstream + request.url.path[3:], headers=headers,
                                             data=await request.body())

        async def body() -> AsyncIterator[bytes]:
            async for chunk in response.content.iter_any():
                yield chunk

        return StreamingResponse(body(), status_code=response.status,
                                 headers={k: v for k, v in response.headers.items() if k.lower() not in HOP},
                                 background=BackgroundTask(response.release))

    return Starlette(routes=[Route("/v1/{path:path}", forward, methods=["GET", "POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["naive_httpx", "naive_aiohttp"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = {"naive_httpx": naive_httpx, "naive_aiohttp": naive_aiohttp}[args.kind](args.upstream)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
