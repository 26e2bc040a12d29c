"""The pricing file: name resolution, exact costs, and line-precise refusal of broken files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from conftest import PRICING
from tokenmeter_proxy.errors import PricingError
from tokenmeter_proxy.pricing import ModelPrice, cost_of, load_pricing, money_text, parse_pricing, token_rates
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


@pytest.mark.parametrize(("input_price", "output_price", "rates"), [
    ("0.15", "0.60", (1500, 6000)), ("2.5", "10", (25000, 100000)), ("0", "0.1", (0, 1000)),
    ("0.00015", "0.6", None),  # 1.5 units of 10^-10 a token: not a whole number
])
def test_token_rates_in_whole_units_price_as_cost_of_does(input_price: str, output_price: str,
                                                          rates: tuple[int, int] | None) -> None:
    price = ModelPrice(input=Decimal(input_price), output=Decimal(output_price))
    assert token_rates(price, unit_tokens=1_000_000, scale=10**10) == rates
    if rates is not None:
        for usage in (Usage(input_tokens=1234, output_tokens=56), Usage(), Usage(input_tokens=10**11)):
            exact = cost_of(price, usage, unit_tokens=1_000_000)
            units = usage.input_tokens * rates[0] + usage.output_tokens * rates[1]
            assert Decimal(units).scaleb(-10) == exact == exact.quantize(Decimal("1e-10"))


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


# Prices per provider: the top-level models price openai and azure, every other provider its own section.

PER_PROVIDER = """\
models:
  gpt-4o: {input: 2.50, output: 10.00}
  gpt-4o-mini: {input: 0.15, output: 0.60}
  claude-sonnet-4-5: {input: 99.00, output: 99.00}
providers:
  anthropic:
    models:
      claude-sonnet-4-5: {input: 3.00, cached_input: 0.30, cache_write: 3.75, output: 15.00}
      claude-haiku-4-5: {input: 1.00, output: 5.00, aliases: [haiku]}
  openrouter:
    models:
      anthropic/claude-sonnet-4.5: {input: 3.00, output: 15.00}
  azure:
    models:
      gpt-4o: {input: 2.75, output: 11.00}
