"""The admin API's door: the bearer token (constant-time check), or the dashboard's sign-in
cookie from a page of our own origin; repeated failures locked out."""

from __future__ import annotations

from starlette.requests import cookie_parser

from .access import CSRF_HEADER, SESSION_COOKIE, FailureLimiter, Signer, client_address, header_dict, same_origin
from .asgi import ASGIApp, Receive, Scope, Send, send_json
from .errors import openai_error
from .types import Clock, utc_now

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequireAdminToken:
    """Lets a request through with `Authorization: Bearer <admin token>`, or with a valid
    dashboard cookie (`access.SESSION_COOKIE`) when the browser says the request comes from
    our own origin (`Sec-Fetch-Site`, else `Origin`) and, for anything but reads, carries the
    cookie's CSRF token in `X-TokenMeter-CSRF`. The cookie is SameSite=Strict as well: each
    check alone would stop a cross-site request.

    A client address that fails `limiter.max_failures` times within a minute gets 429 for the
    rest of that minute, whatever it sends. The dashboard's sign-in form shares the limiter.
    """

    def __init__(self, app: ASGIApp, *, signer: Signer | None, limiter: FailureLimiter | None = None,
                 clock: Clock = utc_now) -> None:
        self.app = app
        self.signer = signer
        self.limiter = limiter or FailureLimiter()
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = client_address(scope)
        if self.limiter.locked(client):
            await send_json(send, 429, openai_error(
                "Too many failed admin sign-ins from this address; wait a minute.", type="rate_limit_error",
                code="too_many_failures"), headers=[(b"retry-after", self.limiter.retry_after.encode())])
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            self.limiter.failed(client)
            await send_json(send, 401, openai_error(refusal, type="invalid_request_error", code="invalid_admin_token"),
                            headers=[(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> str | None:
        """Why the request may not pass, or None when it may."""
        if self.signer is None:
            return "the admin API is disabled: set TOKENMETER_ADMIN_TOKEN to enable it"
        headers = header_dict(scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        # compare_digest whatever the scheme, so timing never tells a well-formed header from a bad one
        if self.signer.token_matches(token.strip().encode("latin-1")) and scheme.lower() == "bearer":
            return None
        cookie = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
        if cookie is None or not self.signer.valid_session(cookie, self.clock().timestamp()):
            return "missing or wrong admin token: send Authorization: Bearer <TOKENMETER_ADMIN_TOKEN>"
        if not same_origin(headers):
            return "the dashboard's sign-in works only for pages of this proxy's own origin"
        if scope["method"] not in SAFE_METHODS and not self.signer.valid_csrf(cookie, headers.get(CSRF_HEADER)):
            return f"a signed-in page must send its CSRF token in {CSRF_HEADER} with this request"
        return None

