"""The dashboard and the session widget, served by the proxy itself:

    GET  /dashboard, /dashboard/sessions, /dashboard/sessions/{id}   pages (the sign-in form
                                                     without a valid cookie, status 200)
    POST /dashboard/login                            the admin token from the form -> cookie
    POST /dashboard/logout                           the cookie cleared
    GET  /dashboard/static/...                       our own CSS, JavaScript and icon
    GET  /widget/session/{id}?exp=&sig=              the embeddable widget (403 unless signed)
    GET  /widget/api/session/{id}?exp=&sig=          the widget's figures, same signature
    POST /api/widget-links                           (admin) mints a signed link

Pages carry no data: their scripts read the admin API with the cookie (see `auth.py`). The
widget reads only its own endpoint, which answers for the one session its link names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote

from cachetools import TTLCache
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import reports
from ..access import (
    DEFAULT_LINK_SECONDS,
    MAX_LINK_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    FailureLimiter,
    Signer,
    client_address,
    header_dict,
    same_origin,
)
from ..errors import BadRequest
from ..identity import clean_identity
from ..pricing import PriceTable, money_text
from ..storage.repository import Repository, Totals
from ..types import Clock
from ..web import JSONResponse, json_object
from .pages import STATIC, Pages, negotiate

MAX_FORM_BYTES = 8192
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'")
PAGE_HEADERS = {  # the dashboard: never cached, never framed
    "cache-control": "no-store", "vary": "Accept-Language, Cookie", "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin", "x-frame-options": "DENY",
    "content-security-policy": f"{_CSP}; frame-ancestors 'none'",
}
WIDGET_HEADERS = {  # the widget: framed by the chat app; its URL (the signature) never sent on
    "cache-control": "no-store", "vary": "Accept-Language", "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer", "content-security-policy": f"{_CSP}; frame-ancestors *",
}


class Dashboard:
    """The pages, sign-in, widget and widget links, bound to the usage data, the prices in
    force, a clock, the admin token (None: nobody can sign in) and the sign-in failure limiter
    the admin API shares."""

    def __init__(self, *, repository: Repository, prices: Callable[[], PriceTable], clock: Clock,
                 signer: Signer | None, limiter: FailureLimiter) -> None:
        self.repository = repository
        self.prices = prices
        self.clock = clock
        self.signer = signer
        self.limiter = limiter
        self.pages = Pages.load()
        self.assets = Assets.load(STATIC)
        self._widget_cache: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=4096, ttl=2)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/dashboard", self.overview, methods=["GET"]),
            Route("/dashboard/sessions", self.sessions, methods=["GET"]),
            Route("/dashboard/sessions/{session_id:path}", self.session, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/login", _to_dashboard, methods=["GET"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/dashboard/static/{name}", self.assets.serve, methods=["GET", "HEAD"]),
            Route("/widget/session/{session_id:path}", self.widget, methods=["GET"]),
            Route("/widget/api/session/{session_id:path}", self.widget_data, methods=["GET"]),
        ]

    def admin_routes(self) -> list[BaseRoute]:
        """Routes for the admin API's mount (behind the admin token)."""
        return [Route("/widget-links", self.widget_link, methods=["POST"])]

    async def overview(self, request: Request) -> Response:
        return self._page(request, "overview")

    async def sessions(self, request: Request) -> Response:
        return self._page(request, "sessions")

    async def session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        return self._page(request, "session", config={"session_id": session_id},
                          values={"session_id": session_id})

    async def login(self, request: Request) -> Response:
        """Check the token from the form; on success set the cookie and go where the reader
        was headed, else show the form again (401; 429 once the address is locked out)."""
        client = client_address(request.scope)
        if not same_origin(header_dict(request.scope)):
            return Response("sign-in is accepted from this proxy's own pages only", status_code=403)
        form = await _form(request)
        next_path = _local_path(form.get("next"))
        if self.limiter.locked(client):
            return self._signin(request, next_path=next_path, error="too_many", status=429)
        if self.signer is None:
            return self._signin(request, next_path=next_path, error="disabled", status=401)
        if not self.signer.token_matches(form.get("token", "")):
            self.limiter.failed(client)
            return self._signin(request, next_path=next_path, error="wrong_token", status=401)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(SESSION_COOKIE, self.signer.session_cookie(self.clock().timestamp()),
                            max_age=SESSION_SECONDS, path="/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        """Clear the cookie (a stateless cookie cannot be revoked elsewhere: it expires after
        `SESSION_SECONDS`, and changing the admin token ends every sign-in at once)."""
        if not same_origin(header_dict(request.scope)):
            return Response("sign-out is accepted from this proxy's own pages only", status_code=403)
        response = RedirectResponse("/dashboard", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    async def widget(self, request: Request) -> Response:
        """The widget page, or 403 for a link that is tampered with, expired or for another session."""
        session_id = request.path_params["session_id"]
        language, locale = negotiate(request.headers.get("accept-language"))
        if not self._widget_allowed(request, session_id):
            body = self.pages.page("widget_denied", language=language, locale=locale, script=None, config={},
                                   title=self.pages.strings[language]["widget_title"], body_class="widget")
            return HTMLResponse(body, status_code=403, headers=WIDGET_HEADERS)
        query = f"exp={request.query_params['exp']}&sig={request.query_params['sig']}"
        config = {"session_id": session_id, "data_url": f"/widget/api/session/{quote(session_id, safe='')}?{query}",
                  "expires": int(request.query_params["exp"])}
        body = self.pages.page("widget", language=language, locale=locale, script="widget", config=config,
                               title=self.pages.strings[language]["widget_title"], body_class="widget")
        return HTMLResponse(body, headers=WIDGET_HEADERS)

    async def widget_data(self, request: Request) -> Response:
        """The session's totals and its user's daily figures for 30 days (the session's own when
        it has no user), for a valid link only."""
        session_id = request.path_params["session_id"]
        if not self._widget_allowed(request, session_id):
            return JSONResponse({"error": {"message": "this widget link is not valid or has expired",
                                           "type": "invalid_request_error", "code": "invalid_widget_link",
                                           "param": None}}, status_code=403, headers=WIDGET_HEADERS)
        figures = self._widget_cache.get(session_id)
        if figures is None:
            figures = self._widget_cache[session_id] = await run_in_threadpool(self._widget_figures, session_id)
        return JSONResponse(figures, headers=WIDGET_HEADERS)

    async def widget_link(self, request: Request) -> Response:
        """`POST /api/widget-links {"session_id", "ttl_seconds"?}` -> `{"url", "path", "expires_at"}`."""
        body = json_object(await request.body(), ': {"session_id", "ttl_seconds"?}')
        raw_id = body.get("session_id")
        session_id = clean_identity(raw_id) if isinstance(raw_id, str) and "\x00" not in raw_id else None
        if session_id is None:
            raise BadRequest("session_id is required: the session's id, as the chat app sends it", param="session_id")
        ttl = body.get("ttl_seconds", DEFAULT_LINK_SECONDS)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_LINK_SECONDS:
            raise BadRequest(f"ttl_seconds must be a whole number from 1 to {MAX_LINK_SECONDS}", param="ttl_seconds")
        assert self.signer is not None  # the admin API is locked without a token
        expires = int(self.clock().timestamp()) + ttl
        signature = self.signer.widget_signature(session_id, expires)
        path = f"/widget/session/{quote(session_id, safe='')}?exp={expires}&sig={signature}"
        return JSONResponse({"url": f"{request.url.scheme}://{request.url.netloc}{path}", "path": path,
                             "expires_at": dt.datetime.fromtimestamp(expires, dt.UTC)})

    def _page(self, request: Request, page: str, *, config: dict[str, Any] | None = None,
              values: dict[str, object] | None = None) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if self.signer is None or not self.signer.valid_session(cookie, self.clock().timestamp()):
            path = quote(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
            return self._signin(request, next_path=_local_path(path), error=None, status=200)
        assert cookie is not None
        language, locale = negotiate(request.headers.get("accept-language"))
        table = self.prices()
        currencies = {table.currency: "1", **{code: money_text(rate) for code, rate in table.exchange_rates.items()}}
        config = {"page": page, "csrf": self.signer.csrf_token(cookie), "base_currency": table.currency,
                  "rates": currencies, **(config or {})}
        strings = self.pages.strings[language]
        current = {f"nav_{name}": "page" if page.startswith(name[:7]) else "false" for name in ("overview", "sessions")}
        header = self.pages.fill("header", language, current)
        body = self.pages.page(page, language=language, locale=locale, title=strings[page], script=page,
                               config=config, values={**(values or {}), "header": header})
        return HTMLResponse(body, headers=PAGE_HEADERS)

    def _signin(self, request: Request, *, next_path: str, error: str | None, status: int) -> Response:
        language, locale = negotiate(request.headers.get("accept-language"))
        strings = self.pages.strings[language]
        message = strings[f"signin_error_{error}"] if error else ""
        body = self.pages.page("signin", language=language, locale=locale, title=strings["sign_in"], script=None,
                               config={}, body_class="signin",
                               values={"next": next_path, "error": message, "error_hidden": "" if error else "hidden"})
        headers = {**PAGE_HEADERS, **({"retry-after": self.limiter.retry_after} if status == 429 else {})}
        return HTMLResponse(body, status_code=status, headers=headers)

    def _widget_allowed(self, request: Request, session_id: str) -> bool:
        return self.signer is not None and self.signer.valid_widget(
            session_id, request.query_params.get("exp"), request.query_params.get("sig"), self.clock().timestamp())

    def _widget_figures(self, session_id: str) -> dict[str, Any]:
        table = self.prices()
        totals, records = self.repository.session(session_id, limit=1)
        user_id = records[0].user_id if records else None
        trend = reports.usage_stats(self.repository, table, period="30d", now=self.clock(),
                                    **({"user_id": user_id} if user_id else {"session_id": session_id}))
        return {"session_id": session_id, "currency": table.currency,
                "totals": reports.totals_json(totals or Totals(), Decimal(1)),
                "trend": {"of": "user" if user_id else "session", "daily": trend["daily"]}}


class Assets:
    """Our CSS, scripts and icon, read once and served from memory with an ETag: browsers
    revalidate on every load (a 304 when unchanged), so an upgraded proxy never runs
    yesterday's script against today's API, and a load costs no disk or thread."""

    TYPES: ClassVar[dict[str, str]] = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                                       ".svg": "image/svg+xml"}

    def __init__(self, files: dict[str, tuple[bytes, str, str]]) -> None:
        self.files = files

    @classmethod
    def load(cls, directory: Path) -> Assets:
        files = {}
        for path in sorted(directory.iterdir()):
            if path.suffix in cls.TYPES:
                content = path.read_bytes()
                etag = '"' + hashlib.sha256(content).hexdigest()[:20] + '"'
                files[path.name] = (content, cls.TYPES[path.suffix], etag)
        return cls(files)

    async def serve(self, request: Request) -> Response:
        found = self.files.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        content, media_type, etag = found
        headers = {"etag": etag, "cache-control": "no-cache", "x-content-type-options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(content, media_type=media_type, headers=headers)


async def _to_dashboard(request: Request) -> Response:
    return RedirectResponse("/dashboard", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """The fields of a small urlencoded form (the only kind the sign-in form sends)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest("the form is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _local_path(path: str | None) -> str:
    """Where to go after signing in: a dashboard path of this origin, never another site."""
    if not path or not path.startswith("/dashboard") or "\\" in path or not path.isprintable():
        return "/dashboard"
    return path

