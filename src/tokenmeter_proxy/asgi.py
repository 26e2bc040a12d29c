"""ASGI type names and the one response helper every raw ASGI module uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Set in the scope by the forwarder when the upstream failed after the response had started
# (the client sees a clean end of stream); the middleware records this status instead.
UPSTREAM_FAILURE = "tokenmeter.upstream_failure"
# Set in the scope by the app's dispatch: the `routes.Route` a proxied request came through.
ROUTE = "tokenmeter.route"


async def send_json(send: Send, status: int, body: Any, *, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete JSON response."""
    data = orjson.dumps(body)
    all_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    all_headers.extend(headers or ())
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})
