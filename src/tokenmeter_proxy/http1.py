"""A lean HTTP/1.1 client for the one upstream: asyncio Protocols, httptools' parser and a
keep-alive pool, and nothing else (no proxies, cookies, redirects or decompression: bytes
pass as they are).

What it costs per request: one serialised head, one write, one parser feed per read and one
future per wait. No timer per request or per chunk: each connection has one read-timeout
handle, which looks at the time of the last read only when it fires, and reschedules itself.

    Http1Upstream   the pool: idle connections (LIFO), a cap on open ones, send()
    _Connection     one socket: writes the request, feeds the parser, pauses when unread bytes pile up
    Http1Response   status, raw headers, and the body chunks as the parser hands them over
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

from .errors import UpstreamError, UpstreamTimeout

Headers = list[tuple[bytes, bytes]]  # as in upstream.py, whose `Upstream` interface this implements
Body = bytes | AsyncIterator[bytes]

PAUSE_ABOVE = 256 * 1024  # unconsumed body bytes at which the socket stops being read
RESUME_BELOW = 64 * 1024
_SET_BY_US = frozenset({b"host", b"content-length", b"transfer-encoding"})
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # no `content-length: 0` when empty
_ONE_WRITE = 64 * 1024  # a bytes body up to this size goes out in the same write as the head
# A reused connection that fails within this long of the request is one the server had closed.
STALE_WINDOW_SECONDS = 0.25


class _Stale(UpstreamError):
    """A reused connection ended before any response byte: the server had closed it."""


class Http1Upstream:
    """Carries requests to one origin (`http[s]://host[:port]`) over pooled HTTP/1.1 connections.

    `read_timeout` is the longest silence while awaiting the response or its next bytes;
    `write_timeout` the longest the upstream may leave request bytes unread. Connections
    idle longer than `keepalive_expiry` seconds are closed."""

    def __init__(
        self, origin: str, *, connect_timeout: float = 10.0, read_timeout: float = 600.0,
        write_timeout: float = 60.0, max_connections: int = 1000, keepalive_expiry: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"an origin is http[s]://host[:port], not {origin!r}")
        default_port = 443 if parts.scheme == "https" else 80
        self.origin = origin
        self.host = parts.hostname
        self.port = parts.port or default_port
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (name if self.port == default_port else f"{name}:{self.port}").encode("idna")
        if parts.scheme == "https" and ssl_context is None:
            ssl_context = ssl.create_default_context()
            ssl_context.set_alpn_protocols(["http/1.1"])
        self.ssl_context = ssl_context if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.open = 0  # connections open or opening, idle ones included
        self.idle: deque[_Connection] = deque()  # oldest first; taken from the right (LIFO)
        self.connections: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(self, method: str, target: bytes, headers: Headers, body: Body) -> Http1Response:
        """Send the request; return once the response's status and headers are in."""
        head, declared = self._head(method, target, headers, body)
        head_only = method == "HEAD"
        if not isinstance(body, bytes):
            # A streamed body cannot be sent twice, so it never risks an idle connection the
            # server may be closing at this very moment: it gets a new one.
            connection = await self._acquire(reuse=False)
            return await connection.exchange(head, body, head_only=head_only, declared=declared)
        connection = await self._acquire(reuse=True)
        if connection.reused:
            try:
                return await connection.exchange(head, body, head_only=head_only)
            except _Stale:
                connection = await self._acquire(reuse=False)  # once, on a new connection
        return await connection.exchange(head, body, head_only=head_only)

    async def aclose(self) -> None:
        """Close every connection, idle or busy."""
        for connection in list(self.connections):
            connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _head(self, method: str, target: bytes, headers: Headers, body: Body) -> tuple[bytes, int | None]:
        """The request line and headers, and for a streamed body the length it declares (None:
        chunked). `host` and the body's framing are ours to set."""
        parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", self.host_header]
        length = None
        for name, value in headers:
            lowered = name.lower()
            if lowered in _SET_BY_US:
                if lowered == b"content-length":
                    length = value
                continue
            parts += (b"\r\n", name, b": ", value)
        lines = (len(parts) - 5) // 4 + 3  # request line, host, the others, the blank line
        if isinstance(body, bytes):
            if body or method not in _NO_BODY_METHODS:
                parts.append(b"\r\ncontent-length: %d" % len(body))
                lines += 1
        elif length is None:
            parts.append(b"\r\ntransfer-encoding: chunked")
            lines += 1
        elif length.isdigit():
            parts += (b"\r\ncontent-length: ", length)
            lines += 1
        else:
            raise UpstreamError(f"the request's content-length is not a number: {length!r}; it was not sent")
        parts.append(b"\r\n\r\n")
        head = b"".join(parts)
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise UpstreamError("a request header or the path holds a line break; the request was not sent")
        return head, int(length) if length is not None and not isinstance(body, bytes) else None

    async def _acquire(self, *, reuse: bool) -> _Connection:
        """An idle connection (the one used last) when `reuse`, else a new one, within the cap."""
        while True:
            if reuse and self.idle:
                connection = self.idle.pop()
                connection.in_pool = False
                return connection
            if self.open < self.max_connections:
                return await self._connect()
            if self.idle:  # make room: the oldest idle connection goes
                self.idle[0].close()
                continue
            await self._wait_for_room()

    async def _connect(self) -> _Connection:
        loop = self._loop or self._bind()
        connection = _Connection(self, loop)
        self.open += 1
        self.connections.add(connection)
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: connection, self.host, self.port, ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context is not None else None,
                )
        except TimeoutError:
            connection.close()
            raise UpstreamTimeout(f"no connection to {self.origin} within {self.connect_timeout:g} s") from None
        except OSError as exc:
            connection.close()
            raise UpstreamError(f"cannot connect to {self.origin}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        connection.transport = transport  # uvloop calls connection_made() only on its next turn
        return connection

    def _bind(self) -> asyncio.AbstractEventLoop:
        # The pool belongs to the loop that first uses it (the app is built before its loop runs).
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def _wait_for_room(self) -> None:
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await waiter
        except TimeoutError:
            raise UpstreamTimeout(f"all {self.max_connections} connections to {self.origin} stayed busy for "
                                  f"{self.connect_timeout:g} s") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # the room it was given goes to the next in line
            raise
        finally:
            if not waiter.done():
                self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def release(self, connection: _Connection) -> None:
        """A connection whose exchange ended cleanly goes back to the pool."""
        connection.reused = True
        connection.in_pool = True
        connection.idle_since = connection.last_read  # the response's last bytes were just read
        self.idle.append(connection)
        if self._sweeper is None:
            self._sweeper = connection.loop.call_at(connection.idle_since + self.keepalive_expiry, self._sweep)
        if self._waiters:
            self._wake_one()

    def dropped(self, connection: _Connection) -> None:
        """A connection closed (by either side): it leaves the pool and frees its place."""
        self.open -= 1
        self.connections.discard(connection)
        if connection.in_pool:
            connection.in_pool = False
            self.idle.remove(connection)
        if self._waiters:
            self._wake_one()

    def _sweep(self) -> None:
        """Close the connections idle longer than the expiry; come back when the next one is."""
        assert self._loop is not None
        self._sweeper = None
        limit = self._loop.time() - self.keepalive_expiry + 0.01
        while self.idle and self.idle[0].idle_since <= limit:
            self.idle[0].close()
        if self.idle:
            self._sweeper = self._loop.call_at(self.idle[0].idle_since + self.keepalive_expiry, self._sweep)


class Http1Response:
    """A response whose body has not been read: iterate it for chunks as they arrive, then
    `aclose()`. Its connection goes back to the pool as soon as the body's last byte is read
    from the socket; closing the response before that closes the connection."""

    __slots__ = ("_buffered", "_chunks", "_connection", "_done", "_error", "_loop", "_waiter", "headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.headers: Headers = []
        self._connection: _Connection | None = connection
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


class _Connection(asyncio.Protocol):
    """One connection: one exchange at a time, its bytes fed straight to httptools."""

    def __init__(self, pool: Http1Upstream, loop: asyncio.AbstractEventLoop) -> None:
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
                raise _Stale(str(exc)) from exc
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

