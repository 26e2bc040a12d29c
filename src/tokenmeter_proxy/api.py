"""The admin API under `/api`: JSON usage reports behind the admin bearer token."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from cachetools import TTLCache
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import reports
from .asgi import ASGIApp, Receive, Scope, Send, send_json
from .budgeting import BudgetGate
from .budgets import parse_budget
from .errors import BadRequest, openai_error
from .pricing import PriceTable, money_text
from .request_body import UserIds
from .storage.repository import Filters, Repository
from .types import Clock


class JSONResponse(Response):
    """JSON with exact decimals (written as numbers, never through a float) and UTC times."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_encode, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(money_text(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")


@dataclass(frozen=True)
class AdminAPI:
    """The admin endpoints, bound to the repository, the prices in force and a clock."""

    repository: Repository
    prices: Callable[[], PriceTable]
    clock: Clock
    budgets: BudgetGate
    user_ids: UserIds

    def routes(self) -> list[Route]:
        return [
            Route("/usage/stats", self.stats),
            Route("/usage/sessions", self.sessions),
            Route("/usage/sessions/{session_id:path}", self.session),
            Route("/usage/records", self.records),
            Route("/budgets", self.list_budgets, methods=["GET"]),
            Route("/budgets", self.put_budget, methods=["PUT"]),
            Route("/budgets/{budget_id}", self.delete_budget, methods=["DELETE"]),
        ]

    async def list_budgets(self, request: Request) -> Response:
        """Every budget set through the API with where it stands, and the defaults from configuration."""
        budgets = await run_in_threadpool(self.budgets.store.all)
        listed = await run_in_threadpool(lambda: [self.budgets.status(budget) for budget in budgets])
        defaults = [{"scope": budget.scope, "period": budget.period, "max_cost": budget.max_cost,
                     "max_tokens": budget.max_tokens, "warn_at": budget.warn_at} for budget in self.budgets.defaults]
        return JSONResponse({"budgets": sorted(listed, key=lambda item: item["id"]), "defaults": defaults})

    async def put_budget(self, request: Request) -> Response:
        """Create (201) or replace (200) the budget for (scope, subject, period)."""
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise BadRequest("the body must be JSON: {\"scope\", \"subject\", \"period\", \"max_cost\"...}") from None
        budget = parse_budget(payload)
        if budget.scope == "user":  # a user's budget is kept under the id records are stored with
            budget = dataclasses.replace(budget, subject=self.user_ids.stored(budget.subject))
        stored, created = await run_in_threadpool(self.budgets.store.put, budget, now=self.clock())
        await self.budgets.refresh()
        return JSONResponse(await run_in_threadpool(self.budgets.status, stored), status_code=201 if created else 200)

    async def delete_budget(self, request: Request) -> Response:
        """Remove a budget: 204, or 404 when there is none with that id."""
        text = request.path_params["budget_id"]
        if not text.isdigit():
            raise BadRequest(f"no budget with id {text!r}", param="id", status=404)
        if not await run_in_threadpool(self.budgets.store.delete, int(text)):
            raise BadRequest(f"no budget with id {text}", param="id", status=404)
        await self.budgets.refresh()
        return Response(status_code=204)

    async def stats(self, request: Request) -> Response:
        report = await run_in_threadpool(
            reports.usage_stats, self.repository, self.prices(), period=_text_param(request, "period") or "7d",
            now=self.clock(), currency=_text_param(request, "currency"), session_id=_text_param(request, "session_id"),
            user_id=self.user_ids.stored(_text_param(request, "user_id")), model=_text_param(request, "model"),
        )
        return JSONResponse(report)

    async def sessions(self, request: Request) -> Response:
        limit = _int_param(request, "limit", default=50, maximum=1000)
        offset = _int_param(request, "offset", default=0, minimum=0, maximum=2**31 - 1)
        return JSONResponse(await run_in_threadpool(reports.sessions_page, self.repository, limit=limit, offset=offset))

    async def session(self, request: Request) -> Response:
        session_id = _checked_text(request.path_params["session_id"], "session_id")
        limit = _int_param(request, "limit", default=1000, maximum=10_000)
        detail = await run_in_threadpool(reports.session_detail, self.repository, session_id, limit=limit)
        if detail is None:
            raise BadRequest(f"no records for session {session_id!r}", param="session_id", status=404)
        return JSONResponse(detail)

    async def records(self, request: Request) -> Response:
        filters = Filters(
            since=_time_param(request, "since"), until=_time_param(request, "until"),
            session_id=_text_param(request, "session_id"),
            user_id=self.user_ids.stored(_text_param(request, "user_id")), model=_text_param(request, "model"),
        )
        if filters.since and filters.until and filters.since > filters.until:
            raise BadRequest("since must not be after until", param="since")
        limit = _int_param(request, "limit", default=100, maximum=1000)
        page = await run_in_threadpool(
            reports.records_page, self.repository, filters, limit=limit, cursor=_text_param(request, "cursor")
        )
        return JSONResponse(page)


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


def _int_param(request: Request, name: str, *, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {text!r}", param=name) from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadRequest(f"{name} must be {bounds}, got {value}", param=name)
    return value


def _text_param(request: Request, name: str) -> str | None:
    """A text parameter, None when absent or empty."""
    text = request.query_params.get(name)
    return _checked_text(text, name) if text else None


def _checked_text(text: str, name: str) -> str:
    if "\x00" in text or len(text) > 1024:
        raise BadRequest(f"{name} must be printable text of at most 1024 characters", param=name)
    return text


def _time_param(request: Request, name: str) -> dt.datetime | None:
    text = _text_param(request, name)
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        moment = moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{name} must be an ISO 8601 date or time, such as 2026-11-25 or 2026-11-25T14:00:00Z; got {text!r}",
            param=name,
        ) from None
    return moment
