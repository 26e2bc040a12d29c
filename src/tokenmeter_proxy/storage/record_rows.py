"""A usage record and its row in `usage_records`: the values it is stored as, and the record a
row holds. Pure: no queries."""

from __future__ import annotations

from typing import Any

import orjson

from ..types import Usage, UsageRecord
from .rollups import tags_of
from .tables import UsageRecordRow, cost_from_e10, cost_to_e10, naive_utc, stored_utc

records_table = UsageRecordRow.__table__  # type: ignore[attr-defined]


def record_values(record: UsageRecord) -> dict[str, Any]:
    """A record as the values of its row."""
    usage = record.usage
    return {
        "id": record.id, "created_at": naive_utc(record.created_at), "session_id": record.session_id,
        "user_id": record.user_id, "api_key_id": record.api_key_id, "endpoint": record.endpoint,
        "model": record.model, "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens, "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens, "reasoning_tokens": usage.reasoning_tokens,
        "cost_e10": cost_to_e10(record.cost), "currency": record.currency, "price_version": record.price_version,
        "usage_source": record.usage_source, "status_code": record.status_code, "streamed": record.streamed,
        "latency_ms": record.latency_ms, "price_source": record.price_source, "provider": record.provider,
        "route": record.route,
        "tags": orjson.dumps(record.tags, option=orjson.OPT_SORT_KEYS).decode() if record.tags else None,
    }


def record_from_row(row: Any) -> UsageRecord:
    """A stored row (a mapping of its columns) as the record it holds."""
    return UsageRecord(
        id=row["id"], created_at=stored_utc(row["created_at"]), session_id=row["session_id"], user_id=row["user_id"],
        api_key_id=row["api_key_id"], endpoint=row["endpoint"], model=row["model"],
        usage=Usage(
            input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
            cached_input_tokens=row["cached_input_tokens"], cache_write_tokens=row["cache_write_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
        ),
        cost=cost_from_e10(row["cost_e10"]), currency=row["currency"], price_version=row["price_version"],
        usage_source=row["usage_source"], status_code=row["status_code"], streamed=bool(row["streamed"]),
        latency_ms=row["latency_ms"], price_source=row["price_source"], provider=row["provider"], route=row["route"],
        tags=tags_of(row),
    )
