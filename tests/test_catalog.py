"""Prices beneath the pricing file: models the file does not name are priced by the cost the
upstream reported, else from genai-prices (offline) for the record's provider, and say so; the
file always wins; unknown models stay unpriced."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from genai_prices import data_snapshot

from conftest import PRICING
from tokenmeter_proxy.catalog import Catalog, Priced, price
from tokenmeter_proxy.pricing import parse_pricing
from tokenmeter_proxy.types import Usage

TABLE = parse_pricing(PRICING.replace("input: 2.50", "input: 3.00"))  # the file differs from the catalog
USAGE = Usage(input_tokens=1000, output_tokens=100)


def test_the_pricing_file_wins_over_the_catalog() -> None:
    priced = price(TABLE, Catalog(), "gpt-4o", USAGE)
    assert (priced.cost, priced.source, priced.key) == (Decimal("0.004"), "pricing_file", "gpt-4o")


def test_a_model_only_the_catalog_knows_is_priced_from_it() -> None:
    priced = price(TABLE, Catalog(), "claude-3-5-haiku-20241022", USAGE)
    assert priced.source == "catalog" and priced.cost == Decimal("0.0012")  # $0.80 in, $4 out per million


def test_an_unknown_model_stays_unpriced_never_free() -> None:
    catalog = Catalog()
    assert price(TABLE, catalog, "no-such-model-xyz", USAGE) == price(TABLE, catalog, "no-such-model-xyz", USAGE)
    assert price(TABLE, catalog, "no-such-model-xyz", USAGE).cost is None
    assert price(TABLE, catalog, None, USAGE).source is None


def test_catalog_prices_convert_to_the_files_currency_or_stay_unpriced() -> None:
    in_euros = parse_pricing("currency: EUR\nexchange_rates: {USD: 1.25}\nmodels: {}\n")
    assert price(in_euros, Catalog(), "claude-3-5-haiku-20241022", USAGE).cost == Decimal("0.00096")
    no_rate = parse_pricing("currency: EUR\nmodels: {}\n")
    assert price(no_rate, Catalog(), "claude-3-5-haiku-20241022", USAGE).cost is None


def test_the_catalog_lists_a_models_prices() -> None:
    found = Catalog().prices("gpt-4.1-mini")
    assert found is not None and (found.input, found.cached_input, found.output) == (
        Decimal("0.4"), Decimal("0.1"), Decimal("1.6"))
    assert Catalog().prices("no-such-model-xyz") is None


# Per provider: the file's section, then the cost the upstream reported, then the catalog for that provider.

PER_PROVIDER = parse_pricing("""\
currency: USD
models:
  claude-sonnet-4-5: {input: 99.00, output: 99.00}
providers:
  anthropic:
    models:
      claude-sonnet-4-5: {input: 3.00, cached_input: 0.30, cache_write: 3.75, output: 15.00}
