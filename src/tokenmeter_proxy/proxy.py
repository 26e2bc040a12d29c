"""The forwarding app: `/<route>/<rest>` goes to `{the route's upstream}/<rest>` (and `/v1/<rest>` to
`{TOKENMETER_UPSTREAM}/<rest>`), and the answer comes back byte for byte, streamed as it arrives.
It knows nothing of metering; the middleware does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from .asgi import ROUTE, UPSTREAM_FAILURE, Receive, Scope, Send, send_json
from .errors import UpstreamError, UpstreamTimeout, body_too_large, openai_error
from .routes import Route
from .upstream import Body, Headers, Upstream, error_response, path_below, request_headers, response_headers

log = logging.getLogger(__name__)


class ForwardingApp:
    """A raw ASGI app that relays each request to the upstream of its route (in the scope, put
    there by the app's dispatch; `route` otherwise). Upstreams are fixed by configuration: no
    request can send the proxy anywhere else.

    When the client disconnects, the upstream request is closed at once, whether the
    upstream is still thinking or halfway through a stream.
    """

    def __init__(
        self, upstreams: Callable[[Route], Upstream], *, route: Route, max_body_bytes: int = 52_428_800,
        total_timeout: float | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.route = route
        self.total_timeout = total_timeout
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = scope["headers"]
        route: Route = scope.get(ROUTE) or self.route
        rest = path_below(scope.get("raw_path") or scope["path"].encode(), route.prefix)
        if rest is None:
            await send_json(send, 404, openai_error(
                f"Unknown path: the proxy forwards paths below {route.prefix.decode()}/ without dot segments.",
                type="invalid_request_error", code="unknown_url"))
            return
        length = _content_length(headers)
        if length is not None and length > self.max_body_bytes:
            await self._too_large(send)
            return
        first = await receive()
        if first["type"] != "http.request":
            return  # the client left before sending its body
        first_body: bytes = first.get("body", b"")
        body: Body = first_body
        forwarded, query = _credentials(route, request_headers(headers), scope.get("query_string", b""))
        streamed_upload = first.get("more_body", False)
        if streamed_upload:
            body = self._rest_of_body(first_body, receive)
            if length is not None:  # keep the client's framing: some upstreams refuse chunked uploads
                forwarded.append((b"content-length", str(length).encode()))
        path = route.base_path + rest
        async with _CancelOnDisconnect(receive) as watch:
            if not streamed_upload:
                watch.start()
            await self._exchange(scope, self.upstreams(route), path, query, forwarded, body, send,
                                 watch if streamed_upload else None)

    async def _exchange(
        self, scope: Scope, upstream: Upstream, path: bytes, query: bytes, headers: Headers, body: Body,
        send: Send, watch_later: _CancelOnDisconnect | None,
    ) -> None:
        method = scope["method"]
        started = False
        try:
            async with asyncio.timeout(self.total_timeout):
                try:
                    response = await upstream.send(method, path + (b"?" + query if query else b""), headers, body)
                except _BodyTooLarge:
                    await self._too_large(send)
                    return
                if watch_later is not None:
                    watch_later.start()
                try:
                    await send({"type": "http.response.start", "status": response.status,
                                "headers": response_headers(response.headers)})
                    started = True
                    async for chunk in response:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                finally:
                    await response.aclose()
        except (UpstreamError, TimeoutError) as exc:
            failure = UpstreamTimeout(f"no complete answer within {self.total_timeout} s") if isinstance(
                exc, TimeoutError) else exc
            # the path only: a query string may hold a key (Gemini's ?key=)
            log.warning("upstream %s %s failed: %s", method, path.decode("latin-1"), failure)
            if not started:
                status, error = error_response(failure)
                await send_json(send, status, error)
                return
            # The status line is sent: record the failure, end the body as a client expects of a cut stream.
            scope[UPSTREAM_FAILURE] = error_response(failure)[0]
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _rest_of_body(self, first: bytes, receive: Receive) -> AsyncIterator[bytes]:
        size = len(first)
        yield first
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _BodyTooLarge if size > self.max_body_bytes else UpstreamError("the client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            yield chunk
            if not message.get("more_body", False):
                return

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, body_too_large(self.max_body_bytes))


def _credentials(route: Route, headers: Headers, query: bytes) -> tuple[Headers, bytes]:
    """The headers and query to send: with the route's own key in place of the client's, if it has one."""
    if route.api_key is None:
        return headers, query
    return route.protocol.replace_credential(headers, query, route.api_key, provider=route.provider)


class _BodyTooLarge(Exception):
    """The client's streamed body passed the size limit while it was being forwarded."""


class _CancelOnDisconnect:
    """Cancels the request's task when the client disconnects, and absorbs that cancellation
    on the way out (the technique of `asyncio.timeout()`, with a disconnect for a deadline).
    One watcher task per request: an anyio task group cost about 100 us more.

    After a clean exit the watcher is not cancelled: the response is complete, so its
    `receive()` returns `http.disconnect` (the ASGI spec says so) and it ends on its own.
    A cancelled watcher left ~35 objects in reference cycles (the CancelledError's traceback
    holds its frames), and their collection paused the event loop for up to 100 ms."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.task = asyncio.current_task()
        self.watcher: asyncio.Task[None] | None = None
        self.fired = False
        self.finished = False

    def start(self) -> None:
        self.watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        if self.task is not None and not self.finished:
            self.fired = True
            self.task.cancel()

    async def __aenter__(self) -> _CancelOnDisconnect:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        self.finished = True
        if self.watcher is not None and kind is not None:
            self.watcher.cancel()
        # Ours to absorb only if no one else cancelled the task too (a server shutting down).
        return self.fired and self.task is not None and self.task.uncancel() == 0 and kind is asyncio.CancelledError


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
