"""Alert events (no I/O): what each webhook says, the key that makes it once-only, and when a
failed delivery is tried again.

An event is `{"type", "timestamp", "text", "data"}`, signed and sent by `webhooks`. `text` is
one line a Slack or Teams incoming webhook shows as is; `data` the machine-readable part.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import orjson

from .pricing import money_text

BUDGET_WARNING = "budget.warning"
BUDGET_EXHAUSTED = "budget.exhausted"
MODEL_UNPRICED = "model.unpriced"
STORAGE_DEGRADED = "storage.degraded"
STORAGE_RECOVERED = "storage.recovered"
CONFIG_REJECTED = "config.rejected"
EVENT_TYPES = (BUDGET_WARNING, BUDGET_EXHAUSTED, MODEL_UNPRICED, STORAGE_DEGRADED, STORAGE_RECOVERED, CONFIG_REJECTED)
# Sent by the process itself, from memory: they say the database cannot be reached, so they
# cannot wait in its outbox.
DIRECT_TYPES = frozenset({STORAGE_DEGRADED, STORAGE_RECOVERED})

# Seconds to wait after the 1st, 2nd, 3rd... failed attempt; hourly after the last. The first
# retry comes 5 s after a failure, as in Standard Webhooks' reference sender.
RETRY_DELAYS = (5, 30, 120, 600, 1800, 3600)
GIVE_UP_AFTER = dt.timedelta(hours=24)

Data = Mapping[str, Any]


@dataclass(frozen=True)
class Alert:
    """Something worth telling, before it becomes an event. `data` may be a function that reads
    it (it is called off the event loop, and may query the database). Alerts with the same
    `key` are one event, delivered once per URL however many times or processes raise it; None:
    every alert is an event of its own."""

    type: str
    data: Data | Callable[[], Data]
    key: str | None = None


class AlertSink(Protocol):
    """Where the parts that notice things hand their alerts; never blocks, never raises."""

    def emit(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class Event:
    """An alert made into the event every URL receives, with the same `id` on every attempt."""

    id: str
    type: str
    created_at: dt.datetime
    text: str
    data: Data

    def body(self) -> bytes:
        """The JSON body, as signed and sent (exact decimals as numbers, times in UTC)."""
        return orjson.dumps({"type": self.type, "timestamp": self.created_at, "text": self.text, "data": self.data},
                            default=_encode, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def new_event(type_: str, data: Data, *, now: dt.datetime) -> Event:
    """A new event with a fresh `webhook-id`."""
    return Event(id=f"msg_{uuid.uuid4().hex}", type=type_, created_at=now, text=describe(type_, data), data=data)


def stored_key(alert: Alert, event_id: str) -> str:
    """The outbox's unique key of an alert: a digest of its key (or, without one, of the event id)."""
    return hashlib.sha256(f"{alert.type}\0{alert.key or event_id}".encode()).hexdigest()


def budget_key(type_: str, *, budget_id: int, version: dt.datetime | None, period_start: dt.datetime) -> str:
    """Once per budget, version (replacing a budget re-arms it) and period."""
    return f"{type_}:{budget_id}:{version.isoformat() if version else '-'}:{period_start.isoformat()}"


def unpriced_key(provider: str, model: str) -> str:
    """Once per provider and model, ever."""
    return f"{MODEL_UNPRICED}:{provider}:{model}"


def rejected_key(file: str, errors: list[str], *, now: dt.datetime) -> str:
    """Once a day per file and set of problems: replicas watching one file tell it once."""
    digest = hashlib.sha256("\n".join(errors).encode()).hexdigest()
    return f"{CONFIG_REJECTED}:{file}:{now.date().isoformat()}:{digest}"


def next_attempt(failed: int, *, created_at: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """When to try again after `failed` failed attempts; None once 24 h since the event have
    passed (the delivery has failed). The last try comes at the 24 h mark."""
    deadline = created_at + GIVE_UP_AFTER
    if now >= deadline:
        return None
    delay = RETRY_DELAYS[min(max(failed, 1), len(RETRY_DELAYS)) - 1]
    return min(now + dt.timedelta(seconds=delay), deadline)


def describe(type_: str, data: Data) -> str:
    """The event's one-line human message."""
    text = {BUDGET_WARNING: _warning_text, BUDGET_EXHAUSTED: _exhausted_text, MODEL_UNPRICED: _unpriced_text,
            STORAGE_DEGRADED: _degraded_text, STORAGE_RECOVERED: _recovered_text,
            CONFIG_REJECTED: _rejected_text}[type_](data)
    return " ".join(text.split())  # one line, whatever an error message held


def _budget_name(data: Data) -> str:
    who = "everyone" if data.get("scope") == "global" else f"{data.get('scope')} {data.get('subject')}"
    return f"{who} ({data.get('period')})"


def _crossed_cost(data: Data) -> bool:
    """Whether the cost limit (rather than the token limit) is the one the budget reached."""
    max_cost, max_tokens = data.get("max_cost"), data.get("max_tokens")
    if max_cost is None or not max_tokens:
        return max_cost is not None
    cost_share = Decimal(str(data.get("spent_cost") or 0)) * Decimal(max_tokens)
    return cost_share >= Decimal(data.get("spent_tokens") or 0) * Decimal(str(max_cost))


def _warning_text(data: Data) -> str:
    share = money_text(Decimal(str(data.get("warn_at", 0))) * 100)
    if _crossed_cost(data):
        figures = (f"{share}% of {_money(data.get('max_cost'))} {data.get('currency', '')}: "
                   f"{_money(data.get('spent_cost'))} spent")
    else:
        figures = f"{share}% of {data.get('max_tokens')} tokens: {data.get('spent_tokens')} spent"
    text = f"Budget {_budget_name(data)} reached {figures}"
    forecast = data.get("forecast_exhausted_at")
    if forecast:
        text += f"; at this rate it runs out {_moment(forecast)}"
    return text


def _exhausted_text(data: Data) -> str:
    if _crossed_cost(data):
        figures = (f"{_money(data.get('spent_cost'))} spent and {_money(data.get('reserved_cost'))} reserved of "
                   f"{_money(data.get('max_cost'))} {data.get('currency', '')}")
    else:
        figures = (f"{data.get('spent_tokens')} tokens spent and {data.get('reserved_tokens')} reserved of "
                   f"{data.get('max_tokens')}")
    resets = data.get("resets_at")
    until = f"; requests are refused until it resets {_moment(resets)}" if resets else "; it never resets"
    return f"Budget {_budget_name(data)} is exhausted and refused a request: {figures}{until}"


def _unpriced_text(data: Data) -> str:
    return (f"Model {data.get('model')} ({data.get('provider')}) has no price: its requests are recorded without "
            "a cost; add it to the pricing file")


def _degraded_text(data: Data) -> str:
    return (f"tokenmeter-proxy on {data.get('host')}: the database is unreachable ({data.get('error')}); usage "
            "records are spooled to disk until it answers")


def _recovered_text(data: Data) -> str:
    return (f"tokenmeter-proxy on {data.get('host')}: the database answers again; spooled usage records are "
            "being stored")


def _rejected_text(data: Data) -> str:
    errors = list(data.get("errors") or [])
    first = f": {errors[0]}" if errors else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{data.get('file')} was refused on reload and the one in force stays{first}{more}"


def _money(value: Any) -> str:
    return money_text(Decimal(str(value))) if value is not None else "?"


def _moment(value: Any) -> str:
    """A time as `2026-12-06 14:05 UTC`, from a datetime or ISO text."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if isinstance(value, dt.datetime):
        moment = value.astimezone(dt.UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(money_text(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")
