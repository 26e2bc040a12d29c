"""The dashboard and the sidebar widget, served by the proxy itself:

    GET  /dashboard, /dashboard/sessions, /dashboard/sessions/{id}, /dashboard/budgets
                                                     pages (the sign-in form without a valid
                                                     cookie, status 200)
    POST /dashboard/login                            the admin token from the form -> cookie
    POST /dashboard/logout                           the cookie cleared
    GET  /dashboard/static/...                       our own CSS, JavaScript and icon
    /widget/..., POST /api/widget-links              the embeddable widget and its signed links
                                                     (`widget.py`)

Pages carry no data: their scripts read the admin API with the cookie (see `auth.py`), and
write through it with the page's CSRF token. The widget reads only its own signed endpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..access import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    FailureLimiter,
    Signer,
    client_address,
    header_dict,
    same_origin,
)
from ..budgets import DEFAULT_WARN_AT, PERIODS, SCOPES
from ..errors import BadRequest
from ..identity import UserIds
from ..pricing import PriceTable, money_text
from ..storage.repository import Repository
from ..types import Clock
from .headers import PAGE_HEADERS
from .pages import STATIC, Pages, negotiate
from .widget import Widget

MAX_FORM_BYTES = 8192
NAVIGATION = ("overview", "sessions", "budgets")  # the header's links; "session" is under "sessions"


class Dashboard:
    """The pages, sign-in, widget and widget links, bound to the usage data, the prices in
    force, a clock, the admin token (None: nobody can sign in), the sign-in failure limiter
    the admin API shares, and the proxy's user id hashing (widget links for a user)."""

    def __init__(self, *, repository: Repository, prices: Callable[[], PriceTable], clock: Clock,
                 signer: Signer | None, limiter: FailureLimiter, user_ids: UserIds | None = None) -> None:
        self.prices = prices
        self.clock = clock
        self.signer = signer
        self.limiter = limiter
        self.pages = Pages.load()
        self.assets = Assets.load(STATIC)
        self.widget = Widget(repository=repository, prices=prices, clock=clock, signer=signer, pages=self.pages,
                             user_ids=user_ids or UserIds(secret=None))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/dashboard", self.overview, methods=["GET"]),
            Route("/dashboard/sessions", self.sessions, methods=["GET"]),
            Route("/dashboard/sessions/{session_id:path}", self.session, methods=["GET"]),
            Route("/dashboard/budgets", self.budgets, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/login", _to_dashboard, methods=["GET"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/dashboard/static/{name}", self.assets.serve, methods=["GET", "HEAD"]),
            *self.widget.routes(),
        ]

    def admin_routes(self) -> list[BaseRoute]:
        """Routes for the admin API's mount (behind the admin token)."""
        return self.widget.admin_routes()

    async def overview(self, request: Request) -> Response:
        return self._page(request, "overview")

    async def sessions(self, request: Request) -> Response:
        return self._page(request, "sessions")

    async def session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        return self._page(request, "session", config={"session_id": session_id},
                          values={"session_id": session_id})

    async def budgets(self, request: Request) -> Response:
        """The budgets page: its form offers every scope and period the budgets API takes."""
        return self._page(request, "budgets", config={"scopes": SCOPES, "periods": PERIODS,
                                                      "default_warn_at": money_text(DEFAULT_WARN_AT)},
                          values={"currency": self.prices().currency})

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
        current = {f"nav_{name}": "page" if page.startswith(name[:7]) else "false" for name in NAVIGATION}
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