""")


def test_an_anthropic_record_is_priced_from_the_anthropic_section_not_the_top_level_models() -> None:
    priced = price(PER_PROVIDER, Catalog(), "claude-sonnet-4-5-20250929", USAGE, provider="anthropic")
    assert (priced.cost, priced.source, priced.key) == (Decimal("0.0045"), "pricing_file", "claude-sonnet-4-5")


def test_the_cost_the_upstream_reported_prices_a_model_the_file_lacks() -> None:
    priced = price(PER_PROVIDER, Catalog(), "anthropic/claude-sonnet-4.5", USAGE, provider="openrouter",
                   reported_cost=Decimal("0.0051"))
    assert (priced.cost, priced.source) == (Decimal("0.0051"), "upstream")
    assert priced.key == "anthropic/claude-sonnet-4.5"  # the catalog's id, a bounded metrics label
    unknown = price(PER_PROVIDER, Catalog(), "someone/new-model", USAGE, provider="openrouter",
                    reported_cost=Decimal("0.0051"))
    assert (unknown.cost, unknown.source, unknown.key) == (Decimal("0.0051"), "upstream", None)


def test_the_file_wins_over_the_cost_the_upstream_reported() -> None:
    priced = price(PER_PROVIDER, Catalog(), "claude-sonnet-4-5", USAGE, provider="anthropic",
                   reported_cost=Decimal("0.5"))
    assert (priced.cost, priced.source) == (Decimal("0.0045"), "pricing_file")


def test_a_reported_cost_is_converted_to_the_files_currency_or_left_unpriced() -> None:
    in_euros = parse_pricing("currency: EUR\nexchange_rates: {USD: 1.25}\nmodels: {}\n")
    priced = price(in_euros, Catalog(), "anthropic/claude-sonnet-4.5", USAGE, provider="openrouter",
                   reported_cost=Decimal("0.01"))
    assert (priced.cost, priced.source) == (Decimal("0.008"), "upstream")
    no_rate = parse_pricing("currency: EUR\nmodels: {}\n")
    assert price(no_rate, Catalog(), "anthropic/claude-sonnet-4.5", USAGE, provider="openrouter",
                 reported_cost=Decimal("0.01")) == Priced(None, None, None)


def test_a_reported_cost_that_is_no_price_is_ignored() -> None:
    for nonsense in (Decimal("-0.01"), Decimal("NaN"), Decimal("Infinity")):
        priced = price(PER_PROVIDER, Catalog(), "anthropic/claude-sonnet-4.5", USAGE, provider="openrouter",
                       reported_cost=nonsense)
        assert (priced.cost, priced.source) == (Decimal("0.0045"), "catalog")


@pytest.mark.parametrize(("provider", "model", "cost", "key"), [
    ("anthropic", "claude-haiku-4-5-20251001", Decimal("0.0015"), "claude-haiku-4-5"),      # $1 in, $5 out
    ("google", "gemini-2.5-flash", Decimal("0.00055"), "gemini-2.5-flash"),                  # $0.30 in, $2.50 out
    ("openrouter", "anthropic/claude-sonnet-4.5", Decimal("0.0045"), "anthropic/claude-sonnet-4.5"),
    ("azure", "gpt-4o-2024-11-20", Decimal("0.0035"), "gpt-4o"),
    # An aggregator's vendor/model id the catalog does not list under the aggregator: the vendor's price.
    ("requesty", "anthropic/claude-sonnet-4-5", Decimal("0.0045"), "claude-sonnet-4-5"),
    ("openrouter", "anthropic/claude-haiku-4-5-20251001", Decimal("0.0015"), "claude-haiku-4-5"),
    ("requesty", "xai/grok-4", Decimal("0.0045"), "grok-4-0709"),                            # the catalog's x-ai
])
def test_the_catalog_prices_each_provider_with_its_own_list_prices(provider: str, model: str, cost: Decimal,
                                                                   key: str) -> None:
    empty = parse_pricing("models: {}\n")
    priced = price(empty, Catalog(), model, USAGE, provider=provider)
    assert (priced.cost, priced.source, priced.key) == (cost, "catalog", key)


@pytest.mark.parametrize(("provider", "model"), [
    ("ollama", "llama3"),                          # self-hosted: no cloud list price
    ("ollama", "gpt-4o"),                          # not even for a name the catalog knows elsewhere
    ("my-openai-proxy", "gpt-4o"),                 # the catalog's loose name matching is not used for routes
    ("anthropic", "gpt-4o"),                       # the provider is known, the model is not its own
    ("requesty", "nobody/claude-sonnet-4-5"),      # a vendor the catalog does not know
])
def test_a_model_the_catalog_does_not_know_for_the_provider_stays_unpriced(provider: str, model: str) -> None:
    assert price(parse_pricing("models: {}\n"), Catalog(), model, USAGE, provider=provider) == Priced(None, None, None)


def test_the_openai_provider_keeps_the_catalogs_guess_from_the_model_name() -> None:
    # The built-in /v1 route often fronts any OpenAI-compatible server.
    priced = price(parse_pricing("models: {}\n"), Catalog(), "claude-3-5-haiku-20241022", USAGE)
    assert (priced.cost, priced.source) == (Decimal("0.0012"), "catalog")


def test_a_pair_the_catalog_does_not_know_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[str] = []
    snapshot_type = type(data_snapshot.get_snapshot())
    real = snapshot_type.find_provider_model

    def counting(self: data_snapshot.DataSnapshot, model_ref: str, *args: Any) -> Any:
        lookups.append(model_ref)
        return real(self, model_ref, *args)

    monkeypatch.setattr(snapshot_type, "find_provider_model", counting)
    catalog = Catalog()
    for _ in range(3):
        assert catalog.cost_usd("no-such-model", USAGE, provider="anthropic") is None
    assert lookups == ["no-such-model"]
    assert catalog.cost_usd("no-such-model", USAGE, provider="google") is None  # another provider: asked again
    assert len(lookups) == 2


def test_the_catalog_lists_a_providers_prices() -> None:
    found = Catalog().prices("claude-sonnet-4-5-20250929", provider="anthropic")
    assert found is not None and (found.provider, found.model) == ("anthropic", "claude-sonnet-4-5")
    assert (found.input, found.cached_input, found.cache_write, found.output) == (
        Decimal("3"), Decimal("0.3"), Decimal("3.75"), Decimal("15"))
    assert Catalog().prices("llama3", provider="ollama") is None
