"""Shared value types and seams: what a request used, what we store about it, who stores it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

UsageSource = Literal["upstream", "estimated", "reported", "demo"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request. Cached and cache-written tokens are part of `input_tokens`,
    reasoning tokens part of `output_tokens`, as the OpenAI API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One metered request as stored: identity, counts, price. Never a prompt or a raw key."""

    id: str
    created_at: dt.datetime
    session_id: str | None
    user_id: str | None
    api_key_id: str | None
    endpoint: str
    model: str | None
    usage: Usage
    cost: Decimal | None
    currency: str
    price_version: str
    usage_source: UsageSource
    status_code: int | None
    streamed: bool
    latency_ms: int
    price_source: str | None = None  # "pricing_file", "upstream", "catalog", or None: unpriced
    provider: str = "openai"  # who served it, for prices and reports: the route's provider
    route: str | None = None  # the route it came through ("openai" for /v1); None: reported, not proxied
    tags: Mapping[str, str] = field(default_factory=dict)  # X-TokenMeter-Tags: {"feature": "summarize"}


class UsageSink(Protocol):
    """Where finished records go (the background writer in production, a list in tests)."""

    def submit(self, record: UsageRecord) -> None: ...


class Clock(Protocol):
    """Current time in UTC; injectable so periods and windows can be tested without sleeping."""

    def __call__(self) -> dt.datetime: ...


def utc_now() -> dt.datetime:
    """The real clock."""
    return dt.datetime.now(dt.UTC)


# What a model's usage costs now for a provider (model, usage, provider), and which source
# priced it: (None, None) when unpriced.
Pricer = Callable[[str | None, Usage, str], tuple[Decimal | None, str | None]]
