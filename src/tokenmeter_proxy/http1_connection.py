"""One upstream connection of the HTTP/1.1 client (`http1.py` holds the pool): asyncio
Protocols fed straight to httptools' parser.

What it costs per request: one serialised head, one write, one parser feed per read and one
future per wait. No timer per request or per chunk: each connection has one read-timeout
handle, which looks at the time of the last read only when it fires, and reschedules itself.

    Connection      one socket: writes the request, feeds the parser, pauses when unread bytes pile up
    Http1Response   status, raw headers, and the body chunks as the parser hands them over
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol, cast

import httptools

from .errors import UpstreamError, UpstreamTimeout

Headers = list[tuple[bytes, bytes]]  # raw names and values, as the `Upstream` interface (upstream.py) passes them
Body = bytes | AsyncIterator[bytes]

PAUSE_ABOVE = 256 * 1024  # unconsumed body bytes at which the socket stops being read
RESUME_BELOW = 64 * 1024
_ONE_WRITE = 64 * 1024  # a bytes body up to this size goes out in the same write as the head
# A reused connection that fails within this long of the request is one the server had closed.
STALE_WINDOW_SECONDS = 0.25


class Pool(Protocol):
    """What a connection needs of the pool it belongs to."""

    read_timeout: float
    write_timeout: float

    def release(self, connection: Connection) -> None: ...

    def dropped(self, connection: Connection) -> None: ...


class StaleConnection(UpstreamError):
    """A reused connection ended before any response byte: the server had closed it."""


class Http1Response:
    """A response whose body has not been read: iterate it for chunks as they arrive, then
    `aclose()`. Its connection goes back to the pool as soon as the body's last byte is read
    from the socket; closing the response before that closes the connection."""

    __slots__ = ("_buffered", "_chunks", "_connection", "_done", "_error", "_loop", "_waiter", "headers", "status")

    def __init__(self, connection: Connection) -> None:
        self.status = 0
        self.headers: Headers = []
        self._connection: Connection | None = connection
        self._loop = connection.loop
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def __aiter__(self) -> Http1Response:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                connection = self._connection
                if connection is not None and connection.read_paused and self._buffered < RESUME_BELOW:
                    connection.resume_reading()
                return chunk
            if self._done:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            except BaseException:
                self._abandon()  # see wait()
                raise

    async def aclose(self) -> None:
        """Done with the response; if its body is still arriving, the connection is closed."""
        if not self._done:
            self._abandon()
        self._chunks.clear()

    async def wait(self) -> None:
        """Until the connection has news. Cancelled, the response is cut short: a connection
        with half a response on it is of no use to anyone."""
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            connection.response = None
            connection.close()
        if not self._done and self._error is None:
            self._error = UpstreamError("the response was closed before its end")

    def start(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers
        self.wake()

    def feed(self, chunk: bytes) -> bool:
        """Hold a body chunk for the reader; True when too much is held."""
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return self._buffered > PAUSE_ABOVE

    def end(self, error: UpstreamError | None = None) -> None:
        """The body is complete, or (`error`) broke off; the connection is no longer ours."""
        self._connection = None
        if error is None:
            self._done = True
        elif self._error is None:
            self._error = error
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class Connection(asyncio.Protocol):
    """One connection: one exchange at a time, its bytes fed straight to httptools."""

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Http1Response | None = None
        self.received: Headers = []
        self.closed = False
        self.reused = False  # has answered before: it may have been closed by the server while idle
        self.in_pool = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self.silent = True  # no byte of the current response yet
        self.head_only = False
        self.interim = False  # a 1xx response is being parsed; the real one follows
        self.keep_alive = False
        self.request_sent = False
        self.uploading = False
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    async def exchange(self, head: bytes, body: Body, *, head_only: bool, declared: int | None = None) -> Http1Response:
        """Write the request and wait for the response's head. A streamed body is sent as
        `declared` bytes, or chunked when that is None."""
        response = self.response = Http1Response(self)
        self.head_only = head_only
        self.silent = True
        self.request_sent = False
        self.last_read = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(self.last_read + self.pool.read_timeout, self._check_silence)
        sent_at = self.loop.time()
        try:
            transport = self.transport
            assert transport is not None
            if transport.is_closing():  # closed by the server a moment ago; the loop has not said so yet
                raise UpstreamError("the upstream closed the connection before the request was sent")
            if isinstance(body, bytes):
                if len(body) <= _ONE_WRITE:
                    transport.write(head + body)
                else:
                    transport.write(head)
                    transport.write(body)
                self.request_sent = True
                sent_at = self.loop.time()
                if self.write_paused:
                    await self._drain()
            else:
                await self._upload(transport, head, body, declared)
            while not response.status:
                if response._error is not None:
                    raise response._error
                await response.wait()
        except UpstreamError as exc:
            response._abandon()
            # A pooled connection the server closed while idle fails at once: send again on a new
            # one. One that fails later may have had the request processed (an LLM call billed):
            # sending it again would bill it twice, so that is an error for the client to see.
            at_once = not self.request_sent or self.loop.time() - sent_at < STALE_WINDOW_SECONDS
            if self.reused and self.silent and at_once and not isinstance(exc, UpstreamTimeout):
                raise StaleConnection(str(exc)) from exc
            raise
        except BaseException:
            response._abandon()
            raise
        return response

    async def _upload(self, transport: asyncio.Transport, head: bytes, body: AsyncIterator[bytes],
                      declared: int | None) -> None:
        """Stream the body, `declared` bytes long or else chunked. Stops early if the connection
        ends or the response is already complete."""
        chunked = declared is None
        sent = 0
        self.uploading = True
        try:
            transport.write(head)
            async for chunk in body:
                if self.closed or self.response is None or transport.is_closing():
                    return
                sent += len(chunk)
                if chunked:
                    if chunk:
                        transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                elif declared is not None and sent > declared:
                    raise UpstreamError(f"the request body is longer than its content-length ({declared} bytes)")
                else:
                    transport.write(chunk)
                if self.write_paused:
                    await self._drain()
            if self.closed or self.response is None or transport.is_closing():
                return
            if chunked:
                transport.write(b"0\r\n\r\n")
            elif sent != declared:
                raise UpstreamError(f"the request body was {sent} bytes, its content-length said {declared}")
            self.request_sent = True
        finally:
            self.uploading = False
            self.last_read = self.loop.time()  # the silence to time starts now

    async def _drain(self) -> None:
        waiter = self.drain_waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(self.pool.write_timeout):
                await waiter
        except TimeoutError:
            raise UpstreamTimeout(f"the upstream took no request bytes for {self.pool.write_timeout:g} s") from None
        finally:
            self.drain_waiter = None

    def close(self) -> None:
        """Close the connection now and take it out of the pool (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        self.pool.dropped(self)

    def _finish(self, error: UpstreamError | None = None) -> None:
        """The exchange is over: back to the pool if it ended cleanly and may go on, else closed."""
        response = self.response
        if response is None:
            return
        self.response = None
        response.end(error)
        if error is None and self.keep_alive and self.request_sent and not self.closed:
            if self.read_paused:
                self.resume_reading()
            self.pool.release(self)
        else:
            self.close()

    def resume_reading(self) -> None:
        self.read_paused = False
        self.last_read = self.loop.time()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _check_silence(self) -> None:
        """The read timeout: fires at most once per timeout period, whatever the traffic."""
        self.timer = None
        response = self.response
        if response is None or self.closed:
            return  # idle: the next exchange arms it again
        now = self.loop.time()
        timeout = self.pool.read_timeout
        if self.uploading or self.read_paused or response._chunks:
            deadline = now + timeout  # waiting on our side, not the upstream's
        else:
            deadline = self.last_read + timeout
            if deadline <= now:
                what = "nothing more of its response" if response.status else "no response"
                self._finish(UpstreamTimeout(f"the upstream sent {what} for {timeout:g} s"))
                return
        self.timer = self.loop.call_at(deadline, self._check_silence)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses. Both loops set TCP_NODELAY.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        if self.response is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self.silent = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.keep_alive = False  # a 101 we never asked for: its head was the whole response
            self._finish()
        except httptools.HttpParserError as exc:
            self._finish(UpstreamError(f"the upstream's response is not valid HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        response = self.response
        if response is not None:
            reason = f": {exc}" if exc else ""
            if self.silent:
                self._finish(UpstreamError(f"the upstream closed the connection before responding{reason}"))
            elif response.status and exc is None and _ends_at_close(response.headers, self.interim):
                self.keep_alive = False
                self._finish()  # a body without length or chunks ends when the connection does
            else:
                self._finish(UpstreamError(f"the upstream closed the connection mid-response{reason}"))
        self.close()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.received = []
        if self.response is None:
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.received.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: the real response follows
            return
        self.keep_alive = self.parser.should_keep_alive() and not self.head_only
        response.start(status, self.received)
        if self.head_only:
            self._finish()  # the head is all of it; the connection is not reused (see keep_alive)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None and response.feed(body) and not self.read_paused:
            self.read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        else:
            self._finish()


def _ends_at_close(headers: Headers, interim: bool) -> bool:
    """Whether a body has neither length nor chunks, so that its end is the connection's."""
    if interim:
        return False
    return not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)

