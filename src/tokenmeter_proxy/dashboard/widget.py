"""The sidebar widget a chat app embeds, opened by a signed link of one of two kinds:

    GET  /widget/session/{id}?exp=&sig=        the current session, its user's trend and recent sessions
    GET  /widget/user/{id}?exp=&sig=           one user's trend and recent sessions
    GET  /widget/api/session/{id}?exp=&sig=    the figures of a session link (the same signature)
    GET  /widget/api/user/{id}?exp=&sig=       the figures of a user link
    POST /api/widget-links                     (admin) {"session_id"} or {"user_id"}, "ttl_seconds"?

A link answers for what it names and nothing else: a session link for its session and for the
sessions of that session's user (the app mints it for that user only), a user link for that
user. Tampered with, expired or moved to another id or kind, a link gets 403.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from cachetools import TTLCache
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .. import reports
from ..access import DEFAULT_LINK_SECONDS, MAX_LINK_SECONDS, Signer, WidgetKind
from ..errors import BadRequest
from ..identity import UserIds, clean_identity
from ..pricing import PriceTable
from ..storage.repository import Repository, Totals
from ..types import Clock
from ..web import JSONResponse, json_object
from .headers import WIDGET_HEADERS
from .pages import Pages, negotiate

RECENT_SESSIONS = 50
TREND_PERIOD = "30d"  # the widget shows 7 or 30 days of it
_DENIED = {"error": {"message": "this widget link is not valid or has expired", "type": "invalid_request_error",
                     "code": "invalid_widget_link", "param": None}}


class Widget:
    """The widget's pages, data endpoints and link minting, bound to the usage data, the prices
    in force, a clock, the signer (None: no link is valid) and the proxy's user id hashing."""

    def __init__(self, *, repository: Repository, prices: Callable[[], PriceTable], clock: Clock,
                 signer: Signer | None, pages: Pages, user_ids: UserIds) -> None:
        self.repository = repository
        self.prices = prices
        self.clock = clock
        self.signer = signer
        self.pages = pages
        self.user_ids = user_ids
        # a chat app refreshes its sidebar after every reply: two seconds of answers serve a burst
        self._cache: TTLCache[tuple[str, str], dict[str, Any]] = TTLCache(maxsize=4096, ttl=2)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/widget/session/{subject:path}", self.session_page, methods=["GET"]),
            Route("/widget/user/{subject:path}", self.user_page, methods=["GET"]),
            Route("/widget/api/session/{subject:path}", self.session_data, methods=["GET"]),
            Route("/widget/api/user/{subject:path}", self.user_data, methods=["GET"]),
        ]

    def admin_routes(self) -> list[BaseRoute]:
        """Routes for the admin API's mount (behind the admin token)."""
        return [Route("/widget-links", self.mint, methods=["POST"])]

    async def session_page(self, request: Request) -> Response:
        return self._page(request, "session")

    async def user_page(self, request: Request) -> Response:
        return self._page(request, "user")

    async def session_data(self, request: Request) -> Response:
        return await self._data(request, "session")

    async def user_data(self, request: Request) -> Response:
        return await self._data(request, "user")

    async def mint(self, request: Request) -> Response:
        """`POST /api/widget-links {"session_id" | "user_id", "ttl_seconds"?}` -> `{"url", "path", "expires_at"}`."""
        body = json_object(await request.body(), ': {"session_id" or "user_id", "ttl_seconds"?}')
        kind, subject = _subject(body, self.user_ids)
        ttl = body.get("ttl_seconds", DEFAULT_LINK_SECONDS)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_LINK_SECONDS:
            raise BadRequest(f"ttl_seconds must be a whole number from 1 to {MAX_LINK_SECONDS}", param="ttl_seconds")
        assert self.signer is not None  # the admin API is locked without a token
        expires = int(self.clock().timestamp()) + ttl
        signature = self.signer.widget_signature(subject, expires, kind=kind)
        path = link_path(f"/widget/{kind}/", subject, expires=expires, signature=signature)
        return JSONResponse({"url": f"{request.url.scheme}://{request.url.netloc}{path}", "path": path,
                             "expires_at": dt.datetime.fromtimestamp(expires, dt.UTC)})

    def _page(self, request: Request, kind: WidgetKind) -> Response:
        """The widget page, or 403 for a link that is tampered with, expired or for another id or kind."""
        subject = request.path_params["subject"]
        language, locale = negotiate(request.headers.get("accept-language"))
        title = self.pages.strings[language]["widget_title"]
        if not self._allowed(request, kind, subject):
            body = self.pages.page("widget_denied", language=language, locale=locale, script=None, config={},
                                   title=title, body_class="widget")
            return HTMLResponse(body, status_code=403, headers=WIDGET_HEADERS)
        expires = int(request.query_params["exp"])
        config = {"kind": kind, "subject": subject, "expires": expires, "data_url": link_path(
            f"/widget/api/{kind}/", subject, expires=expires, signature=request.query_params["sig"])}
        if kind == "session":
            config["session_id"] = subject  # what the page tells its parent when the link expires
        current = self.pages.fill("widget_current", language, {}) if kind == "session" else ""
        body = self.pages.page("widget", language=language, locale=locale, script="widget", config=config,
                               title=title, body_class="widget", values={"current": current})
        return HTMLResponse(body, headers=WIDGET_HEADERS)

    async def _data(self, request: Request, kind: WidgetKind) -> Response:
        subject = request.path_params["subject"]
        if not self._allowed(request, kind, subject):
            return JSONResponse(_DENIED, status_code=403, headers=WIDGET_HEADERS)
        figures = self._cache.get((kind, subject))
        if figures is None:
            compute = self._session_figures if kind == "session" else self._user_figures
            figures = self._cache[kind, subject] = await run_in_threadpool(compute, subject)
        return JSONResponse(figures, headers=WIDGET_HEADERS)

    def _allowed(self, request: Request, kind: WidgetKind, subject: str) -> bool:
        return self.signer is not None and self.signer.valid_widget(
            subject, request.query_params.get("exp"), request.query_params.get("sig"), self.clock().timestamp(),
            kind=kind)

    def _session_figures(self, session_id: str) -> dict[str, Any]:
        """The session's totals; its user's daily figures and recent sessions (the session's own
        days, and itself alone, when it has no user). The user's id itself is never sent."""
        totals, records = self.repository.session(session_id, limit=1)
        user_id = records[0].user_id if records else None
        own = _item(session_id, totals or Totals(), last_seen=records[0].created_at if records else None)
        if user_id is None:
            sessions = [own]
        else:
            sessions = self._recent(user_id)
            if not any(item["session_id"] == session_id for item in sessions):  # older than the 50 newest
                sessions = [*sessions[:RECENT_SESSIONS - 1], own]
        return {"kind": "session", "session_id": session_id,
                **self._trend(user_id=user_id, session_id=None if user_id else session_id),
                "totals": reports.totals_json(totals or Totals(), Decimal(1)), "sessions": sessions}

    def _user_figures(self, user_id: str) -> dict[str, Any]:
        """The user's daily figures and most recently active sessions."""
        return {"kind": "user", **self._trend(user_id=user_id, session_id=None), "sessions": self._recent(user_id)}

    def _trend(self, *, user_id: str | None, session_id: str | None) -> dict[str, Any]:
        table = self.prices()
        stats = reports.usage_stats(self.repository, table, period=TREND_PERIOD, now=self.clock(),
                                    user_id=user_id, session_id=session_id)
        return {"currency": table.currency, "trend": {"of": "user" if user_id else "session", "daily": stats["daily"]}}

    def _recent(self, user_id: str) -> list[dict[str, Any]]:
        _, groups = self.repository.sessions(limit=RECENT_SESSIONS, offset=0, user_id=user_id)
        return [_item(group.key or "", group.totals, last_seen=group.last_seen) for group in groups]


