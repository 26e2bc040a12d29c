"""Usage reports in the contract's JSON shapes, shared by the admin API and the `stats` command.

Functions here are synchronous (they query the database); the API runs them in a thread.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

from .errors import BadRequest
from .pricing import PriceTable
from .storage.repository import Cursor, Filters, Group, Repository, Totals
from .types import UsageRecord

PERIODS = {
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
    "90d": dt.timedelta(days=90),
}
GROUPINGS = ("model", "provider", "day", "session", "user")


def parse_period(text: str) -> dt.timedelta:
    """One of 24h, 7d, 30d, 90d."""
    if text not in PERIODS:
        raise BadRequest(f"unknown period {text!r}: use one of {', '.join(PERIODS)}", param="period")
    return PERIODS[text]


def exchange_rate(table: PriceTable, currency: str | None) -> tuple[str, Decimal]:
    """The currency to report in (default: the pricing file's) and its rate from the file's."""
    if not currency:
        return table.currency, Decimal(1)
    rate = table.rate(currency)
    if rate is None:
        known = ", ".join([table.currency, *sorted(table.exchange_rates)])
        raise BadRequest(f"unknown currency {currency!r}: the pricing file has rates for {known}", param="currency")
    return currency.upper(), rate


def usage_stats(
    repository: Repository, table: PriceTable, *, period: str, now: dt.datetime, currency: str | None = None,
    session_id: str | None = None, user_id: str | None = None, model: str | None = None, provider: str | None = None,
    tag: tuple[str, str] | None = None, by_tag: str | None = None,
) -> dict[str, Any]:
    """`GET /api/usage/stats`: totals, one row per UTC day of the period, per model and per
    provider; with `by_tag`, per value of that tag (requests without it under `None`)."""
    since = now - parse_period(period)
    code, rate = exchange_rate(table, currency)
    filters = Filters(since=since, session_id=session_id, user_id=user_id, model=model, provider=provider, tag=tag)
    rows = repository.window(filters)
    totals = Totals()
    days: defaultdict[dt.date, Totals] = defaultdict(Totals)
    models: defaultdict[str | None, Totals] = defaultdict(Totals)
    providers: defaultdict[str, Totals] = defaultdict(Totals)
    for day, served_by, name, figures in rows:
        totals += figures
        days[day] += figures
        models[name] += figures
        providers[served_by] += figures
    daily = []
    day = since.date()
    while day <= now.date():
        daily.append({"date": day.isoformat(), **_brief(days.get(day, Totals()), rate)})
        day += dt.timedelta(days=1)
    by_model = [{"model": name, **_brief(figures, rate)}
                for name, figures in sorted(models.items(), key=lambda item: (-item[1].cost, item[0] or ""))]
    by_provider = [{"provider": name, **_brief(figures, rate)}
                   for name, figures in sorted(providers.items(), key=lambda item: (-item[1].cost, item[0]))]
    stats = {"period": period, "currency": code, "totals": totals_json(totals, rate), "daily": daily,
             "by_model": by_model, "by_provider": by_provider}
    if by_tag is not None:
        values = repository.by_tag(by_tag, filters)
        untagged = totals - sum((figures for _, figures in values), Totals())
        listed: list[tuple[str | None, Totals]] = [*values, (None, untagged)] if untagged.requests else list(values)
        stats["by_tag"] = [{"value": value, **_brief(figures, rate)} for value, figures in listed]
    return stats


def sessions_page(repository: Repository, *, limit: int, offset: int, prefix: str | None = None,
                  user_id: str | None = None) -> dict[str, Any]:
    """`GET /api/usage/sessions`: sessions with their totals and their cost per provider
    (`providers`, biggest first), most recently active first; with a search, those whose id
    starts with `prefix` or that `user_id` used."""
    total, groups = repository.sessions(limit=limit, offset=offset, prefix=prefix, user_id=user_id)
    mix = repository.provider_mix([group.key for group in groups if group.key is not None])

    def providers(key: str | None) -> list[dict[str, Any]]:
        return [{"provider": name, "requests": totals.requests, "cost": totals.cost}
                for name, totals in mix.get(key or "", [])]

    return {"total": total, "sessions": [{**session_json(group), "providers": providers(group.key)}
                                         for group in groups]}


def top_page(repository: Repository, table: PriceTable, *, by: str, period: str, now: dt.datetime, limit: int,
             currency: str | None = None, provider: str | None = None) -> dict[str, Any]:
    """`GET /api/usage/top`: the sessions, users or models that cost most in the period, with
    their totals and how many of their requests have no price (models: `id` "" is no model)."""
    if by not in ("session", "user", "model"):
        raise BadRequest(f"unknown grouping {by!r}: use session, user or model", param="by")
    since = now - parse_period(period)
    code, rate = exchange_rate(table, currency)
    rows = repository.top(by, since, limit=limit, provider=provider)
    return {"period": period, "currency": code, "by": by,
            "top": [{"id": key, **_brief(totals, rate), "unpriced_requests": totals.unpriced_requests}
                    for key, totals in rows]}


def session_detail(repository: Repository, session_id: str, *, limit: int) -> dict[str, Any] | None:
    """`GET /api/usage/sessions/{id}`: the session's totals and its records, newest first."""
    totals, records = repository.session(session_id, limit=limit)
    if totals is None:
        return None
    return {"session_id": session_id, "totals": totals_json(totals, Decimal(1)),
            "records": [record_json(record) for record in records]}


def records_page(repository: Repository, filters: Filters, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """`GET /api/usage/records`: a page of records, newest first, and the cursor of the next."""
    records = repository.records(filters, limit=limit + 1, after=decode_cursor(cursor) if cursor else None)
    page = records[:limit]
    following = encode_cursor(Cursor(page[-1].created_at, page[-1].id)) if len(records) > limit else None
    return {"records": [record_json(record) for record in page], "next_cursor": following}


def totals_json(totals: Totals, rate: Decimal) -> dict[str, Any]:
    """The contract's `totals` object."""
    return {
        "requests": totals.requests,
        "input_tokens": totals.input_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "output_tokens": totals.output_tokens,
        "total_tokens": totals.total_tokens,
        "cost": totals.cost * rate,
        "unpriced_requests": totals.unpriced_requests,
        "estimated_requests": totals.estimated_requests,
    }


def session_json(group: Group) -> dict[str, Any]:
    """One entry of the sessions list."""
    return {"session_id": group.key, "first_seen": group.first_seen, "last_seen": group.last_seen,
            **_brief(group.totals, Decimal(1))}


RECORD_FIELDS = ("id", "created_at", "session_id", "user_id", "api_key_id", "endpoint", "model", "input_tokens",
                 "cached_input_tokens", "output_tokens", "reasoning_tokens", "total_tokens", "cost", "currency",
                 "price_version", "usage_source", "status_code", "streamed", "latency_ms", "price_source", "provider",
                 "route", "tags")


def record_json(record: UsageRecord) -> dict[str, Any]:
    """A record as the API shows it; never a prompt, a completion or a raw key."""
    usage = record.usage
    return {
        "id": record.id, "created_at": record.created_at, "session_id": record.session_id,
        "user_id": record.user_id, "api_key_id": record.api_key_id, "endpoint": record.endpoint,
        "model": record.model, "input_tokens": usage.input_tokens, "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens, "total_tokens": usage.total_tokens, "cost": record.cost,
        "currency": record.currency, "price_version": record.price_version, "usage_source": record.usage_source,
        "status_code": record.status_code, "streamed": record.streamed, "latency_ms": record.latency_ms,
        "price_source": record.price_source, "provider": record.provider, "route": record.route,
        "tags": dict(record.tags),
    }


def encode_cursor(cursor: Cursor) -> str:
    """An opaque page cursor."""
    return base64.urlsafe_b64encode(f"{cursor.created_at.isoformat()}|{cursor.id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The cursor `encode_cursor` made; `BadRequest` for anything else."""
    try:
        moment, _, record_id = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode().partition("|")
        created_at = dt.datetime.fromisoformat(moment).astimezone(dt.UTC)
        if "\x00" in record_id:
            raise ValueError(record_id)
        return Cursor(created_at=created_at, id=record_id)
    except (ValueError, OverflowError):
        raise BadRequest("invalid cursor: pass the next_cursor of a previous page", param="cursor") from None


def _brief(totals: Totals, rate: Decimal) -> dict[str, Any]:
    return {"requests": totals.requests, "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens, "cost": totals.cost * rate}


def text_table(header: list[str], rows: list[list[str]], *, total_row: bool = False) -> str:
    """Columns aligned (the first to the left), a rule under the header and above a total row."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0 or (total_row and n == len(rows) - 1):
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
