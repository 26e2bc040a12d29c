"""The pricing file: parse and validate it (line-precise), resolve model names, compute costs.

    currency: USD
    unit_tokens: 1000000
    exchange_rates: {EUR: 0.92}
    models:                      # price the providers openai and azure
      gpt-4o: {input: 2.50, cached_input: 1.25, output: 10.00, aliases: [chatgpt-4o-latest]}
    providers:                   # every other provider: its own section, same entries
      anthropic:
        models:
          claude-sonnet-4-5: {input: 3.00, cached_input: 0.30, cache_write: 3.75, output: 15.00}

Prices are read from the YAML text as written, straight into `Decimal`: "2.50" never
passes through a float. A model name resolves by exact key, then alias, then the longest
key that is a prefix of the name followed by "-" (`gpt-4o-2024-08-06` prices as `gpt-4o`),
among the models that price the record's provider only: a top-level price never prices an
Anthropic record. A `providers: azure:` section adds to and overrides the top-level models
for Azure alone (regional deployments cost more); `providers: openai:` is refused, as the
top-level models are OpenAI's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import yaml

from .errors import PricingError
from .types import Usage
from .yaml_nodes import NodeChecker

DEFAULT_PROVIDER = "openai"
# A provider name as routes give it: "anthropic", "google", "x-ai", "my-vllm"...
PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # as records keep it: at most 64 characters
TOP_LEVEL_PROVIDERS = frozenset({"openai", "azure"})  # priced by the top-level `models:`
_TOP_KEYS = {"currency", "unit_tokens", "exchange_rates", "models", "providers"}
_PRICE_KEYS = {"input", "cached_input", "cache_write", "output"}
_MODEL_KEYS = _PRICE_KEYS | {"aliases"}


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Prices of one model, per `PriceTable.unit_tokens` tokens."""

    input: Decimal
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None  # None: same as input
    cache_write: Decimal | None = None  # None: same as input


@dataclass(frozen=True)
class PriceSection:
    """The models that price one provider's records, and their aliases."""

    models: Mapping[str, ModelPrice]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, model: str) -> str | None:
        """The model key that prices `model`: exact key, alias, then the longest key that is a
        prefix of it followed by "-"; None when none does."""
        if model in self.models:
            return model
        if model in self.aliases:
            return self.aliases[model]
        cut = model.rfind("-")
        while cut > 0:
            if model[:cut] in self.models:
                return model[:cut]
            cut = model.rfind("-", 0, cut)
        return None


@dataclass(frozen=True)
class PriceTable:
    """One validated pricing file. `version` is a short hash of its text, stored with each record.

    `models` and `aliases` are the top-level ones (providers openai and azure); `providers`
    holds the `providers:` sections as written. `section()` says which prices a provider gets.
    """

    models: Mapping[str, ModelPrice]
    currency: str = "USD"
    unit_tokens: int = 1_000_000
    exchange_rates: Mapping[str, Decimal] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    version: str = "none"
    providers: Mapping[str, PriceSection] = field(default_factory=dict)
    _sections: dict[str, PriceSection] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        top = PriceSection(self.models, self.aliases)
        sections = {**self.providers, "openai": top, "azure": top}
        if "azure" in self.providers:
            azure = self.providers["azure"]
            kept = {alias: key for alias, key in self.aliases.items() if alias not in azure.models}
            sections["azure"] = PriceSection({**self.models, **azure.models}, {**kept, **azure.aliases})
        object.__setattr__(self, "_sections", sections)  # built once per file, not per request

    def section(self, provider: str = DEFAULT_PROVIDER) -> PriceSection | None:
        """The models that price `provider`'s records: the top-level ones for openai and azure
        (a `providers: azure:` section's entries over them), the provider's own section for any
        other provider, None when the file has none for it."""
        return self._sections.get(provider)

    def resolve(self, model: str, *, provider: str = DEFAULT_PROVIDER) -> str | None:
        """The model key that prices `model` for `provider`, or None when the file does not price it."""
        section = self._sections.get(provider)
        return section.resolve(model) if section is not None else None

    def price_of(self, model: str, *, provider: str = DEFAULT_PROVIDER) -> tuple[str, ModelPrice] | None:
        """The key that prices `model` for `provider` and its prices, or None."""
        section = self._sections.get(provider)
        key = section.resolve(model) if section is not None else None
        if section is None or key is None:
            return None
        return key, section.models[key]

    def cost(self, model: str | None, usage: Usage, *, provider: str = DEFAULT_PROVIDER) -> Decimal | None:
        """Exact cost of `usage` on `model` in `currency`, or None when the model is unpriced."""
        found = self.price_of(model, provider=provider) if model else None
        if found is None:
            return None
        return cost_of(found[1], usage, unit_tokens=self.unit_tokens)

    def rate(self, currency: str) -> Decimal | None:
        """Units of `currency` per unit of the file's currency, or None when no rate is known."""
        currency = currency.upper()
        if currency == self.currency:
            return Decimal(1)
        return self.exchange_rates.get(currency)


