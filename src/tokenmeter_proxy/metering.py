"""Count, price, record: the one place where a finished exchange becomes a `UsageRecord`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import tokens
from .alerts import MODEL_UNPRICED, Alert, AlertSink, unpriced_key
from .catalog import Catalog, price
from .identity import clean_model
from .metrics import Metrics
from .pricing import PriceTable
from .providers import RequestFacts, ResponseReading
from .routes import Route
from .types import Clock, Usage, UsageRecord, UsageSink, UsageSource, utc_now

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the response ended
# Below this many bytes, tiktoken counts in well under 100 us: cheaper than a hop to a thread.
INLINE_COUNT_BYTES = 16_384


def new_request_id() -> str:
    """A 24-hex-digit id that sorts by creation time (milliseconds, then 48 random bits).

    The bits come from `random` (reseeded from the OS in every process), not `os.urandom`: ids
    need to be unique, not secret, and a system call releases the GIL, which the writer thread
    may then keep for up to a switch interval while this request waits."""
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(48):012x}"


@dataclass
class Exchange:
    """One metered request, from its arrival to its record."""

    id: str
    route: Route
    facts: RequestFacts
    raw_body: bytes
    session_id: str | None
    user_id: str | None
    api_key_id: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


class Meter:
    """Turns finished exchanges into priced records and hands them to the sink."""

    def __init__(
        self, *, prices: Callable[[], PriceTable], sink: UsageSink, metrics: Metrics | None = None,
        clock: Clock = utc_now, catalog: Catalog | None = None, alerts: AlertSink | None = None,
    ) -> None:
        self.prices = prices
        self.alerts = alerts
        self.catalog = catalog
        self.sink = sink
        self.metrics = metrics
        self.clock = clock

    async def finish(
        self, exchange: Exchange, reading: ResponseReading, *, status: int | None, streamed: bool,
        billed: bool = True,
    ) -> UsageRecord:
        """Record the exchange: the upstream's usage when it reported one; none when not `billed`
        (the upstream answered with an error); otherwise a tiktoken estimate of what was sent and
        what came back. Returns the record, already submitted."""
        model = clean_model(reading.model or exchange.facts.model)
        usage, source = await self._usage(exchange, reading, billed=billed, model=model)
        table = self.prices()
        route = exchange.route
        priced = price(table, self.catalog, model, usage, provider=route.provider,
                       reported_cost=reading.reported_cost if billed else None)
        record = UsageRecord(
            id=exchange.id,
            created_at=self.clock(),
            session_id=exchange.session_id,
            user_id=exchange.user_id,
            api_key_id=exchange.api_key_id,
            endpoint=exchange.facts.endpoint,
            model=model,
            usage=usage,
            cost=priced.cost,
            currency=table.currency,
            price_version=table.version,
            usage_source=source,
            status_code=status,
            streamed=streamed,
            latency_ms=round((time.perf_counter() - exchange.started) * 1000),
            price_source=priced.source,
            provider=route.provider,
            route=route.name,
            tags=exchange.tags,
        )
        self.sink.submit(record)
        if self.metrics is not None:
            self.metrics.observe(record, model_key=priced.key)
        if self.alerts is not None and record.cost is None and model and billed and status is not None and status < 400:
            # a billed record without a price (the sink remembers which were raised: no database round trip)
            self.alerts.emit(Alert(MODEL_UNPRICED, {"model": model, "provider": route.provider},
                                   key=unpriced_key(route.provider, model)))
        return record

    def count_unmetered(self, provider: str, status: int) -> None:
        """Count a forwarded request that is not metered (models, files...)."""
        if self.metrics is not None:
            self.metrics.requests.labels(provider, "unmetered", str(status)).inc()

    async def _usage(
        self, exchange: Exchange, reading: ResponseReading, *, billed: bool, model: str | None
    ) -> tuple[Usage, UsageSource]:
        if reading.usage is not None and reading.usage_final:
            return reading.usage, "upstream"
        if not billed:
            return Usage(), "upstream"
        if len(exchange.raw_body) + sum(map(len, reading.output_parts)) < INLINE_COUNT_BYTES:
            return _estimate(exchange, reading, model), "estimated"
        # Counting a large prompt takes milliseconds: off the event loop, so other streams never stall.
        return await asyncio.to_thread(_estimate, exchange, reading, model), "estimated"


def _estimate(exchange: Exchange, reading: ResponseReading, model: str | None) -> Usage:
    """What the request sent and what came back, counted with tiktoken; where the upstream
    reported counts for part of a stream that then broke off, its figures, and the output
    estimated from the text where that says more."""
    output_tokens = tokens.count_text(model, reading.output_text) if reading.output_parts else 0
    partial = reading.usage
    if partial is not None:
        return Usage(input_tokens=partial.input_tokens, output_tokens=max(partial.output_tokens, output_tokens),
                     cached_input_tokens=partial.cached_input_tokens, cache_write_tokens=partial.cache_write_tokens,
                     reasoning_tokens=partial.reasoning_tokens)
    return Usage(input_tokens=exchange.route.protocol.count_input(exchange.facts, exchange.raw_body),
                 output_tokens=output_tokens)
