"""The way to an upstream through a forward proxy (`HTTPS_PROXY`, `HTTP_PROXY`), for the HTTP/1.1
client (`http1.py`). An https origin is reached through a CONNECT tunnel (RFC 9110 section 9.3.6),
opened here on a plain non-blocking socket with the loop's `sock_*` calls, which asyncio and uvloop
both have, then handed to `loop.create_connection(sock=...)` for TLS to the origin itself. An http
origin needs no tunnel: http1.py sends it requests in absolute form on a connection to the proxy.
Only http:// proxies: the tunnel to an https origin is encrypted end to end all the same.

    ForwardProxy    where the proxy is, and the Proxy-Authorization it wants; never shows a password
    open_tunnel()   a socket on which the proxy relays bytes to the origin
"""

from __future__ import annotations

import asyncio
import base64
import socket
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .errors import UpstreamError

MAX_ANSWER_HEAD = 64 * 1024  # a proxy's answer to CONNECT is a few lines; more is not an HTTP proxy


@dataclass(frozen=True)
class ForwardProxy:
    """An http:// forward proxy. `variable` names the setting it came from (`HTTPS_PROXY`), so
    that messages say what to change; `authorization` is the `Proxy-Authorization` value."""

    host: str
    port: int
    variable: str = "the proxy setting"
    authorization: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, *, variable: str) -> ForwardProxy:
        """The proxy of `http://[user:password@]host:port` (`host:port` alone means http://, as
        for curl); credentials are percent-decoded. Raises `ValueError` without repeating the URL,
        which may hold a password."""
        try:
            parts = urlsplit(url if "://" in url else "http://" + url)
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ValueError(f"{variable} is not a URL") from None
        if parts.scheme != "http" or not host or port is None:
            raise ValueError(f"{variable} must be http://[user:password@]host:port")
        authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = b"Basic " + base64.b64encode(credentials)
        return cls(host, port, variable, authorization)

    @property
    def address(self) -> str:
        """`host:port`, for messages: never the credentials."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def unreachable(self, exc: OSError) -> UpstreamError:
        """The error for a proxy that cannot be connected to."""
        return UpstreamError(f"cannot reach the forward proxy {self.address} ({self.variable}): "
                             f"{type(exc).__name__}: {exc}; check that it runs there, or correct {self.variable}")


async def open_tunnel(loop: asyncio.AbstractEventLoop, proxy: ForwardProxy, authority: bytes) -> socket.socket:
    """A connected non-blocking socket on which `proxy` relays bytes to `authority` (`host:port`),
    ready for TLS. Raises `UpstreamError` saying what to do when the proxy is unreachable or refuses.
    The caller's timeout covers it all; cancelled, it leaves no socket open."""
    sock = await _connect(loop, proxy)
    try:
        await loop.sock_sendall(sock, _connect_request(proxy, authority))
        head, rest = await _read_answer(loop, sock, proxy)
        status, reason = _status(head, proxy)
        if not 200 <= status < 300:
            raise UpstreamError(_refusal(proxy, authority.decode("ascii"), status, reason))
        if rest:  # the origin speaks only after our TLS hello: these bytes cannot be the origin's
            raise UpstreamError(f"the forward proxy {proxy.address} ({proxy.variable}) sent bytes after agreeing "
                                "to CONNECT, before the origin could speak; is it an HTTP proxy?")
    except OSError as exc:
        sock.close()
        raise UpstreamError(f"the forward proxy {proxy.address} ({proxy.variable}) broke off the CONNECT to "
                            f"{authority.decode('ascii')}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(loop: asyncio.AbstractEventLoop, proxy: ForwardProxy) -> socket.socket:
    """A TCP connection to the proxy, trying each of its addresses in turn."""
    try:
        addresses = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise proxy.unreachable(exc) from exc
    error: OSError = OSError(f"{proxy.host} has no address")
    for family, kind, protocol, _, address in addresses:
        sock = socket.socket(family, kind, protocol)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as create_connection would
            await loop.sock_connect(sock, address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise proxy.unreachable(error)


def _connect_request(proxy: ForwardProxy, authority: bytes) -> bytes:
    lines = [b"CONNECT " + authority + b" HTTP/1.1", b"Host: " + authority]
    if proxy.authorization is not None:
        lines.append(b"Proxy-Authorization: " + proxy.authorization)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _read_answer(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                       proxy: ForwardProxy) -> tuple[bytes, bytes]:
    """The head of the proxy's answer, and any bytes read past it (a refusal's body, of no interest)."""
    answer = b""
    while (end := answer.find(b"\r\n\r\n")) < 0:
        if len(answer) > MAX_ANSWER_HEAD:
            raise UpstreamError(f"the forward proxy {proxy.address} ({proxy.variable}) answered CONNECT with "
                                f"more than {MAX_ANSWER_HEAD} bytes of head; is it an HTTP proxy?")
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise UpstreamError(f"the forward proxy {proxy.address} ({proxy.variable}) closed the connection "
                                "without answering CONNECT")
        answer += data
    return answer[:end], answer[end + 4:]


def _status(head: bytes, proxy: ForwardProxy) -> tuple[int, str]:
    """The status code and reason of an answer head."""
    version, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise UpstreamError(f"the forward proxy {proxy.address} ({proxy.variable}) did not answer CONNECT "
                            f"in HTTP/1.1: {head[:60]!r}")
    printable = "".join(c for c in reason.decode("latin-1") if c.isprintable())[:100]
    return int(code), printable


def _refusal(proxy: ForwardProxy, target: str, status: int, reason: str) -> str:
    """Why the proxy said no, and what to do about it."""
    if status == 407:
        hint = (f"check the user and password in {proxy.variable}" if proxy.authorization is not None else
                f"it wants credentials: put them in {proxy.variable} as http://user:password@host:port")
    elif status == 403:
        hint = f"its rules forbid this destination or port; ask its operator to allow CONNECT to {target}"
    elif status in (500, 502, 503, 504):
        hint = f"it could not reach {target} itself; check the upstream's address, or the proxy's own way out"
    else:
        hint = "see the proxy's log for why"
    return (f"the forward proxy {proxy.address} ({proxy.variable}) refused to open a tunnel to {target}: "
            f"{status} {reason}".rstrip() + f"; {hint}")