def cost_of(price: ModelPrice, usage: Usage, *, unit_tokens: int) -> Decimal:
    """((input - cached - written) x input + cached x cached_input + written x cache_write
    + output x output) / unit_tokens, all in exact decimals."""
    cached_price = price.input if price.cached_input is None else price.cached_input
    write_price = price.input if price.cache_write is None else price.cache_write
    uncached = max(usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens, 0)
    total = (
        uncached * price.input
        + usage.cached_input_tokens * cached_price
        + usage.cache_write_tokens * write_price
        + usage.output_tokens * price.output
    )
    return total / unit_tokens


def token_rates(price: ModelPrice, *, unit_tokens: int, scale: int) -> tuple[int, int] | None:
    """What one input and one output token cost, in 1/`scale` of the currency, when both are
    whole numbers of those (then `cost_of` a request without cached tokens is exact in integers);
    None when one is not."""
    rates = [value * scale / unit_tokens for value in (price.input, price.output)]
    if any(rate != rate.to_integral_value() for rate in rates):
        return None
    return int(rates[0]), int(rates[1])


def money_text(value: Decimal) -> str:
    """An amount as plain digits, without exponent or trailing zeros: 0.00725, not 7.25E-3."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def load_pricing(path: Path) -> PriceTable:
    """Read and validate a pricing file; raises `PricingError` with every problem and its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PricingError([f"{path}: cannot read the pricing file: {exc}"]) from None
    return parse_pricing(text, source=str(path))


def parse_pricing(text: str, *, source: str = "pricing.yaml") -> PriceTable:
    """Validate pricing YAML; raises `PricingError` listing `source:line: problem` for each fault."""
    reader = _Reader(source)
    root = reader.compose(text)
    if reader.problems:
        raise PricingError(reader.problems)
    table = reader.table(root, version=hashlib.sha256(text.encode()).hexdigest()[:12])
    if reader.problems:
        raise PricingError(reader.problems)
    assert table is not None
    return table


