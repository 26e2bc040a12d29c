"""The price catalog beneath the pricing file: models the file does not name are priced from
genai-prices (offline), and say so; the file always wins; unknown models stay unpriced."""

from __future__ import annotations

from decimal import Decimal

from conftest import PRICING
from tokenmeter_proxy.catalog import Catalog, price
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
