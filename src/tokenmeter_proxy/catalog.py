"""Prices beneath the pricing file: the cost the upstream reported, then the maintained
`genai-prices` catalog (shipped with its data, so it works offline). The file always wins.

The catalog is asked under the record's provider: `anthropic` and `google` records get
Anthropic's and Google's list prices, an OpenRouter record OpenRouter's. A `vendor/model` id
the catalog does not know under the provider (aggregators such as Requesty send
`anthropic/claude-sonnet-4-5`) is looked up as `model` under `vendor`. A provider the catalog
does not know (a self-hosted `ollama`, say) gets no list price for a plain model name. The
provider `openai` keeps the catalog's own guess from the model name alone, because the built-in
`/v1` route often fronts any OpenAI-compatible server.

Reported costs and catalog prices are USD; in a file of another currency they are converted
with the file's `exchange_rates.USD` (1 unit of the file's currency = that many USD), or stay
unpriced.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import genai_prices
from cachetools import LRUCache
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, Provider

from .pricing import DEFAULT_PROVIDER, PriceTable, cost_of
from .types import Usage

UNKNOWN_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Priced:
    """A cost, who priced it, and the name it is counted under in the metrics.

    `source` is "pricing_file", "upstream" (the cost the upstream reported), "catalog", or
    None (unpriced). `key` is the pricing file's key or the catalog's model id: a bounded set
    of names, fit for a Prometheus label. An upstream-priced record's key is the catalog's id
    for its model when the catalog knows it, else None (as for an unpriced one), because the
    upstream's model name is whatever it says.
    """

    cost: Decimal | None
    source: str | None
    key: str | None


@dataclass(frozen=True)
class CatalogPrice:
    """A catalog model's base prices, USD per million tokens (None: not priced separately)."""

    model: str
    provider: str
    input: Decimal
    output: Decimal | None
    cached_input: Decimal | None
    cache_write: Decimal | None


class Catalog:
    """Looks models up in genai-prices, remembering (boundedly) the names it does not know."""

    def __init__(self) -> None:
        self._snapshot = data_snapshot.get_snapshot()
        self._providers = {provider.id: provider for provider in self._snapshot.providers}
        self._unknown: LRUCache[tuple[str, str], bool] = LRUCache(maxsize=UNKNOWN_CACHE_SIZE)

    def cost_usd(self, model: str, usage: Usage, *, provider: str = DEFAULT_PROVIDER) -> tuple[Decimal, str] | None:
        """The USD cost of `usage` on `provider`'s `model` and the catalog's id for it, or None."""
        found = self._find(model, provider)
        if found is None:
            return None
        catalog_usage = genai_prices.Usage(
            input_tokens=usage.input_tokens, cache_read_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens, output_tokens=usage.output_tokens,
        )
        try:
            calculation = genai_prices.calc_price(catalog_usage, found.model_ref, provider_id=found.provider_id)
        except (LookupError, ValueError):
            self._unknown[(provider, model)] = True
            return None
        return Decimal(calculation.total_price), calculation.model.id

    def model_id(self, model: str, *, provider: str = DEFAULT_PROVIDER) -> str | None:
        """The catalog's id for `provider`'s `model`, or None when it does not know the model."""
        found = self._find(model, provider)
        return found.info.id if found is not None else None

    def prices(self, model: str, *, provider: str = DEFAULT_PROVIDER) -> CatalogPrice | None:
        """Today's base prices of `provider`'s `model` (the first tier, where prices are tiered), or None."""
        found = self._find(model, provider)
        if found is None:
            return None
        price = found.info.get_prices(dt.datetime.now(dt.UTC))
        if price.input_mtok is None:
            return None
        return CatalogPrice(model=found.info.id, provider=found.provider.id, input=_base(price.input_mtok),
                            output=_optional(price.output_mtok), cached_input=_optional(price.cache_read_mtok),
                            cache_write=_optional(getattr(price, "cache_write_mtok", None)))

    def _find(self, model: str, provider: str) -> _Found | None:
        if (provider, model) in self._unknown:
            return None
        for catalog_provider, model_ref in self._candidates(provider, model):
            # Given the provider itself, the catalog caches hits only: arbitrary names cost it no memory.
            try:
                found_provider, info = self._snapshot.find_provider_model(model_ref, catalog_provider, None, None)
            except LookupError:
                continue
            provider_id = None if catalog_provider is None else catalog_provider.id
            return _Found(provider_id, model_ref, found_provider, info)
        self._unknown[(provider, model)] = True
        return None

    def _candidates(self, provider: str, model: str) -> list[tuple[Provider | None, str]]:
        """Where to look `model` up, in order: (catalog provider, or None to let the catalog guess
        from the model name; the name to look up)."""
        if provider == DEFAULT_PROVIDER:
            return [(None, model)]  # the catalog guesses the provider from the model name, as ever
        # Exact ids only: the catalog's loose matching would price a route named "my-openai-proxy" as OpenAI.
        own = self._providers.get(provider)
        candidates: list[tuple[Provider | None, str]] = [(own, model)] if own is not None else []
        vendor, slash, name = model.partition("/")
        if slash and vendor and name:
            # The vendor part of an aggregator's id names a cloud vendor: the catalog's matching
            # reads its spellings ("xai", "mistralai", "vertex").
            found = data_snapshot.find_provider_by_id(self._snapshot.providers, vendor)
            if found is not None and found is not own:
                candidates.append((found, name))
        return candidates


@dataclass(frozen=True, slots=True)
class _Found:
    provider_id: str | None  # as given to calc_price: None lets the catalog guess from the name
    model_ref: str
    provider: Provider
    info: ModelInfo


def price(table: PriceTable, catalog: Catalog | None, model: str | None, usage: Usage, *,
          provider: str = DEFAULT_PROVIDER, reported_cost: Decimal | None = None) -> Priced:
    """The cost of `usage` on `provider`'s `model`, first that applies: the pricing file's
    section for the provider, the cost the upstream reported (USD), the catalog's list price
    for the provider (USD), else unpriced."""
    if not model:
        return Priced(None, None, None)
    in_file = table.price_of(model, provider=provider)
    if in_file is not None:
        key, model_price = in_file
        return Priced(cost_of(model_price, usage, unit_tokens=table.unit_tokens), "pricing_file", key)
    usd_per_unit = Decimal(1) if table.currency == "USD" else table.exchange_rates.get("USD")
    if usd_per_unit is None:
        return Priced(None, None, None)  # no rate to convert USD with: unpriced, never a wrong number
    if reported_cost is not None and reported_cost.is_finite() and reported_cost >= 0:
        label = catalog.model_id(model, provider=provider) if catalog is not None else None
        return Priced(_from_usd(reported_cost, usd_per_unit), "upstream", label)
    costed = catalog.cost_usd(model, usage, provider=provider) if catalog is not None else None
    if costed is None:
        return Priced(None, None, None)
    usd, catalog_model = costed
    return Priced(_from_usd(usd, usd_per_unit), "catalog", catalog_model)


def _from_usd(usd: Decimal, usd_per_unit: Decimal) -> Decimal:
    return usd if usd_per_unit == 1 else usd / usd_per_unit


def _base(value: object) -> Decimal:
    base = getattr(value, "base", value)  # tiered prices: the first tier
    return Decimal(str(base))


def _optional(value: object) -> Decimal | None:
    return None if value is None else _base(value)
