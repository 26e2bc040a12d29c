"""A span's attributes: what many spans share is kept encoded by `shared_key`, so two spans with
the same key must share exactly the same attributes, and the rest must be the request's own."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokenmeter_proxy.span_attributes import (
    REFUSED,
    Attributes,
    attributes,
    own_attributes,
    shared_attributes,
    shared_key,
)
from tokenmeter_proxy.types import Usage, UsageRecord


@dataclass
class Facts:
    endpoint: str = "chat/completions"
    provider: str = "openai"
    model: str | None = "gpt-4o-mini"
    request_id: str = "r-1"
    session_id: str | None = "s-1"
    extra: Attributes | None = None


def record(*, model: str | None = "gpt-4o-mini-2024-07-18", cost: str | None = "0.0001", tokens: int = 10,
           currency: str = "USD") -> UsageRecord:
    return UsageRecord(
        id="r-1", created_at=dt.datetime(2026, 12, 6, tzinfo=dt.UTC), session_id="s-1", user_id=None, api_key_id=None,
        endpoint="chat/completions", model=model, usage=Usage(input_tokens=tokens, output_tokens=tokens // 2),
        cost=None if cost is None else Decimal(cost), currency=currency, price_version="v", usage_source="reported",
        status_code=200, streamed=False, latency_ms=1, price_source="pricing_file", provider="openai", route="openai",
        tags={})


def test_spans_with_the_same_key_share_the_same_attributes_and_no_others_do() -> None:
    facts = [Facts(), Facts(session_id="s-2"), Facts(session_id=None), Facts(model="gpt-4o"), Facts(model=None),
             Facts(provider="anthropic", endpoint="messages"), Facts(request_id="r-2")]
    records: list[Any] = [record(), record(model="other"), record(currency="EUR"), record(tokens=99, cost=None),
                          None, REFUSED]
    seen: dict[tuple[Any, ...], Attributes] = {}
    for span, ended, status, named in itertools.product(facts, records, (200, 503, None), (True, False)):
        key = shared_key(span, ended, status=status, named=named)
        shared = shared_attributes(span, ended, status=status, named=named)
        assert key is not None
        assert seen.setdefault(key, shared) == shared, key
    assert len({tuple(sorted(shared.items())) for shared in seen.values()}) == len(seen), "a key per distinct set"


def test_a_span_is_its_shared_and_its_own_attributes() -> None:
    ended = record(tokens=1000)
    found = attributes(Facts(request_id="r-9"), ended, status=200, named=True)
    assert found == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "tokenmeter.session_id": "s-1", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "tokenmeter.currency": "USD", "tokenmeter.request_id": "r-9", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500, "tokenmeter.cost": 0.0001}
    assert set(own_attributes(Facts(), ended)) == {"tokenmeter.request_id", "gen_ai.usage.input_tokens",
                                                   "gen_ai.usage.output_tokens", "tokenmeter.cost"}


def test_a_samplers_attributes_are_never_kept() -> None:
    span = Facts(extra={"sampler.rate": 0.5})
    assert shared_key(span, record(), status=200, named=True) is None
    assert shared_attributes(span, record(), status=200, named=True)["sampler.rate"] == 0.5


def test_a_refusal_used_nothing_and_an_error_says_its_status() -> None:
    refused = attributes(Facts(), REFUSED, status=429, named=False)
    assert (refused["gen_ai.usage.input_tokens"], refused["gen_ai.usage.output_tokens"], refused["error.type"]) == (
        0, 0, "429")
    assert "error.type" not in attributes(Facts(), record(), status=200, named=True)
