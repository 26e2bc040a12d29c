"""The forwarding app: `/v1/<rest>` goes to `{upstream}/<rest>` and the answer comes back
byte for byte, streamed as it arrives. It knows nothing of metering; the middleware does."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import httpx

from .asgi import Receive, Scope, Send, send_json
from .errors import openai_error
from .upstream import error_response, path_below, request_headers, response_headers

log = logging.getLogger(__name__)


class ForwardingApp:
    """A raw ASGI app that relays requests to one fixed upstream through one pooled client.

    When the client disconnects, the upstream request is closed at once, whether the
    upstream is still thinking or halfway through a stream.
    """

    def __init__(
        self, client: httpx.AsyncClient, upstream: str, *, api_key: str | None = None, prefix: str = "/v1",
        max_body_bytes: int = 52_428_800,
    ) -> None:
        self.client = client
        self.upstream = upstream.rstrip("/")
        self.api_key = api_key
        self.prefix = prefix.encode()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = scope["headers"]
        rest = path_below(scope.get("raw_path") or scope["path"].encode(), self.prefix)
        if rest is None:
            await send_json(send, 404, openai_error(
                "Unknown path: the proxy forwards paths below /v1/ without dot segments.",
                type="invalid_request_error", code="unknown_url"))
            return
        length = _content_length(headers)
        if length is not None and length > self.max_body_bytes:
            await self._too_large(send)
            return
        first = await receive()
        if first["type"] != "http.request":
            return  # the client left before sending its body
        content: bytes | AsyncIterator[bytes] = first.get("body", b"")
        forwarded = request_headers(headers, api_key=self.api_key)
        streamed_upload = first.get("more_body", False)
        if streamed_upload:
            content = self._rest_of_body(first.get("body", b""), receive)
            if length is not None:  # keep the client's framing: some upstreams refuse chunked uploads
                forwarded.append((b"content-length", str(length).encode()))
        query: bytes = scope.get("query_string", b"")
        url = self.upstream + rest.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        request = self.client.build_request(scope["method"], url, headers=forwarded, content=content)
        async with anyio.create_task_group() as tasks:
            if not streamed_upload:
                tasks.start_soon(_cancel_on_disconnect, receive, tasks.cancel_scope)
            await self._exchange(request, send, receive, tasks if streamed_upload else None)
            tasks.cancel_scope.cancel()

    async def _exchange(
        self, request: httpx.Request, send: Send, receive: Receive, watch_later: anyio.abc.TaskGroup | None
    ) -> None:
        try:
            response = await self.client.send(request, stream=True)
        except _BodyTooLarge:
            await self._too_large(send)
            return
        except httpx.HTTPError as exc:
            log.warning("upstream request %s %s failed: %r", request.method, request.url, exc)
            status, body = error_response(exc)
            await send_json(send, status, body)
            return
        if watch_later is not None:
            watch_later.start_soon(_cancel_on_disconnect, receive, watch_later.cancel_scope)
        try:
            await send({
                "type": "http.response.start", "status": response.status_code,
                "headers": response_headers(response.headers.raw),
            })
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            # The status line is sent: end the body cleanly, as a client expects of a cut stream.
            log.warning("upstream response to %s %s broke off: %r", request.method, request.url, exc)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _rest_of_body(self, first: bytes, receive: Receive) -> AsyncIterator[bytes]:
        size = len(first)
        yield first
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _BodyTooLarge if size > self.max_body_bytes else httpx.ReadError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            yield chunk
            if not message.get("more_body", False):
                return

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, openai_error(
            f"Request body too large: the limit is {self.max_body_bytes} bytes.",
            type="invalid_request_error", code="request_too_large",
        ))


class _BodyTooLarge(Exception):
    """The client's streamed body passed the size limit while it was being forwarded."""


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
