"""The command line's data and pricing commands: demo-data, prune, reprice, pricing diff and
pricing import. Each prints what it changed (or, with --dry-run, would change)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from decimal import Decimal

from .catalog import Catalog, price
from .config import Settings
from .demo import demo_records
from .errors import ConfigError
from .pricing import (
    DEFAULT_PROVIDER,
    PROVIDER_NAME,
    TOP_LEVEL_PROVIDERS,
    PriceTable,
    load_pricing,
    money_text,
    parse_pricing,
)
from .reports import text_table
from .storage.engine import engine_from_url
from .storage.maintenance import bulk_insert, prune, reprice
from .storage.rollups import Rollups
from .types import Pricer, Usage, utc_now


def demo_data(args: argparse.Namespace) -> int:
    """`tokenmeter-proxy demo-data --records N --days D [--seed S]`"""
    settings = Settings.load({"database_url": args.database_url})
    table, catalog = load_pricing(settings.pricing_path), Catalog()
    started = time.perf_counter()
    engine = engine_from_url(settings.database_url)
    try:
        records = demo_records(args.records, args.days, now=utc_now(), seed=args.seed,
                               pricer=_pricer(table, catalog), price_version=table.version, currency=table.currency)
        stored = bulk_insert(engine, Rollups(engine), records,
                             progress=lambda n: print(f"  {n:,} records", file=sys.stderr, flush=True))
    finally:
        engine.dispose()
    print(f"wrote {stored:,} demo records over {args.days} days in {time.perf_counter() - started:.1f} s")
    return 0


def prune_records(args: argparse.Namespace) -> int:
    """`tokenmeter-proxy prune --older-than 90d [--dry-run]`"""
    cutoff = utc_now() - _age(args.older_than)
    settings = Settings.load({"database_url": args.database_url})
    engine = engine_from_url(settings.database_url)
    try:
        report = prune(engine, Rollups(engine), cutoff, dry_run=args.dry_run)
    finally:
        engine.dispose()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {report.records:,} records older than {cutoff:%Y-%m-%d %H:%M} UTC; daily totals per model are "
          "kept, per-session and per-user detail of those days is not")
    return 0


def reprice_records(args: argparse.Namespace) -> int:
    """`tokenmeter-proxy reprice --since YYYY-MM-DD [--dry-run]`"""
    try:
        since = dt.datetime.combine(dt.date.fromisoformat(args.since), dt.time(), dt.UTC)
    except ValueError:
        raise ConfigError(f"--since must be a date like 2026-11-01, got {args.since!r}") from None
    settings = Settings.load({"database_url": args.database_url})
    table = load_pricing(settings.pricing_path)
    engine = engine_from_url(settings.database_url)
    try:
        report = reprice(engine, Rollups(engine), since, _pricer(table, Catalog()), version=table.version,
                         dry_run=args.dry_run)
    finally:
        engine.dispose()
    rows = [[model or "(none)", f"{int(count):,}", money_text(Decimal(old)), money_text(Decimal(new)),
             money_text(Decimal(new) - Decimal(old))] for model, (count, old, new) in sorted(report.models.items())]
    print(("would reprice" if args.dry_run else "repriced") + f" {report.records:,} records since {args.since} "
          f"with prices version {table.version} ({table.currency})")
    if rows:
        print(text_table(["model", "records", "cost before", "cost now", "difference"], rows))
    return 0


def pricing_diff(args: argparse.Namespace) -> int:
    """`tokenmeter-proxy pricing diff [FILE] [--provider P]`: the file's prices for a provider
    (the top-level models for openai and azure) beside the catalog's for that provider."""
    path = args.file or Settings.load().pricing_path
    provider = _provider(args.provider)
    table = load_pricing(path)
    section = table.section(provider)
    if section is None:
        print(f"{path} has no prices for provider {provider} (a 'providers: {provider}: models:' section); "
              f"`tokenmeter-proxy pricing import MODEL... --provider {provider}` adds one", file=sys.stderr)
        return 1
    usd_per_unit = Decimal(1) if table.currency == "USD" else table.exchange_rates.get("USD")
    catalog, rows = Catalog(), []
    for name, model in sorted(section.models.items()):
        found = catalog.prices(name, provider=provider)
        mine = _four(model.input, model.cached_input, model.cache_write, model.output)
        theirs = []
        if found is not None and usd_per_unit is not None:
            scale = Decimal(table.unit_tokens) / Decimal(1_000_000) / usd_per_unit
            theirs = [value * scale for value in _four(found.input, found.cached_input, found.cache_write,
                                                        found.output or Decimal(0))]
        note = ("not in the catalog" if found is None else "no exchange_rates.USD; no comparison" if not theirs
                else "same" if mine == theirs else "differs")
        rows.append([name, *map(money_text, mine), *(map(money_text, theirs) if theirs else ["-"] * 4), note])
    print(f"{provider}: prices per {table.unit_tokens:,} tokens, {table.currency}; catalog: genai-prices")
    print(text_table(["model", "input", "cached", "cache write", "output", "catalog input", "catalog cached",
                      "catalog cache write", "catalog output", ""], rows))
    return 0


