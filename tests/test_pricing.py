"""The pricing file: name resolution, exact costs, and line-precise refusal of broken files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from conftest import PRICING
from tokenmeter_proxy.errors import PricingError
from tokenmeter_proxy.pricing import load_pricing, money_text, parse_pricing
from tokenmeter_proxy.types import Usage

TABLE = parse_pricing(PRICING)


@pytest.mark.parametrize(("model", "key"), [
    ("gpt-4o", "gpt-4o"),                                  # exact name
    ("chatgpt-4o-latest", "gpt-4o"),                       # alias
    ("gpt-4o-2024-08-06", "gpt-4o"),                       # dated snapshot
    ("gpt-4o-mini", "gpt-4o-mini"),                        # exact beats prefix
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),             # the longest key wins
    ("gpt-4o2", None),                                     # a prefix must be followed by "-"
    ("gpt-4", None),
    ("mystery-model-9", None),
    ("", None),
])
def test_a_model_name_resolves_by_name_then_alias_then_longest_prefix(model: str, key: str | None) -> None:
    assert TABLE.resolve(model) == key


def test_cost_is_exact_and_cached_tokens_are_part_of_the_input() -> None:
    # (800 x 2.50 + 200 x 1.25 + 500 x 10.00) / 1e6
    usage = Usage(input_tokens=1000, cached_input_tokens=200, output_tokens=500)
    assert TABLE.cost("gpt-4o-2024-08-06", usage) == Decimal("0.00725")


def test_cache_written_tokens_are_priced_at_the_cache_write_price() -> None:
    # (1000 - 300 - 200) x 3.00 + 300 x 0.30 + 200 x 3.75 + 100 x 15.00, per million
    usage = Usage(input_tokens=1000, cached_input_tokens=300, cache_write_tokens=200, output_tokens=100)
    assert TABLE.cost("claude-like", usage) == Decimal("0.00384")


def test_cached_input_defaults_to_the_input_price_and_output_to_zero() -> None:
    usage = Usage(input_tokens=5000, cached_input_tokens=1000, output_tokens=7)
    assert TABLE.cost("text-embedding-3-small", usage) == Decimal("0.0001")


def test_an_unknown_model_has_no_cost_rather_than_zero() -> None:
    assert TABLE.cost("mystery-model-9", Usage(input_tokens=10)) is None
    assert TABLE.cost(None, Usage(input_tokens=10)) is None


def test_prices_never_pass_through_a_float() -> None:
    table = parse_pricing("models:\n  m: {input: 0.1, output: 0.2}\n")
    assert table.cost("m", Usage(input_tokens=1_000_000, output_tokens=1_000_000)) == Decimal("0.3")


def test_exchange_rates_convert_from_the_file_currency() -> None:
    assert TABLE.rate("usd") == 1
    assert TABLE.rate("EUR") == Decimal("0.5")
    assert TABLE.rate("JPY") is None


def test_the_version_is_a_short_hash_of_the_text() -> None:
    assert len(TABLE.version) == 12
    assert parse_pricing(PRICING).version == TABLE.version
    assert parse_pricing(PRICING + "\n# edited\n").version != TABLE.version


@pytest.mark.parametrize(("text", "problem"), [
    ("models: [this is: not valid", "pricing.yaml:1: not valid YAML"),
    ("models:\n  gpt-4o: {input: 2.5}\n  bad:\n    input: cheap\n",
     "pricing.yaml:4: models.bad.input: expected a number, got 'cheap'"),
    ("models:\n  m:\n    output: 1\n", "pricing.yaml:3: models.m: missing 'input'"),
    ("models:\n  m: {input: -1}\n", "pricing.yaml:2: models.m.input: a price cannot be negative"),
    ("models:\n  m: {input: 1, ouput: 2}\n", "pricing.yaml:2: models.m: unknown key 'ouput'"),
    ("models:\n  m: {input: 1}\n  m: {input: 2}\n", "pricing.yaml:3: models: 'm' appears twice"),
    ("currency: USD\nunit_tokens: 0\nmodels: {}\n",
     "pricing.yaml:2: unit_tokens: must be a whole number greater than 0"),
    ("models:\n  m: {input: '1.5'}\n", "pricing.yaml:2: models.m.input: expected a number"),
    ("exchange_rates: {EUR: 0}\nmodels: {}\n", "pricing.yaml:1: exchange_rates.EUR: must be greater than 0"),
    ("currency: USD\n", "pricing.yaml:1: missing 'models'"),
    ("- a list\n", "pricing.yaml:1: the pricing file must be a mapping"),
    ("models:\n  a: {input: 1, aliases: [b]}\n  b: {input: 2}\n", "alias 'b' is also a model key"),
])
def test_a_broken_file_is_refused_with_the_line_of_each_problem(text: str, problem: str) -> None:
    with pytest.raises(PricingError) as refused:
        parse_pricing(text)
    assert any(line.startswith(problem) or problem in line for line in refused.value.problems), refused.value.problems


def test_every_problem_is_reported_not_just_the_first() -> None:
    with pytest.raises(PricingError) as refused:
        parse_pricing("models:\n  a: {input: x}\n  b: {input: -2}\n")
    assert len(refused.value.problems) == 2


def test_the_shipped_pricing_file_is_valid_and_prices_todays_models() -> None:
    table = load_pricing(Path(__file__).parents[1] / "config" / "pricing.yaml")
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini",
                  "o4-mini", "gpt-3.5-turbo", "text-embedding-3-small", "text-embedding-3-large"):
        assert table.resolve(model) == model
    assert table.models["gpt-4o"].cached_input == Decimal("1.25")
    assert table.resolve("gpt-4o-2024-05-13") == "gpt-4o-2024-05-13"  # not the newer snapshot's price


def test_money_is_written_as_plain_digits() -> None:
    assert money_text(Decimal("7.25E-3")) == "0.00725"
    assert money_text(Decimal("0.0072500000")) == "0.00725"
    assert money_text(Decimal("12.000")) == "12"
    assert money_text(Decimal(0)) == "0"


@pytest.mark.parametrize("text", ["currency: US dollars\nmodels: {}\n", "exchange_rates: {EURO-ZONE: 1}\nmodels: {}\n"])
def test_currency_codes_are_short_letter_codes(text: str) -> None:
    with pytest.raises(PricingError, match="a currency code is 3 to 8 letters"):
        parse_pricing(text)
