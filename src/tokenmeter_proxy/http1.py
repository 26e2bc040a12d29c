"""A lean HTTP/1.1 client for one upstream origin: a keep-alive pool of asyncio connections
(`http1_connection.py`) parsed by httptools, optionally through a forward proxy
(`http1_tunnel.py`), and nothing else (no cookies, redirects or decompression: bytes pass as they are).

    Http1Upstream   the pool: idle connections (LIFO), a cap on open ones, send()
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

from .errors import UpstreamError, UpstreamTimeout
from .http1_connection import Body, Connection, Headers, Http1Response, StaleConnection
from .http1_tunnel import ForwardProxy, open_tunnel

_SET_BY_US = frozenset({b"host", b"content-length", b"transfer-encoding"})
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # no `content-length: 0` when empty


class Http1Upstream:
    """Carries requests to one origin (`http[s]://host[:port]`) over pooled HTTP/1.1 connections.

    `read_timeout` is the longest silence while awaiting the response or its next bytes;
    `write_timeout` the longest the upstream may leave request bytes unread. Connections
    idle longer than `keepalive_expiry` seconds are closed. With `proxy`, an https origin is
    reached through a CONNECT tunnel and an http one is sent requests in absolute form."""

    def __init__(
        self, origin: str, *, connect_timeout: float = 10.0, read_timeout: float = 600.0,
        write_timeout: float = 60.0, max_connections: int = 1000, keepalive_expiry: float = 15.0,
        ssl_context: ssl.SSLContext | None = None, proxy: ForwardProxy | None = None,
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
        self._authority = f"{name}:{self.port}".encode("idna")  # what a CONNECT asks for
        self._use_proxy(proxy, https=parts.scheme == "https")
        if parts.scheme == "https" and ssl_context is None:
            ssl_context = ssl.create_default_context()
            ssl_context.set_alpn_protocols(["http/1.1"])
        self.ssl_context = ssl_context if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.idle: deque[Connection] = deque()  # oldest first; taken from the right (LIFO)
        self.connections: set[Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _use_proxy(self, proxy: ForwardProxy | None, *, https: bool) -> None:
        self.proxy = proxy
        self.tunnel = proxy is not None and https
        self._via = f" through the forward proxy {proxy.address} ({proxy.variable})" if proxy else ""
        # Precomputed, so that a request costs the same with or without a proxy: an http origin
        # behind a proxy is asked `POST http://host/path`, with the proxy's credentials.
        self._absolute = b"http://" + self.host_header if proxy is not None and not https else b""
        self._request_rest = b" HTTP/1.1\r\nhost: " + self.host_header
        self._head_lines = 3  # request line, host, the blank line
        if self._absolute and proxy is not None and proxy.authorization is not None:
            self._request_rest += b"\r\nproxy-authorization: " + proxy.authorization
            self._head_lines += 1

    @property
    def open(self) -> int:
        """Connections open or opening, idle ones included."""
        return len(self.connections)

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
            except StaleConnection:
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
        parts = [method.encode("ascii"), b" ", self._absolute, target, self._request_rest]
        length = None
        for name, value in headers:
            lowered = name.lower()
            if lowered in _SET_BY_US:
                if lowered == b"content-length":
                    length = value
                continue
            parts += (b"\r\n", name, b": ", value)
        lines = (len(parts) - 5) // 4 + self._head_lines  # ours, and one per header
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

    async def _acquire(self, *, reuse: bool) -> Connection:
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

    async def _connect(self) -> Connection:
        loop = self._loop or self._bind()
        connection = Connection(self, loop)
        self.connections.add(connection)
        try:
            async with asyncio.timeout(self.connect_timeout):  # the proxy's handshake and TLS's included
                transport = await self._open(loop, connection)
        except TimeoutError:
            connection.close()
            raise UpstreamTimeout(f"no connection to {self.origin}{self._via} within "
                                  f"{self.connect_timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise UpstreamError(_unverified(self.origin, exc)) from exc
        except OSError as exc:
            connection.close()
            if self.proxy is not None and not self.tunnel:  # the connection was to the proxy
                raise self.proxy.unreachable(exc) from exc
            raise UpstreamError(f"cannot connect to {self.origin}{self._via}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        connection.transport = transport  # uvloop calls connection_made() only on its next turn
        return connection

    async def _open(self, loop: asyncio.AbstractEventLoop, connection: Connection) -> asyncio.Transport:
        """A transport to the origin (through a tunnel), or to the proxy (absolute form), for `connection`."""
        server_hostname = self.host if self.ssl_context is not None else None
        if self.tunnel:
            assert self.proxy is not None
            sock = await open_tunnel(loop, self.proxy, self._authority)
            # from here the loop owns the socket, and closes it if TLS fails or is cancelled
            transport, _ = await loop.create_connection(lambda: connection, sock=sock, ssl=self.ssl_context,
                                                        server_hostname=server_hostname)
        else:
            host, port = (self.proxy.host, self.proxy.port) if self.proxy is not None else (self.host, self.port)
            transport, _ = await loop.create_connection(lambda: connection, host, port, ssl=self.ssl_context,
                                                        server_hostname=server_hostname)
        return transport

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

    def release(self, connection: Connection) -> None:
        """A connection whose exchange ended cleanly goes back to the pool."""
        connection.reused = True
        connection.in_pool = True
        connection.idle_since = connection.last_read  # the response's last bytes were just read
        self.idle.append(connection)
        if self._sweeper is None:
            self._sweeper = connection.loop.call_at(connection.idle_since + self.keepalive_expiry, self._sweep)
        if self._waiters:
            self._wake_one()

    def dropped(self, connection: Connection) -> None:
        """A connection closed (by either side): it leaves the pool and frees its place."""
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


def _unverified(origin: str, exc: ssl.SSLCertVerificationError) -> str:
    """What a certificate that failed verification means, and what to do about it."""
    if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
        hint = "it was issued for another name: check the host in the upstream URL"
    elif exc.verify_code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        hint = "it has expired, or this machine's clock is wrong"
    else:
        hint = ("if a private certificate authority signed it (or a proxy that inspects TLS re-signs it), "
                "name that authority's PEM file in TOKENMETER_UPSTREAM_CA_BUNDLE")
    return (f"the certificate of {origin} could not be verified ({exc.verify_message}, "
            f"CERTIFICATE_VERIFY_FAILED): {hint}")