def link_path(prefix: str, subject: str, *, expires: int, signature: str) -> str:
    """A widget path: the prefix, the id (every character but letters, digits and `_.-~` escaped)
    and the link's expiry and signature."""
    return f"{prefix}{quote(subject, safe='')}?exp={expires}&sig={signature}"


def _item(session_id: str, totals: Totals, *, last_seen: dt.datetime | None) -> dict[str, Any]:
    """One of the recent sessions: its id, last activity and totals over all time."""
    return {"session_id": session_id, "last_seen": last_seen, "requests": totals.requests,
            "input_tokens": totals.input_tokens, "output_tokens": totals.output_tokens, "cost": totals.cost}


def _subject(body: dict[str, Any], user_ids: UserIds) -> tuple[WidgetKind, str]:
    """What a link is asked for: a session id, or a user id stored the way records store it."""
    given = [name for name in ("session_id", "user_id") if body.get(name) is not None]
    if len(given) != 1:
        problem = "not both" if given else "one is required"
        raise BadRequest(f"give session_id (a link for one session) or user_id (a link for one user's usage), "
                         f"{problem}", param="user_id" if given else "session_id")
    name = given[0]
    raw = body[name]
    value = clean_identity(raw) if isinstance(raw, str) and "\x00" not in raw else None
    if value is None:
        raise BadRequest(f"{name} must be the {name[:-3]}'s id, as the chat app sends it", param=name)
    if name == "session_id":
        return "session", value
    stored = user_ids.stored(value)
    assert stored is not None
    return "user", stored