class _Reader(NodeChecker):
    """Walks the composed pricing file, collecting problems."""

    def table(self, root: yaml.Node | None, *, version: str) -> PriceTable | None:
        if not isinstance(root, yaml.MappingNode):
            self.fail(None, "the pricing file must be a mapping with a 'models' key")
            return None
        top = self.mapping(root, "the file", allowed=_TOP_KEYS)
        currency = "USD"
        if "currency" in top:
            currency = self.currency(top["currency"], "currency")
        unit_tokens = 1_000_000
        if "unit_tokens" in top:
            unit_tokens = self.positive_int(top["unit_tokens"], "unit_tokens")
        rates: dict[str, Decimal] = {}
        for name, node in self.mapping(top.get("exchange_rates"), "exchange_rates").items():
            self.currency(node, f"exchange_rates.{name}", code=name)
            rate = self.number(node, f"exchange_rates.{name}")
            if rate is not None and rate <= 0:
                self.fail(node, f"exchange_rates.{name}: must be greater than 0")
            rates[name.upper()] = rate or Decimal(1)
        if "models" not in top and "providers" not in top:
            self.fail(root, "missing 'models': list the models to price, e.g. models: {gpt-4o: {input: 2.50}}")
        main = self.section(top.get("models"), "models")
        return PriceTable(
            models=main.models, currency=currency, unit_tokens=unit_tokens, exchange_rates=rates,
            aliases=main.aliases, version=version, providers=self.providers(top.get("providers"), main),
        )

    def providers(self, node: yaml.Node | None, main: PriceSection) -> dict[str, PriceSection]:
        sections: dict[str, PriceSection] = {}
        for name, key_node, value in self.entries(node, "providers"):
            what = f"providers.{name}"
            self.matching(name, key_node, what, pattern=PROVIDER_NAME,
                          rule="a provider name is lowercase letters, digits, '-', '.' and '_'")
            if name == "openai":
                self.fail(key_node, f"{what}: the top-level 'models' price openai; list these models there")
                continue
            fields = self.mapping(value, what, allowed={"models"})
            if isinstance(value, yaml.MappingNode) and "models" not in fields:
                self.fail(value, f"{what}: missing 'models': list the models to price, "
                          "e.g. models: {claude-sonnet-4-5: {input: 3.00, output: 15.00}}")
            # Azure's entries join the top-level ones: none of its aliases may hide one of those.
            sections[name] = self.section(fields.get("models"), f"{what}.models",
                                          shadowed=main.models if name == "azure" else {})
        return sections

    def section(self, node: yaml.Node | None, what: str, *,
                shadowed: Mapping[str, ModelPrice] | None = None) -> PriceSection:
        models: dict[str, ModelPrice] = {}
        aliases: dict[str, str] = {}
        alias_nodes: list[tuple[str, str, yaml.Node]] = []
        for name, _, value in self.entries(node, what):
            price, names = self.model(f"{what}.{name}", value)
            if price is not None:
                models[name] = price
            for alias, alias_node in names:
                if alias in aliases or alias == name:
                    self.fail(alias_node, f"{what}.{name}.aliases: {alias!r} is already a name or alias")
                aliases[alias] = name
                alias_nodes.append((alias, name, alias_node))
        for alias, name, alias_node in alias_nodes:
            if alias in models or alias in (shadowed or {}):
                self.fail(alias_node, f"{what}.{name}.aliases: alias {alias!r} is also a model key; "
                          "remove one of them")
        return PriceSection(models, aliases)

    def model(self, what: str, node: yaml.Node) -> tuple[ModelPrice | None, list[tuple[str, yaml.Node]]]:
        fields = self.mapping(node, what, allowed=_MODEL_KEYS)
        if not isinstance(node, yaml.MappingNode):
            return None, []
        if "input" not in fields:
            self.fail(node, f"{what}: missing 'input' (price per unit_tokens input tokens)")
        prices: dict[str, Decimal | None] = {}
        for key in _PRICE_KEYS & fields.keys():
            value = self.number(fields[key], f"{what}.{key}")
            if value is not None and value < 0:
                self.fail(fields[key], f"{what}.{key}: a price cannot be negative")
            prices[key] = value
        names: list[tuple[str, yaml.Node]] = []
        if "aliases" in fields:
            listed = fields["aliases"]
            if isinstance(listed, yaml.SequenceNode):
                names = [(self.string(item, f"{what}.aliases"), item) for item in listed.value]
            else:
                self.fail(listed, f"{what}.aliases: must be a list, e.g. [chatgpt-4o-latest]")
        if any(value is None for value in prices.values()) or "input" not in prices:
            return None, names
        return ModelPrice(
            input=prices["input"] or Decimal(0),
            output=prices.get("output") or Decimal(0),
            cached_input=prices.get("cached_input"),
            cache_write=prices.get("cache_write"),
        ), names

    def currency(self, node: yaml.Node, what: str, *, code: str | None = None) -> str:
        """A currency code: 3 to 8 letters, such as USD or EUR."""
        text = (code if code is not None else self.string(node, what)).upper()
        if not (3 <= len(text) <= 8 and text.isascii() and text.isalpha()):
            self.fail(node, f"{what}: a currency code is 3 to 8 letters, such as USD or EUR; got {text!r}")
        return text
