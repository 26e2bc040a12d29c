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
from .pricing import PriceTable, load_pricing, money_text, parse_pricing
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
    """`tokenmeter-proxy pricing diff [FILE]`: the file's prices beside the catalog's."""
    table = load_pricing(args.file or Settings.load().pricing_path)
    catalog, rows = Catalog(), []
    for name, model in sorted(table.models.items()):
        found = catalog.prices(name)
        mine = [model.input, model.cached_input or model.input, model.output]
        theirs = [found.input, found.cached_input or found.input, found.output or Decimal(0)] if found else []
        scale = Decimal(table.unit_tokens) / Decimal(1_000_000)
        theirs = [value * scale for value in theirs] if table.currency == "USD" else []
        note = ("not in the catalog" if found is None else "catalog is USD; no comparison" if not theirs
                else "same" if mine == theirs else "differs")
        rows.append([name, *(money_text(value) for value in mine),
                     *(money_text(value) for value in theirs or [Decimal(0)] * 3), note])
    print(f"prices per {table.unit_tokens:,} tokens, {table.currency}; catalog: genai-prices")
    print(text_table(["model", "input", "cached", "output", "catalog input", "catalog cached", "catalog output", ""],
                 rows))
    return 0


def pricing_import(args: argparse.Namespace) -> int:
    """`tokenmeter-proxy pricing import MODEL... [--file FILE]`: copy catalog prices into the file."""
    path = args.file or Settings.load().pricing_path
    table = load_pricing(path)
    catalog, lines, missing = Catalog(), [], []
    for name in args.models:
        found = catalog.prices(name)
        if found is None or name in table.models:
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
        lines.append(f"  {name}: {{{shown}}}  # from genai-prices ({found.provider}/{found.model}), "
                     f"{utc_now():%Y-%m-%d}")
    if lines:
        text = _with_models(path.read_text(), lines)
        parse_pricing(text, source=str(path))  # refused here, before the file is touched
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)  # the hot reload never sees half a file
        print(f"added {len(lines)} model(s) to {path}:\n" + "\n".join(line.strip() for line in lines))
    for name in missing:
        print(f"skipped {name}: " + ("already in the file" if name in table.models else "not in the catalog"),
              file=sys.stderr)
    return 0 if lines or not missing else 1


def _with_models(text: str, entries: list[str]) -> str:
    """The pricing file's text with `entries` added at the end of its `models:` block (which
    need not be the file's last block), indented like the models already there."""
    lines = text.splitlines()
    start = next((n for n, line in enumerate(lines) if line.startswith("models:")), None)
    if start is None:
        return text.rstrip("\n") + "\nmodels:\n" + "\n".join(entries) + "\n"
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][:1] in (" ", "\t", "#")):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # keep blank lines after the block where they were
    children = [line for line in lines[start + 1:end] if line.strip() and not line.lstrip().startswith("#")]
    indent = children[0][:len(children[0]) - len(children[0].lstrip())] if children else "  "
    added = [indent + entry.strip() for entry in entries]
    return "\n".join([*lines[:end], *added, *lines[end:]]) + "\n"


def _pricer(table: PriceTable, catalog: Catalog) -> Pricer:
    def pricer(model: str | None, usage: Usage) -> tuple[Decimal | None, str | None]:
        priced = price(table, catalog, model, usage)
        return priced.cost, priced.source

    return pricer


def _age(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([dhw])", text.strip())
    if not match:
        raise ConfigError(f"--older-than takes an age such as 90d, 12w or 48h; got {text!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return {"d": dt.timedelta(days=amount), "h": dt.timedelta(hours=amount), "w": dt.timedelta(weeks=amount)}[unit]
