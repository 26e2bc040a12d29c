"""Prometheus metrics, in a registry of the app's own (no process-wide state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .types import UsageRecord

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Counters of requests, tokens and cost, and a latency histogram.

    Model labels are pricing keys (or "unpriced"), never raw model names: a client can
    send any model name, and every distinct label value costs the scraper memory.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tokenmeter_requests", "Proxied requests by provider, endpoint (unmetered: not metered) and status code.",
            ["provider", "endpoint", "status"], registry=self.registry,
        )
        self.tokens = Counter(
            "tokenmeter_tokens", "Tokens by provider, priced model and direction (input, cached_input, output).",
            ["provider", "model", "direction"], registry=self.registry,
        )
        self.cost = Counter(
            "tokenmeter_cost", "Cost in the pricing currency by provider and priced model.",
            ["provider", "model", "currency"], registry=self.registry,
        )
        self.latency = Histogram(
            "tokenmeter_request_duration_seconds", "Time from request to the end of the response.",
            ["endpoint", "streamed"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.budget_refusals = Counter(
            "tokenmeter_budget_refusals", "Requests refused with 429 because a budget was spent, by budget scope.",
            ["scope"], registry=self.registry,
        )
        self.queued_records = Gauge(
            "tokenmeter_records_pending", "Usage records waiting to be stored.", registry=self.registry,
        )

        # Label lookups cost more than the counting: keep each label set's children at hand.
        self._per_request: dict[tuple[str, str, int | None, bool], tuple[Any, Any]] = {}
        self._per_model: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    def observe(self, record: UsageRecord, *, model_key: str | None) -> None:
        """Count one finished record."""
        model = model_key or "unpriced"
        usage, provider = record.usage, record.provider
        key = (provider, record.endpoint, record.status_code, record.streamed)
        per_request = self._per_request.get(key)
        if per_request is None:
            per_request = self._per_request[key] = (
                self.requests.labels(provider, record.endpoint, str(record.status_code)),
                self.latency.labels(record.endpoint, "true" if record.streamed else "false"),
            )
        per_model = self._per_model.get((provider, model, record.currency))
        if per_model is None:
            per_model = self._per_model[(provider, model, record.currency)] = (
                self.tokens.labels(provider, model, "input"), self.tokens.labels(provider, model, "cached_input"),
                self.tokens.labels(provider, model, "output"), self.cost.labels(provider, model, record.currency),
            )
        requests, latency = per_request
        input_tokens, cached_input_tokens, output_tokens, cost = per_model
        requests.inc()
        input_tokens.inc(usage.input_tokens)
        cached_input_tokens.inc(usage.cached_input_tokens)
        output_tokens.inc(usage.output_tokens)
        if record.cost is not None:
            cost.inc(float(record.cost))
        latency.observe(record.latency_ms / 1000)

    def count_from(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A counter kept elsewhere (e.g. by the record writer), read at each scrape."""
        self.registry.register(_ReadCounter(name, documentation, read))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _ReadCounter(Collector):
    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.read())
