"""Prices beneath the pricing file: the maintained `genai-prices` catalog (shipped with its data,
so it works offline) prices models the file does not name. The file always wins.

Catalog prices are USD; in a file of another currency they are converted with the file's
`exchange_rates.USD` (1 unit of the file's currency = that many USD), or stay unpriced.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import genai_prices
from cachetools import LRUCache
from genai_prices import data_snapshot

from .pricing import PriceTable, cost_of
from .types import Usage


@dataclass(frozen=True, slots=True)
class Priced:
    """A cost, who priced it ("pricing_file", "catalog" or None: unpriced), and under which name."""

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
        self._unknown: LRUCache[str, bool] = LRUCache(maxsize=4096)

    def cost_usd(self, model: str, usage: Usage) -> tuple[Decimal, str] | None:
        """The USD cost of `usage` on `model` and the catalog's name for it, or None."""
        if model in self._unknown:
            return None
        catalog_usage = genai_prices.Usage(
            input_tokens=usage.input_tokens, cache_read_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens, output_tokens=usage.output_tokens,
        )
        try:
            calculation = genai_prices.calc_price(catalog_usage, model)
        except (LookupError, ValueError):
            self._unknown[model] = True
            return None
        return Decimal(calculation.total_price), calculation.model.id

    def prices(self, model: str) -> CatalogPrice | None:
        """Today's base prices of `model` (the first tier, where prices are tiered), or None."""
        try:
            provider, info = data_snapshot.get_snapshot().find_provider_model(model, None, None, None)
        except LookupError:
            return None
        price = info.get_prices(dt.datetime.now(dt.UTC))
        if price.input_mtok is None:
            return None
        return CatalogPrice(model=info.id, provider=provider.id, input=_base(price.input_mtok),
                            output=_optional(price.output_mtok), cached_input=_optional(price.cache_read_mtok),
                            cache_write=_optional(getattr(price, "cache_write_mtok", None)))


def price(table: PriceTable, catalog: Catalog | None, model: str | None, usage: Usage) -> Priced:
    """The cost of `usage` on `model`: the pricing file's, else the catalog's, else unpriced."""
    if not model:
        return Priced(None, None, None)
    key = table.resolve(model)
    if key is not None:
        return Priced(cost_of(table.models[key], usage, unit_tokens=table.unit_tokens), "pricing_file", key)
    found = catalog.cost_usd(model, usage) if catalog is not None else None
    if found is None:
        return Priced(None, None, None)
    usd, catalog_model = found
    if table.currency == "USD":
        return Priced(usd, "catalog", catalog_model)
    usd_per_unit = table.exchange_rates.get("USD")
    if usd_per_unit is None:
        return Priced(None, None, None)  # no rate to convert with: unpriced, never a wrong number
    return Priced(usd / usd_per_unit, "catalog", catalog_model)


def _base(value: object) -> Decimal:
    base = getattr(value, "base", value)  # tiered prices: the first tier
    return Decimal(str(base))


def _optional(value: object) -> Decimal | None:
    return None if value is None else _base(value)
