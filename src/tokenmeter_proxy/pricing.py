"""The pricing file: parse and validate it (line-precise), resolve model names, compute costs.

    currency: USD
    unit_tokens: 1000000
    exchange_rates: {EUR: 0.92}
    models:
      gpt-4o: {input: 2.50, cached_input: 1.25, output: 10.00, aliases: [chatgpt-4o-latest]}

Prices are read from the YAML text as written, straight into `Decimal`: "2.50" never
passes through a float. A model name resolves by exact key, then alias, then the longest
key that is a prefix of the name followed by "-" (`gpt-4o-2024-08-06` prices as `gpt-4o`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

from .errors import PricingError
from .types import Usage

_TOP_KEYS = {"currency", "unit_tokens", "exchange_rates", "models"}
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
class PriceTable:
    """One validated pricing file. `version` is a short hash of its text, stored with each record."""

    models: Mapping[str, ModelPrice]
    currency: str = "USD"
    unit_tokens: int = 1_000_000
    exchange_rates: Mapping[str, Decimal] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    version: str = "none"

    def resolve(self, model: str) -> str | None:
        """The model key that prices `model`, or None when the file does not price it."""
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

    def cost(self, model: str | None, usage: Usage) -> Decimal | None:
        """Exact cost of `usage` on `model` in `currency`, or None when the model is unpriced."""
        key = self.resolve(model) if model else None
        if key is None:
            return None
        return cost_of(self.models[key], usage, unit_tokens=self.unit_tokens)

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
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise PricingError([f"{source}:{line}: not valid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise PricingError([f"{source}: not valid YAML: {exc}"]) from None
    checker = _Checker(source)
    table = checker.table(root, version=hashlib.sha256(text.encode()).hexdigest()[:12])
    if checker.problems:
        raise PricingError(checker.problems)
    assert table is not None
    return table


class _Checker:
    """Walks the composed YAML nodes, which keep their line numbers, collecting problems."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, node: yaml.Node, message: str) -> None:
        self.problems.append(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def table(self, root: yaml.Node | None, *, version: str) -> PriceTable | None:
        if not isinstance(root, yaml.MappingNode):
            self.problems.append(f"{self.source}:1: the pricing file must be a mapping with a 'models' key")
            return None
        top = self.mapping(root, "the file", allowed=_TOP_KEYS)
        currency = "USD"
        if "currency" in top:
            currency = self.currency(top["currency"], "currency")
        unit_tokens = 1_000_000
        if "unit_tokens" in top:
            unit_tokens = self.positive_int(top["unit_tokens"], "unit_tokens")
        rates: dict[str, Decimal] = {}
        if "exchange_rates" in top:
            rates_node = top["exchange_rates"]
            for name, node in self.mapping(rates_node, "exchange_rates").items():
                self.currency(node, f"exchange_rates.{name}", code=name)
                rate = self.number(node, f"exchange_rates.{name}")
                if rate is not None and rate <= 0:
                    self.fail(node, f"exchange_rates.{name}: must be greater than 0")
                rates[name.upper()] = rate or Decimal(1)
        if "models" not in top:
            self.fail(root, "missing 'models': list the models to price, e.g. models: {gpt-4o: {input: 2.50}}")
        models: dict[str, ModelPrice] = {}
        aliases: dict[str, str] = {}
        for name, node in self.mapping(top.get("models"), "models").items():
            price, names = self.model(name, node)
            if price is not None:
                models[name] = price
            for alias, alias_node in names:
                if alias in aliases or alias == name:
                    self.fail(alias_node, f"models.{name}.aliases: {alias!r} is already a name or alias")
                aliases[alias] = name
        for alias in aliases:
            if alias in models:
                self.fail(root, f"alias {alias!r} is also a model key; remove one of them")
        return PriceTable(
            models=models, currency=currency, unit_tokens=unit_tokens, exchange_rates=rates,
            aliases=aliases, version=version,
        )

    def model(self, name: str, node: yaml.Node) -> tuple[ModelPrice | None, list[tuple[str, yaml.Node]]]:
        fields = self.mapping(node, f"models.{name}", allowed=_MODEL_KEYS)
        if not isinstance(node, yaml.MappingNode):
            return None, []
        if "input" not in fields:
            self.fail(node, f"models.{name}: missing 'input' (price per unit_tokens input tokens)")
        prices: dict[str, Decimal | None] = {}
        for key in _PRICE_KEYS & fields.keys():
            value = self.number(fields[key], f"models.{name}.{key}")
            if value is not None and value < 0:
                self.fail(fields[key], f"models.{name}.{key}: a price cannot be negative")
            prices[key] = value
        names: list[tuple[str, yaml.Node]] = []
        if "aliases" in fields:
            listed = fields["aliases"]
            if isinstance(listed, yaml.SequenceNode):
                names = [(self.string(item, f"models.{name}.aliases"), item) for item in listed.value]
            else:
                self.fail(listed, f"models.{name}.aliases: must be a list, e.g. [chatgpt-4o-latest]")
        if any(value is None for value in prices.values()) or "input" not in prices:
            return None, names
        return ModelPrice(
            input=prices["input"] or Decimal(0),
            output=prices.get("output") or Decimal(0),
            cached_input=prices.get("cached_input"),
            cache_write=prices.get("cache_write"),
        ), names

    def mapping(self, node: yaml.Node | None, what: str, *, allowed: set[str] | None = None) -> dict[str, yaml.Node]:
        if node is None:
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what}: must be a mapping of names to values")
            return {}
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.string(key_node, what)
            if key in out:
                self.fail(key_node, f"{what}: {key!r} appears twice")
            elif allowed is not None and key not in allowed:
                self.fail(key_node, f"{what}: unknown key {key!r} (expected one of {', '.join(sorted(allowed))})")
            out[key] = value_node
        return out

    def currency(self, node: yaml.Node, what: str, *, code: str | None = None) -> str:
        """A currency code: 3 to 8 letters, such as USD or EUR."""
        text = (code if code is not None else self.string(node, what)).upper()
        if not (3 <= len(text) <= 8 and text.isascii() and text.isalpha()):
            self.fail(node, f"{what}: a currency code is 3 to 8 letters, such as USD or EUR; got {text!r}")
        return text

    def string(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or not node.value:
            self.fail(node, f"{what}: expected a name")
            return ""
        return str(node.value)

    def number(self, node: yaml.Node, what: str) -> Decimal | None:
        # A quoted scalar is text, even when it spells a number: '1.5' is a typo to report.
        value = None
        if isinstance(node, yaml.ScalarNode) and node.style not in ("'", '"'):
            try:
                value = Decimal(node.value.replace("_", ""))
            except InvalidOperation:
                value = None
        if value is None or not value.is_finite():
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a collection"
            self.fail(node, f"{what}: expected a number, got {shown!r}")
            return None
        return value

    def positive_int(self, node: yaml.Node, what: str) -> int:
        value = self.number(node, what)
        if value is None:
            return 1
        if value <= 0 or value != value.to_integral_value():
            self.fail(node, f"{what}: must be a whole number greater than 0")
            return 1
        return int(value)

