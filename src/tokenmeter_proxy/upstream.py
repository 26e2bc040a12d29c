"""The upstream connection: who carries requests to an upstream origin, which headers cross, and
how failures read. The client is chosen here (`create_upstream`) and nowhere else, with the
certificate authorities it trusts and the forward proxy it goes through.

The forwarder sees only the small `Upstream` interface below. Two implementations:
`Http1Upstream` (production, in http1.py: our own HTTP/1.1 client on asyncio and httptools,
cheaper per request and per chunk than aiohttp's, with a pool whose cost does not grow with
open connections, unlike httpcore's, httpx issue #3215) and `HttpxUpstream`, which puts any
httpx transport behind the same interface (tests fake the upstream with `httpx.MockTransport`
or `httpx.ASGITransport`).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes, urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed

import httpx

from .config import Settings
from .errors import ConfigError, UpstreamError, UpstreamTimeout, openai_error
from .http1 import Http1Upstream
from .http1_connection import Body as Body
from .http1_connection import Headers as Headers
from .http1_tunnel import ForwardProxy
from .routes import Route

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})


class UpstreamResponse(Protocol):
    """A response whose body has not been read: iterate it for chunks as they arrive, then
    `aclose()` (closing early drops the connection, so the upstream stops)."""

    status: int
    headers: Headers

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    """Carries requests to one origin. `target` is the path and query (`/v1/models?x=1`).
    A streamed `body` is sent with the `content-length` in `headers`, else chunked.
    Raises `UpstreamTimeout` or `UpstreamError`, also while a body is read."""

    async def send(self, method: str, target: bytes, headers: Headers, body: Body) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `read` is the longest silence while waiting for a response or its next bytes:
    a reasoning model may think for minutes before its first byte."""

    connect: float = 10.0
    read: float = 600.0
    write: float = 60.0


def create_upstream(settings: Settings, origin: str, transport: httpx.AsyncBaseTransport | None = None) -> Upstream:
    """The client for `origin` (`scheme://host[:port]`, see `origin_of`); with `transport`, that
    httpx transport instead. Raises `ConfigError` when the CA bundle or the proxy URL is unusable."""
    timeouts = Timeouts(connect=settings.upstream_connect_timeout, read=settings.upstream_read_timeout,
                        write=settings.upstream_write_timeout)
    if transport is not None:
        return HttpxUpstream(transport, origin, timeouts=timeouts)
    https = origin.startswith("https:")
    return Http1Upstream(origin, connect_timeout=timeouts.connect, read_timeout=timeouts.read,
                         write_timeout=timeouts.write, max_connections=settings.upstream_max_connections,
                         ssl_context=tls_context(settings.upstream_ca_bundle) if https else None,
                         proxy=forward_proxy(settings, origin))


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verifies upstream certificates against the system's authorities, and `ca_bundle`'s when set."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"TOKENMETER_UPSTREAM_CA_BUNDLE names {str(ca_bundle)!r}, whose certificates "
                              f"cannot be loaded: {exc}") from None
    return context


def forward_proxy(settings: Settings, origin: str) -> ForwardProxy | None:
    """The proxy on the way to `origin`: `HTTPS_PROXY` for https, `HTTP_PROXY` for http, none for a
    host `NO_PROXY` names (`*`: none for any)."""
    parts = urlsplit(origin)
    variable, url = ("HTTPS_PROXY", settings.https_proxy) if parts.scheme == "https" else (
        "HTTP_PROXY", settings.http_proxy)
    if not url:
        return None
    # NO_PROXY is matched as urllib matches it (suffixes, `host:port`, a lone `*`); curl agrees
    if settings.no_proxy and any(proxy_bypass_environment(name, proxies={"no": settings.no_proxy})
                                 for name in (parts.netloc, parts.hostname or "")):  # both: [::1]:443 and ::1
        return None
    try:
        return ForwardProxy.from_url(url, variable=variable)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def base_path(url: str) -> bytes:
    """The path of the upstream URL, without its trailing slash: `/v1`."""
    return urlsplit(url).path.rstrip("/").encode()


class HttpxUpstream:
    """Any httpx transport behind the `Upstream` interface."""

    def __init__(self, transport: httpx.AsyncBaseTransport, origin: str, *, timeouts: Timeouts) -> None:
        self.transport = transport
        self.origin = origin
        self.timeout = {"connect": timeouts.connect, "read": timeouts.read, "write": timeouts.write,
                        "pool": timeouts.connect}

    async def send(self, method: str, target: bytes, headers: Headers, body: Body) -> UpstreamResponse:
        request = httpx.Request(method, self.origin + target.decode("latin-1"), headers=headers, content=body,
                                extensions={"timeout": self.timeout})
        with _httpx_errors():
            response = await self.transport.handle_async_request(request)
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self.transport.aclose()


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.headers: Headers = list(response.headers.raw)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream: Any = self.response.stream
        with _httpx_errors():
            async for chunk in stream:
                yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc


def request_headers(headers: Headers) -> Headers:
    """The client's headers as the upstream should get them: less hop-by-hop headers, `host`
    and `content-length` (the client library sets both)."""
    named = _connection_tokens(headers)
    return [
        (name, value) for name, value in headers
        if name not in HOP_BY_HOP and name not in named and name not in (b"host", b"content-length")
    ]


def response_headers(headers: Headers) -> Headers:
    """The upstream's response headers as the client should get them."""
    named = _connection_tokens(headers)
    return [(name, value) for name, value in headers
            if (lowered := name.lower()) not in HOP_BY_HOP and lowered not in named]


def path_below(raw_path: bytes, prefix: bytes) -> bytes | None:
    """The part of a request path after the proxy's prefix (`/v1/chat/completions` -> `/chat/completions`),
    or None when the path is not below the prefix or has dot segments, plain or percent-encoded:
    a request must never reach anything but the configured upstream's own paths."""
    if raw_path == prefix:
        return b""
    if not raw_path.startswith(prefix + b"/"):
        return None
    rest = raw_path[len(prefix):]
    if b"." in rest or b"%" in rest:
        decoded = unquote_to_bytes(rest)
        if any(segment in (b".", b"..") for segment in decoded.replace(b"\\", b"/").split(b"/")):
            return None
    return rest


def error_response(exc: UpstreamError) -> tuple[int, dict[str, Any]]:
    """An upstream failure before any response byte, as the status and OpenAI-style body to send."""
    if isinstance(exc, UpstreamTimeout):
        return 504, openai_error(f"The upstream did not answer in time ({exc}).", type="upstream_timeout",
                                 code="upstream_timeout")
    return 502, openai_error(f"The upstream could not be reached: {exc}", type="upstream_error",
                             code="upstream_unreachable")


def _connection_tokens(headers: Headers) -> set[bytes]:
    """Headers a `Connection` header names are hop-by-hop too."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return named


class UpstreamPools:
    """One upstream client (connection pool) per origin the routes name, made on first use: a
    route added by a reload gets its pool with its first request."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.transport = transport
        self._pools: dict[str, Upstream] = {}

    def __call__(self, route: Route) -> Upstream:
        pool = self._pools.get(route.origin)
        if pool is None:
            pool = self._pools[route.origin] = create_upstream(self.settings, route.origin, self.transport)
        return pool

    async def aclose(self) -> None:
        """Close every pool's connections."""
        for pool in self._pools.values():
            await pool.aclose()
