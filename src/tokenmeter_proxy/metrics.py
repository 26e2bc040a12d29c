"""Prometheus metrics, in a registry of the app's own (no process-wide state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
            "tokenmeter_requests", "Metered requests by endpoint and status code.",
            ["endpoint", "status"], registry=self.registry,
        )
        self.tokens = Counter(
            "tokenmeter_tokens", "Tokens by priced model and direction (input, cached_input, output).",
            ["model", "direction"], registry=self.registry,
        )
        self.cost = Counter(
            "tokenmeter_cost", "Cost in the pricing currency by priced model.",
            ["model", "currency"], registry=self.registry,
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

    def observe(self, record: UsageRecord, *, model_key: str | None) -> None:
        """Count one finished record."""
        model = model_key or "unpriced"
        usage = record.usage
        self.requests.labels(record.endpoint, str(record.status_code)).inc()
        self.tokens.labels(model, "input").inc(usage.input_tokens)
        self.tokens.labels(model, "cached_input").inc(usage.cached_input_tokens)
        self.tokens.labels(model, "output").inc(usage.output_tokens)
        if record.cost is not None:
            self.cost.labels(model, record.currency).inc(float(record.cost))
        self.latency.labels(record.endpoint, "true" if record.streamed else "false").observe(record.latency_ms / 1000)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
