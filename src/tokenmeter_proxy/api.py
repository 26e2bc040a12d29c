"""The usage endpoints under `/api/usage`: stats, sessions, records, reported usage, CSV export
and erasure. Stats and the sessions list are cached until this process stores another record,
and two seconds at most (records other replicas store): dashboards refreshing together cost
one query, and no number is ever older than that."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from cachetools import TTLCache
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import reports
from .catalog import Catalog, price
from .errors import BadRequest
from .identity import UserIds, clean_identity, clean_model
from .metering import new_request_id
from .pricing import PROVIDER_NAME, PriceTable, money_text
from .storage.maintenance import erase_user
from .storage.repository import Cursor, Filters, Repository
from .tags import checked_tags, tag_filter, tag_name
from .types import Clock, Usage, UsageRecord
from .web import JSONResponse, checked_text, int_param, json_object, text_param, time_param

CACHE_SECONDS = 0.5  # below the contract's 1 s, for records other workers or replicas store
MAX_REPORTED_TOKENS = 10**11  # a count whose cost still fits the database's integers
EXPORT_PAGE = 5000


@dataclass(frozen=True)
class AdminAPI:
    """The usage endpoints, bound to the repository, the prices in force and a clock."""

    repository: Repository
    prices: Callable[[], PriceTable]
    clock: Clock
    user_ids: UserIds
    catalog: Catalog | None = None
    stored: Callable[[], int] = lambda: 0  # how many records this process has stored so far
    cache: TTLCache[Any, Any] = field(default_factory=lambda: TTLCache(maxsize=1024, ttl=CACHE_SECONDS))

    def routes(self) -> list[Route]:
        return [
            Route("/usage/stats", self.stats),
            Route("/usage/sessions", self.sessions),
            Route("/usage/top", self.top),
            Route("/usage/sessions/{session_id:path}", self.session),
            Route("/usage/records", self.records),
            Route("/usage/log", self.log, methods=["POST"]),
            Route("/usage/export", self.export),
            Route("/usage/users/{user_id:path}", self.erase, methods=["DELETE"]),
        ]

    async def stats(self, request: Request) -> Response:
        """Totals, daily figures and per-model figures for a period."""
        period = text_param(request, "period") or "7d"
        currency, model = text_param(request, "currency"), text_param(request, "model")
        session_id, provider = text_param(request, "session_id"), text_param(request, "provider")
        user_id = self.user_ids.stored(text_param(request, "user_id"))
        tag = _tag_param(request)
        by_tag = text_param(request, "by_tag")
        by_tag = tag_name(by_tag) if by_tag is not None else None
        key = ("stats", period, currency, session_id, user_id, model, provider, tag, by_tag)
        return JSONResponse(await self._cached(key, lambda: reports.usage_stats(
            self.repository, self.prices(), period=period, now=self.clock(), currency=currency,
            session_id=session_id, user_id=user_id, model=model, provider=provider, tag=tag, by_tag=by_tag)))

    async def sessions(self, request: Request) -> Response:
        """Sessions, most recently active first; `q` finds those whose id starts with it, or
        that the user of that id used."""
        limit = int_param(request, "limit", default=50, maximum=1000)
        offset = int_param(request, "offset", default=0, minimum=0, maximum=2**31 - 1)
        search = text_param(request, "q")
        user_id = self.user_ids.stored(search.strip()) if search and search.strip() else None
        return JSONResponse(await self._cached(("sessions", limit, offset, search), lambda: reports.sessions_page(
            self.repository, limit=limit, offset=offset, prefix=search, user_id=user_id)))

    async def top(self, request: Request) -> Response:
        """The sessions, users or models that cost most in a period."""
        period = text_param(request, "period") or "7d"
        by = text_param(request, "by") or "session"
        limit = int_param(request, "limit", default=10, maximum=100)
        currency, provider = text_param(request, "currency"), text_param(request, "provider")
        return JSONResponse(await self._cached(("top", period, by, limit, currency, provider), lambda: reports.top_page(
            self.repository, self.prices(), by=by, period=period, now=self.clock(), limit=limit,
            currency=currency, provider=provider)))

    async def session(self, request: Request) -> Response:
        """One session's totals and records."""
        session_id = checked_text(request.path_params["session_id"], "session_id")
        limit = int_param(request, "limit", default=1000, maximum=10_000)
        detail = await run_in_threadpool(reports.session_detail, self.repository, session_id, limit=limit)
        if detail is None:
            raise BadRequest(f"no records for session {session_id!r}", param="session_id", status=404)
        return JSONResponse(detail)

    async def records(self, request: Request) -> Response:
        """Records newest first, a page at a time."""
        filters = self._filters(request)
        limit = int_param(request, "limit", default=100, maximum=1000)
        page = await run_in_threadpool(reports.records_page, self.repository, filters, limit=limit,
                                       cursor=text_param(request, "cursor"))
        return JSONResponse(page)

    async def log(self, request: Request) -> Response:
        """Record usage that did not pass through the proxy (`usage_source: "reported"`)."""
        record = self._reported(json_object(await request.body(),
                                                " with session_id, model, input_tokens and output_tokens"))
        await run_in_threadpool(self.repository.insert_records, [record])
        self.cache.clear()
        return JSONResponse(reports.record_json(record), status_code=201)

    async def export(self, request: Request) -> Response:
        """Every record of the period as CSV, streamed a page at a time (constant memory)."""
        export_format = text_param(request, "format") or "csv"
        if export_format != "csv":
            raise BadRequest(f"unknown export format {export_format!r}: use csv", param="format")
        period = text_param(request, "period") or "30d"
        filters = Filters(since=self.clock() - reports.parse_period(period),
                          session_id=text_param(request, "session_id"),
                          user_id=self.user_ids.stored(text_param(request, "user_id")),
                          model=text_param(request, "model"), provider=text_param(request, "provider"),
                          tag=_tag_param(request))
        name = f"tokenmeter-usage-{self.clock():%Y-%m-%d}-{period}.csv"
        return StreamingResponse(self._csv(filters), media_type="text/csv; charset=utf-8",
                                 headers={"content-disposition": f'attachment; filename="{name}"'})

    async def erase(self, request: Request) -> Response:
        """Erase a user's records and their share of every rollup."""
        user_id = checked_text(request.path_params["user_id"], "user_id")
        engine = self.repository.engine
        deleted = await run_in_threadpool(erase_user, engine, self.repository.rollups,
                                          self.user_ids.stored(user_id) or user_id)
        self.cache.clear()
        return JSONResponse({"deleted": deleted})

    async def _csv(self, filters: Filters) -> AsyncIterator[bytes]:
        columns = list(reports.RECORD_FIELDS)
        yield _csv_rows([columns])
        after: Cursor | None = None
        while True:
            page = await run_in_threadpool(self.repository.records, filters, limit=EXPORT_PAGE, after=after)
            if not page:
                return
            fields = [reports.record_json(record) for record in page]
            yield _csv_rows([[_csv_value(values[name]) for name in columns] for values in fields])
            after = Cursor(page[-1].created_at, page[-1].id)

    async def _cached(self, key: tuple[Any, ...], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        key = (self.stored(), *key)
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = await run_in_threadpool(compute)
        return found  # type: ignore[no-any-return]

    def _filters(self, request: Request) -> Filters:
        filters = Filters(
            since=time_param(request, "since"), until=time_param(request, "until"),
            session_id=text_param(request, "session_id"),
            user_id=self.user_ids.stored(text_param(request, "user_id")), model=text_param(request, "model"),
            provider=text_param(request, "provider"), tag=_tag_param(request),
        )
        if filters.since and filters.until and filters.since > filters.until:
            raise BadRequest("since must not be after until", param="since")
        return filters

    def _reported(self, body: dict[str, Any]) -> UsageRecord:
        session_id = _required_text(body, "session_id")
        model = clean_model(_required_text(body, "model"))
        provider = body.get("provider", "openai")
        if not isinstance(provider, str) or not PROVIDER_NAME.fullmatch(provider):
            raise BadRequest("provider must be a provider name such as openai, anthropic or google "
                             "(lowercase letters, digits, '.', '_' and '-')", param="provider")
        user = body.get("user_id")
        if user is not None and not isinstance(user, str):
            raise BadRequest("user_id must be a string", param="user_id")
        usage = Usage(input_tokens=_count(body, "input_tokens", required=True),
                      output_tokens=_count(body, "output_tokens", required=True),
                      cached_input_tokens=_count(body, "cached_input_tokens"))
        if usage.cached_input_tokens > usage.input_tokens:
            raise BadRequest("cached_input_tokens are part of input_tokens and cannot exceed them",
                             param="cached_input_tokens")
        table = self.prices()
        priced = price(table, self.catalog, model, usage, provider=provider)
        return UsageRecord(
            id=new_request_id(), created_at=self.clock(), session_id=clean_identity(session_id),
            user_id=self.user_ids.stored(clean_identity(user) if user else None), api_key_id=None,
            endpoint="reported", model=model, usage=usage, cost=priced.cost, currency=table.currency,
            price_version=table.version, usage_source="reported", status_code=None, streamed=False, latency_ms=0,
            price_source=priced.source, provider=provider, route=None, tags=checked_tags(body.get("tags")),
        )


def _tag_param(request: Request) -> tuple[str, str] | None:
    text = text_param(request, "tag")
    return None if text is None else tag_filter(text)


def _required_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > 256 or "\x00" in value:
        raise BadRequest(f"{name} is required: a string of 1 to 256 characters", param=name)
    return value


def _count(body: dict[str, Any], name: str, *, required: bool = False) -> int:
    value = body.get(name, None if required else 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPORTED_TOKENS:
        raise BadRequest(f"{name} must be a whole number of tokens, at least 0", param=name)
    return value


def _csv_rows(rows: list[list[Any]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # a spreadsheet would run it as a formula: ids come from any client
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):  # tags: one JSON column
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if hasattr(value, "as_tuple"):  # a Decimal: exact digits
        return money_text(value)
    return value
