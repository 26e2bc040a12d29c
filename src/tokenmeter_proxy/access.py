"""Access without handing out the admin token: the dashboard's sign-in cookie and its CSRF
token, signed expiring widget links, and the lockout of addresses that keep guessing.

Pure: keys, times and values are passed in. Every key is derived from the admin token
(HMAC-SHA256 of a purpose label), so all workers and replicas sharing the token agree without
another secret to configure, and changing the token ends every dashboard session and widget
link at once. The token itself never leaves the server: a cookie holds an expiry, a nonce and
a MAC; a widget link holds its session or user id, an expiry and a MAC under the key of its kind
(so a session link never passes for a user link of the same id, nor the other way round).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cachetools import TTLCache

SESSION_COOKIE = "tokenmeter_session"
CSRF_HEADER = "x-tokenmeter-csrf"
SESSION_SECONDS = 12 * 3600  # a dashboard sign-in lasts a working day
MAX_LINK_SECONDS = 30 * 24 * 3600
DEFAULT_LINK_SECONDS = 3600
WidgetKind = Literal["session", "user"]  # what a widget link opens: one session, or one user's usage


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _key(token: str, purpose: str) -> bytes:
    return hmac.new(token.encode(), f"tokenmeter-proxy/{purpose}/v1".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Signer:
    """Makes and checks the values that stand in for the admin token. Build it with
    `from_admin_token`; each purpose has its own key, so no value passes for another."""

    token: bytes = field(repr=False)
    cookie_key: bytes = field(repr=False)
    csrf_key: bytes = field(repr=False)
    widget_key: bytes = field(repr=False)  # session links (the purpose label predates user links)
    user_widget_key: bytes = field(repr=False)

    @classmethod
    def from_admin_token(cls, token: str) -> Signer:
        return cls(token=token.encode(), cookie_key=_key(token, "dashboard-session"),
                   csrf_key=_key(token, "dashboard-csrf"), widget_key=_key(token, "widget-link"),
                   user_widget_key=_key(token, "widget-user-link"))

    def token_matches(self, presented: str | bytes) -> bool:
        """The admin token, compared in constant time."""
        raw = presented.encode() if isinstance(presented, str) else presented
        return hmac.compare_digest(raw, self.token)

    def session_cookie(self, now: float, *, seconds: int = SESSION_SECONDS) -> str:
        """A fresh sign-in: `<expires>.<nonce>.<mac>` (a unix time, 16 random bytes, a MAC)."""
        body = f"{int(now) + seconds}.{secrets.token_urlsafe(16)}"
        return f"{body}.{_mac(self.cookie_key, body)}"

    def valid_session(self, value: str | None, now: float) -> bool:
        """Whether a cookie value is one of ours, unchanged and unexpired."""
        if not value or len(value) > 256:
            return False
        body, _, mac = value.rpartition(".")
        expires, _, nonce = body.partition(".")
        if not (expires.isdigit() and nonce and hmac.compare_digest(mac, _mac(self.cookie_key, body))):
            return False
        return int(expires) > now

    def csrf_token(self, cookie: str) -> str:
        """The token a signed-in page must send with state-changing requests: bound to its
        cookie, so it is worthless with any other sign-in and useless without the cookie."""
        return _mac(self.csrf_key, cookie)

    def valid_csrf(self, cookie: str, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf_token(cookie))

    def widget_signature(self, subject: str, expires: int, *, kind: WidgetKind = "session") -> str:
        """The signature of a widget link for a session id or a (stored) user id: each kind
        has its own key, so the kind is bound as firmly as the id and the expiry."""
        key = self.widget_key if kind == "session" else self.user_widget_key
        # the length prefix keeps (id, expiry) pairs from ever spelling the same message
        return _mac(key, f"{len(subject)}:{subject}:{expires}")

    def valid_widget(self, subject: str, expires: str | None, signature: str | None, now: float, *,
                     kind: WidgetKind = "session") -> bool:
        """Whether a widget link's expiry and signature are ours, for this kind and id, unexpired."""
        if not expires or not signature or not expires.isdigit() or len(expires) > 12:
            return False
        expected = self.widget_signature(subject, int(expires), kind=kind)
        return hmac.compare_digest(signature.encode(), expected.encode()) and int(expires) > now


def same_origin(headers: dict[str, str]) -> bool:
    """Whether the browser says a request comes from a page of this origin: `Sec-Fetch-Site`
    (every current browser sends it), else an `Origin` naming this host, else nothing said."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return True
    return origin.partition("://")[2] == headers.get("host", "")


class FailureLimiter:
    """Failed sign-ins per client address: `max_failures` within `window` seconds lock that
    address out for the rest of the window, whatever it sends (guessing takes forever)."""

    def __init__(self, *, max_failures: int = 10, window: float = 60) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: TTLCache[str, int] = TTLCache(maxsize=100_000, ttl=window)

    @property
    def retry_after(self) -> str:
        """The `retry-after` a locked-out address is told: the rest of the window at most."""
        return str(int(self.window))

    def locked(self, client: str) -> bool:
        return self._failures.get(client, 0) >= self.max_failures

    def failed(self, client: str) -> None:
        self._failures[client] = self._failures.get(client, 0) + 1


def header_dict(scope: Mapping[str, Any]) -> dict[str, str]:
    """An ASGI request's headers by (lower-case) name; of repeated ones, the last."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def client_address(scope: Mapping[str, Any]) -> str:
    """The address failed sign-ins are counted against (the API's and the dashboard's together)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
