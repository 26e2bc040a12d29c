"""The upstream connection: one pooled HTTP client, header filtering, and upstream errors as
OpenAI-style responses. The transport is chosen here and nowhere else."""

from __future__ import annotations

from http.cookiejar import Cookie, CookieJar
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx

from .config import Settings
from .errors import openai_error

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})


class _NoCookies(CookieJar):
    """A jar that keeps nothing: a shared client must never carry one user's cookies to another."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


def create_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The pooled client every proxied request goes through.

    Timeouts suit LLM calls: a non-streaming reasoning request may think for minutes before
    its first byte, so the read timeout is long; connecting should be quick.
    """
    timeout = httpx.Timeout(
        connect=settings.upstream_connect_timeout, read=settings.upstream_read_timeout,
        write=settings.upstream_write_timeout, pool=settings.upstream_connect_timeout,
    )
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections, keepalive_expiry=30,
    )
    if transport is None:
        transport = httpx.AsyncHTTPTransport(limits=limits, retries=0)
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, limits=limits, cookies=_NoCookies(), follow_redirects=False,
        trust_env=False,
    )


def request_headers(headers: list[tuple[bytes, bytes]], *, api_key: str | None) -> list[tuple[bytes, bytes]]:
    """The client's headers as the upstream should get them: less hop-by-hop headers, `host`
    and `content-length` (the client library sets both), and with our key if one is set."""
    named = _connection_tokens(headers)
    out = [
        (name, value) for name, value in headers
        if name not in HOP_BY_HOP and name not in named and name not in (b"host", b"content-length")
        and not (api_key is not None and name == b"authorization")
    ]
    if api_key is not None:
        out.append((b"authorization", b"Bearer " + api_key.encode("latin-1")))
    return out


def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as the client should get them."""
    named = _connection_tokens(headers)
    return [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP and name.lower() not in named]


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


def error_response(exc: httpx.HTTPError) -> tuple[int, dict[str, Any]]:
    """An upstream failure before any response byte, as the status and OpenAI-style body to send."""
    if isinstance(exc, httpx.TimeoutException):
        return 504, openai_error(
            f"The upstream did not answer in time ({type(exc).__name__}).", type="upstream_timeout",
            code="upstream_timeout",
        )
    return 502, openai_error(
        f"The upstream could not be reached: {type(exc).__name__}: {exc}".rstrip(": "), type="upstream_error",
        code="upstream_unreachable",
    )


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Headers a `Connection` header names are hop-by-hop too."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return named