"""
PROVIDERS = parse_pricing(PER_PROVIDER)


@pytest.mark.parametrize(("provider", "model", "key"), [
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5"),                    # exact name
    ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),           # dated snapshot
    ("anthropic", "haiku", "claude-haiku-4-5"),                                 # alias
    ("anthropic", "gpt-4o", None),                                              # top-level models are not Anthropic's
    ("openrouter", "anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4.5"),
    ("openrouter", "claude-sonnet-4-5", None),
    ("groq", "gpt-4o", None),                                                   # no section: the file has no price
    ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
    ("openai", "claude-sonnet-4-5", "claude-sonnet-4-5"),                       # the top-level entry is OpenAI's
    ("azure", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),                         # azure: top-level models...
])
def test_a_model_resolves_within_its_providers_section(provider: str, model: str, key: str | None) -> None:
    assert PROVIDERS.resolve(model, provider=provider) == key


def test_a_top_level_price_never_prices_another_providers_record() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert PROVIDERS.cost("claude-sonnet-4-5", usage, provider="anthropic") == Decimal("18.00")
    assert PROVIDERS.cost("claude-sonnet-4-5", usage) == Decimal("198.00")  # openai, the default
    assert PROVIDERS.cost("claude-sonnet-4-5", usage, provider="google") is None


def test_an_azure_section_overrides_the_top_level_models_for_azure_only() -> None:
    usage = Usage(input_tokens=1_000_000)
    assert PROVIDERS.cost("gpt-4o-2024-11-20", usage, provider="azure") == Decimal("2.75")
    assert PROVIDERS.cost("gpt-4o-2024-11-20", usage, provider="openai") == Decimal("2.50")
    assert PROVIDERS.cost("gpt-4o-mini", usage, provider="azure") == Decimal("0.15")  # not gpt-4o's prefix price


def test_a_file_may_price_other_providers_only() -> None:
    table = parse_pricing("providers:\n  google:\n    models:\n      gemini-2.5-flash: {input: 0.30, output: 2.50}\n")
    assert table.resolve("gemini-2.5-flash", provider="google") == "gemini-2.5-flash"
    assert table.models == {} and table.resolve("gpt-4o") is None


def test_the_version_hashes_the_whole_file_provider_sections_included() -> None:
    edited = parse_pricing(PER_PROVIDER.replace("input: 1.00, output: 5.00", "input: 1.10, output: 5.00"))
    assert edited.version != PROVIDERS.version and edited.models == PROVIDERS.models


@pytest.mark.parametrize(("text", "problem"), [
    ("providers:\n  anthropic:\n    modles:\n      m: {input: 1}\n",
     "pricing.yaml:3: providers.anthropic: unknown key 'modles' (expected one of models)"),
    ("providers:\n  anthropic:\n    models:\n      m: {input: 1}\n  google: {}\n",
     "pricing.yaml:5: providers.google: missing 'models'"),
    ("providers:\n  anthropic:\n    models:\n      m: {input: -3}\n",
     "pricing.yaml:4: providers.anthropic.models.m.input: a price cannot be negative"),
    ("providers:\n  anthropic:\n    models:\n      m: {input: 1}\n      m: {input: 2}\n",
     "pricing.yaml:5: providers.anthropic.models: 'm' appears twice"),
    ("providers:\n  anthropic:\n    models: {}\n  anthropic:\n    models: {}\n",
     "pricing.yaml:4: providers: 'anthropic' appears twice"),
    ("providers:\n  anthropic:\n    models:\n      m: {input: 1, ouput: 2}\n",
     "pricing.yaml:4: providers.anthropic.models.m: unknown key 'ouput'"),
    ("providers:\n  anthropic:\n    models:\n      m:\n        output: 1\n",
     "pricing.yaml:5: providers.anthropic.models.m: missing 'input'"),
    ("providers:\n  Anthropic AI:\n    models: {}\n",
     "pricing.yaml:2: providers.Anthropic AI: a provider name is lowercase letters"),
    ("providers:\n  anthropic: [claude]\n", "pricing.yaml:2: providers.anthropic: must be a mapping"),
    ("providers:\n  openai:\n    models: {}\n",
     "pricing.yaml:2: providers.openai: the top-level 'models' price openai"),
    ("providers:\n  google:\n    models:\n      a: {input: 1}\n      b: {input: 2, aliases: [a]}\n",
     "pricing.yaml:5: providers.google.models.b.aliases: alias 'a' is also a model key"),
    ("models:\n  gpt-4o: {input: 2.5}\nproviders:\n  azure:\n    models:\n      eu-4o: {input: 3, aliases: [gpt-4o]}\n",
     "pricing.yaml:6: providers.azure.models.eu-4o.aliases: alias 'gpt-4o' is also a model key"),
])
def test_a_broken_provider_section_is_refused_with_the_line_of_each_problem(text: str, problem: str) -> None:
    with pytest.raises(PricingError) as refused:
        parse_pricing(text)
    assert any(line.startswith(problem) for line in refused.value.problems), refused.value.problems


def test_the_shipped_pricing_file_prices_claude_and_gemini_in_their_own_sections() -> None:
    table = load_pricing(Path(__file__).parents[1] / "config" / "pricing.yaml")
    for model in ("claude-opus-5", "claude-sonnet-5", "claude-haiku-4-5", "claude-opus-4-5", "claude-sonnet-4-5",
                  "claude-opus-4-1", "claude-sonnet-4", "claude-3-5-haiku"):
        assert table.resolve(model, provider="anthropic") == model
        assert table.resolve(model) is None  # never an OpenAI price
    for model in ("gemini-3.5-flash", "gemini-3-pro-preview", "gemini-2.5-pro", "gemini-2.5-flash",
                  "gemini-2.5-flash-lite", "gemini-2.0-flash"):
        assert table.resolve(model, provider="google") == model
    assert table.resolve("claude-sonnet-4-5-20250929", provider="anthropic") == "claude-sonnet-4-5"
    assert table.resolve("claude-3-5-haiku-20241022", provider="anthropic") == "claude-3-5-haiku"
    assert table.resolve("gemini-3.5-flash-lite", provider="google") == "gemini-3.5-flash-lite"  # not 3.5-flash's
    sonnet = table.providers["anthropic"].models["claude-sonnet-4-5"]
    assert (sonnet.input, sonnet.cached_input, sonnet.cache_write, sonnet.output) == (
        Decimal("3.00"), Decimal("0.30"), Decimal("3.75"), Decimal("15.00"))
