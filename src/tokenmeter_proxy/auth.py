"""The admin bearer token: checked in constant time, with repeated failures locked out."""

from __future__ import annotations

import hmac

from cachetools import TTLCache

from .asgi import ASGIApp, Receive, Scope, Send, send_json
from .errors import openai_error


class RequireAdminToken:
    """Lets a request through only with `Authorization: Bearer <admin token>` (constant-time check).

    A client address that fails `MAX_FAILURES` times within a minute gets 429 for the rest of
    that minute, whatever it sends: guessing a token takes forever at that rate.
    """

    MAX_FAILURES = 10

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.expected = token.encode() if token else None
        self._failures: TTLCache[str, int] = TTLCache(maxsize=100_000, ttl=60)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        if self._failures.get(client, 0) >= self.MAX_FAILURES:
            await send_json(send, 429, openai_error(
                "Too many failed admin sign-ins from this address; wait a minute.", type="rate_limit_error",
                code="too_many_failures"), headers=[(b"retry-after", b"60")])
            return
        if not self._authorized(scope["headers"]):
            self._failures[client] = self._failures.get(client, 0) + 1
            message = ("the admin API is disabled: set TOKENMETER_ADMIN_TOKEN to enable it" if self.expected is None
                       else "missing or wrong admin token: send Authorization: Bearer <TOKENMETER_ADMIN_TOKEN>")
            await send_json(send, 401, openai_error(message, type="invalid_request_error", code="invalid_admin_token"),
                            headers=[(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.expected is None:
            return False
        presented = next((value for name, value in headers if name == b"authorization"), b"")
        scheme, _, token = presented.partition(b" ")
        # compare_digest whatever the scheme, so timing never tells a well-formed header from a bad one
        matches = hmac.compare_digest(token.strip(), self.expected)
        return matches and scheme.lower() == b"bearer"