def pricing_import(args: argparse.Namespace) -> int:
    """`tokenmeter-proxy pricing import MODEL... [--file FILE] [--provider P]`: copy catalog prices
    for a provider into the file: the top-level models for openai and azure, else the provider's
    section (created when missing)."""
    path = args.file or Settings.load().pricing_path
    provider = _provider(args.provider)
    table = load_pricing(path)
    section = table.section(provider)
    have = set(section.models) | set(section.aliases) if section is not None else set()
    catalog, lines, missing = Catalog(), [], []
    for name in args.models:
        found = catalog.prices(name, provider=provider)
        if found is None or name in have:
            missing.append(name)
            continue
        rate = Decimal(1) if table.currency == "USD" else table.exchange_rates.get("USD")
        if rate is None:
            raise ConfigError(f"{path} is in {table.currency} and has no exchange_rates.USD to convert the catalog's "
                              "USD prices with")
        scale = Decimal(table.unit_tokens) / Decimal(1_000_000) / rate
        fields = {"input": found.input, "cached_input": found.cached_input, "cache_write": found.cache_write,
                  "output": found.output}
        shown = ", ".join(f"{key}: {money_text(value * scale)}" for key, value in fields.items() if value is not None)
        lines.append(f"{name}: {{{shown}}}  # from genai-prices ({found.provider}/{found.model}), {utc_now():%Y-%m-%d}")
        have.add(name)
    if lines:
        where = ["models"] if provider in TOP_LEVEL_PROVIDERS else ["providers", provider, "models"]
        text = _with_entries(path.read_text(), where, lines, source=str(path))
        parse_pricing(text, source=str(path))  # refused here, before the file is touched
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)  # the hot reload never sees half a file
        print(f"added {len(lines)} model(s) to {'.'.join(where)} in {path}:\n" + "\n".join(lines))
    for name in missing:
        print(f"skipped {name}: " + ("already in the file" if name in have else
                                     f"not in the catalog for provider {provider}"), file=sys.stderr)
    return 0 if lines or not missing else 1


def _provider(name: str | None) -> str:
    provider = name or DEFAULT_PROVIDER
    if not PROVIDER_NAME.fullmatch(provider):
        raise ConfigError(f"--provider takes a provider name such as openai, anthropic or google; got {provider!r}")
    return provider


def _four(input_price: Decimal, cached: Decimal | None, write: Decimal | None, output: Decimal) -> list[Decimal]:
    """input, cached input, cache write, output: the unset ones at the input price, as they are charged."""
    return [input_price, input_price if cached is None else cached, input_price if write is None else write, output]


def _with_entries(text: str, where: list[str], entries: list[str], *, source: str) -> str:
    """The pricing file's text with `entries` (`name: {...}` lines) added at the end of the mapping
    at `where` (["models"], or ["providers", "anthropic", "models"]), which need not be the
    file's last block, indented like their neighbours. Mappings on the way that are missing are
    created; everything else, comments included, stays as it was."""
    lines = text.splitlines()
    start, end, indent = 0, len(lines), ""
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    for depth, key in enumerate(where):
        found = next((n for n in range(start, end) if lines[n].startswith(f"{indent}{key}:")), None)
        if found is None:  # create this mapping and the ones below it, at the end of the block we are in
            step = "  "
            created = [f"{indent}{step * n}{name}:" for n, name in enumerate(where[depth:])]
            added = created + [indent + step * len(where[depth:]) + entry for entry in entries]
            return "\n".join([*lines[:end], *([""] if depth == 0 else []), *added, *lines[end:]]) + "\n"
        value, _, comment = lines[found][len(indent) + len(key) + 1:].partition("#")
        if value.strip() == "{}":  # an empty inline mapping becomes a block
            lines[found] = f"{indent}{key}:" + (f"  #{comment}" if comment else "")
        elif value.strip():
            raise ConfigError(f"{source}:{found + 1}: '{key}' is written inline; write it as a block, one entry per "
                              "line, to import into it")
        start, end = found + 1, _block_end(lines, found, len(indent))
        children = [line for line in lines[start:end] if line.strip() and not line.lstrip().startswith("#")]
        indent = _indent(children[0]) if children else indent + "  "
    return "\n".join([*lines[:end], *(indent + entry for entry in entries), *lines[end:]]) + "\n"


def _block_end(lines: list[str], key_line: int, width: int) -> int:
    """Where the block under `lines[key_line]` (a key indented `width`) ends: after its last line
    indented deeper, not counting the blank lines and shallower comments that follow it."""
    end = key_line + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].lstrip().startswith("#")
                                or len(_indent(lines[end])) > width):
        end += 1
    while end > key_line + 1 and (not lines[end - 1].strip() or (
            lines[end - 1].lstrip().startswith("#") and len(_indent(lines[end - 1])) <= width)):
        end -= 1
    return end


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _pricer(table: PriceTable, catalog: Catalog) -> Pricer:
    def pricer(model: str | None, usage: Usage, provider: str) -> tuple[Decimal | None, str | None]:
        priced = price(table, catalog, model, usage, provider=provider)
        return priced.cost, priced.source

    return pricer


def _age(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([dhw])", text.strip())
    if not match:
        raise ConfigError(f"--older-than takes an age such as 90d, 12w or 48h; got {text!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return {"d": dt.timedelta(days=amount), "h": dt.timedelta(hours=amount), "w": dt.timedelta(weeks=amount)}[unit]
