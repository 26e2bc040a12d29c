"""`tokenmeter-proxy`: serve | migrate | stats | pricing check/diff/import | routes check | sync-openai | ..."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.exc import OperationalError

from . import __version__, admin_commands, reports
from .app import create_app
from .budgets import Applied, budget_status
from .config import DEFAULT_DATABASE_URL, Settings, environment_value
from .errors import BadRequest, ConfigError, FileRefused, PricingError, ProviderError, RoutesError
from .openai_usage import UsageAPI
from .pricing import load_pricing, money_text
from .reconciliation import ZERO, parse_range
from .routes import parse_routes
from .storage.budget_store import BudgetStore
from .storage.engine import engine_from_url
from .storage.migrate import schema_behind, upgrade
from .storage.provider_store import ProviderStore
from .storage.repository import Filters, Repository, Totals
from .tags import NAME
from .types import utc_now

log = logging.getLogger("tokenmeter_proxy")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        status: int = args.run(args)
    except (ConfigError, FileRefused) as exc:
        print(f"tokenmeter-proxy: {exc}", file=sys.stderr)
        return 2
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenmeter-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy (flags default to TOKENMETER_* variables)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--upstream", help="upstream base URL with its version prefix (https://api.openai.com/v1)")
    serve.add_argument("--database-url", help=f"sqlite:///path.db or postgresql+psycopg://... ({DEFAULT_DATABASE_URL})")
    serve.add_argument("--pricing", type=Path, help="pricing YAML file (config/pricing.yaml)")
    serve.add_argument("--routes", type=Path, help="routes YAML file (config/routes.yaml)")
    serve.add_argument("--admin-token", help="bearer token of the admin API")
    serve.add_argument("--workers", type=int, help="worker processes (1)")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema to the newest migration")
    migrate.add_argument("--database-url")
    migrate.set_defaults(run=_migrate)

    stats = commands.add_parser("stats", help="print usage totals as a table")
    stats.add_argument("--period", default="7d", choices=list(reports.PERIODS))
    stats.add_argument("--by", default="model", type=_grouping, metavar="|".join([*reports.GROUPINGS, "tag:NAME"]))
    stats.add_argument("--database-url")
    stats.set_defaults(run=_stats)

    sync = commands.add_parser("sync-openai", help="store OpenAI's own usage figures for reconciliation "
                               "(admin key in OPENAI_ADMIN_KEY); days synced again are replaced")
    sync.add_argument("--start-date", required=True, help="first UTC day, YYYY-MM-DD")
    sync.add_argument("--end-date", required=True, help="last UTC day, YYYY-MM-DD (included)")
    sync.add_argument("--api-base", help="usage API base URL (TOKENMETER_OPENAI_API_BASE, else "
                      "https://api.openai.com/v1)")
    sync.add_argument("--database-url")
    sync.set_defaults(run=_sync_openai)

    demo = commands.add_parser("demo-data", help="write synthetic usage records (usage_source demo)")
    demo.add_argument("--records", type=int, required=True)
    demo.add_argument("--days", type=int, default=30)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--database-url")
    demo.set_defaults(run=admin_commands.demo_data)

    prune = commands.add_parser("prune", help="delete records older than an age (daily totals per model stay)")
    prune.add_argument("--older-than", required=True, help="an age such as 90d, 12w or 48h")
    prune.add_argument("--dry-run", action="store_true")
    prune.add_argument("--database-url")
    prune.set_defaults(run=admin_commands.prune_records)

    reprice = commands.add_parser("reprice", help="recompute stored costs with the prices now in force")
    reprice.add_argument("--since", required=True, help="first day to reprice, YYYY-MM-DD (UTC)")
    reprice.add_argument("--dry-run", action="store_true")
    reprice.add_argument("--database-url")
    reprice.set_defaults(run=admin_commands.reprice_records)

    pricing = commands.add_parser("pricing", help="work with pricing files")
    pricing_commands = pricing.add_subparsers(required=True, metavar="COMMAND")
    check = pricing_commands.add_parser("check", help="validate a pricing file; exit 1 with line-precise errors")
    check.add_argument("file", type=Path)
    check.set_defaults(run=_pricing_check)
    diff = pricing_commands.add_parser("diff", help="the pricing file's prices beside the genai-prices catalog's")
    diff.add_argument("file", type=Path, nargs="?")
    diff.add_argument("--provider", default="openai", help="whose prices: the top-level models for openai (the "
                      "default) and azure, the provider's own section for any other")
    diff.set_defaults(run=admin_commands.pricing_diff)
    add = pricing_commands.add_parser("import", help="copy models' prices from the catalog into the pricing file")
    add.add_argument("models", nargs="+", metavar="MODEL")
    add.add_argument("--file", type=Path)
    add.add_argument("--provider", default="openai", help="the catalog's prices for this provider, into the "
                     "top-level models for openai (the default) and azure, else into 'providers: P: models:'")
    add.set_defaults(run=admin_commands.pricing_import)
    routes = commands.add_parser("routes", help="work with routes files")
    routes_commands = routes.add_subparsers(required=True, metavar="COMMAND")
    check_routes = routes_commands.add_parser("check", help="validate a routes file; exit 1 with line-precise errors")
    check_routes.add_argument("file", type=Path)
    check_routes.set_defaults(run=_routes_check)
    return parser


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.load({
        "host": args.host, "port": args.port, "upstream": args.upstream, "database_url": args.database_url,
        "pricing": args.pricing, "routes": args.routes, "admin_token": args.admin_token, "workers": args.workers,
    })
    app = create_app(settings)  # fails here, with a clear message, if anything is misconfigured
    options = {
        "host": settings.host, "port": settings.port, "access_log": False, "server_header": False,
        "date_header": False, "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds),
        "log_config": None,
    }
    named = ", ".join(f"/{name} to {route.upstream}" for name, route in app.routes.current.routes.items())
    log.info("serving on http://%s:%d, forwarding /v1 to %s%s", settings.host, settings.port, settings.upstream,
             f", {named}" if named else "")
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler it
    # found installed; a quiet handler here makes that a clean exit 0, as orchestrators expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if settings.workers == 1:
        uvicorn.run(app, **options)  # type: ignore[arg-type]
    else:
        os.environ.update(settings.to_environ())  # workers rebuild the same settings from these
        uvicorn.run("tokenmeter_proxy.app:app_from_environment", factory=True, workers=settings.workers,
                    **options)  # type: ignore[arg-type]
    return 0


def _migrate(args: argparse.Namespace) -> int:
    settings = Settings.load({"database_url": args.database_url})
    engine = engine_from_url(settings.database_url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    print(f"database schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))
    return 0


def _stats(args: argparse.Namespace) -> int:
    settings = Settings.load({"database_url": args.database_url})
    engine = engine_from_url(settings.database_url)
    try:
        repository = Repository(engine)
        table = load_pricing(settings.pricing_path)
        now = utc_now()
        filters = Filters(since=now - reports.parse_period(args.period))
        totals = repository.totals(filters)
        groups = _groups(repository, args.by, filters, totals)
        store = BudgetStore(engine)
        budgets = store.all()
        applied = [Applied(budget, budget.subject or "*") for budget in budgets]
        standings = list(zip(store.standings(applied, now=now), store.recent(applied, now=now), strict=True))
    finally:
        engine.dispose()
    header = [args.by, "requests", "input", "cached", "output", "total", f"cost ({table.currency})"]
    rows = [[key or "-", *_figures(figures)] for key, figures in groups]
    rows.append(["TOTAL", *_figures(totals)])
    print(f"Usage over the last {args.period}, by {args.by}")
    print(reports.text_table(header, rows, total_row=True))
    if totals.unpriced_requests:
        print(f"{totals.unpriced_requests} request(s) used models without a price: add them to the pricing file.")
    if standings:
        print("\nBudgets")
        rows = [_budget_row(budget_status(standing, now=now, currency=table.currency, recent=recent))
                for standing, recent in standings]
        print(reports.text_table(["budget", "spent", "reserved", "limit", "remaining", "resets (UTC)",
                                  "runs out (UTC)"], rows))
    return 0


def _grouping(text: str) -> str:
    """--by: one of the groupings, or tag:NAME."""
    if text in reports.GROUPINGS or (text.startswith("tag:") and NAME.fullmatch(text[4:])):
        return text
    raise argparse.ArgumentTypeError(f"use one of {', '.join(reports.GROUPINGS)} or tag:NAME (such as tag:feature)")


def _groups(repository: Repository, by: str, filters: Filters, totals: Totals) -> list[tuple[str | None, Totals]]:
    """The rows of `stats --by`: a grouping's, or a tag's values (and the requests without it)."""
    if not by.startswith("tag:"):
        return [(group.key, group.totals) for group in repository.grouped(by, filters)]
    values = repository.by_tag(by[4:], filters)
    untagged = totals - sum((figures for _, figures in values), Totals())
    return [*values, *([(None, untagged)] if untagged.requests else [])]


def _budget_row(status: dict[str, Any]) -> list[str]:
    """One budget: its cost figures when it limits cost, else its token figures."""
    who = "global" if status["scope"] == "global" else f"{status['scope']} {status['subject']}"
    resets = status["resets_at"].strftime("%Y-%m-%d %H:%M") if status["resets_at"] else "never"
    forecast = status["forecast_exhausted_at"]
    runs_out = forecast.strftime("%Y-%m-%d %H:%M") if forecast else "-"
    if status["max_cost"] is not None:
        figures = [f"{money_text(status[key])} {status['currency']}"
                   for key in ("spent_cost", "reserved_cost", "max_cost", "remaining_cost")]
    else:
        figures = [f"{status[key]:,} tokens" for key in ("spent_tokens", "reserved_tokens", "max_tokens",
                                                          "remaining_tokens")]
    return [f"{who} ({status['period']})", *figures, resets, runs_out]


def _figures(totals: Totals) -> list[str]:
    return [f"{totals.requests:,}", f"{totals.input_tokens:,}", f"{totals.cached_input_tokens:,}",
            f"{totals.output_tokens:,}", f"{totals.total_tokens:,}", money_text(totals.cost.quantize(Decimal("1e-6")))]


def _pricing_check(args: argparse.Namespace) -> int:
    try:
        table = load_pricing(args.file)
    except PricingError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    sections = ", ".join(f"{name} ({len(section.models)} models)" for name, section in sorted(table.providers.items()))
    print(f"{args.file}: OK, {len(table.models)} models priced in {table.currency} per {table.unit_tokens:,} tokens"
          + (f"; {len(table.providers)} provider section(s): {sections}" if table.providers else "")
          + f" (version {table.version})")
    return 0


def _routes_check(args: argparse.Namespace) -> int:
    try:
        table = parse_routes(args.file.read_text(encoding="utf-8"), source=str(args.file),
                             environment=environment_value)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{args.file}: cannot read the routes file: {exc}", file=sys.stderr)
        return 1
    except RoutesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in table.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: OK, {len(table.routes)} route(s): " + ", ".join(
        f"/{name} -> {route.upstream} ({route.protocol.name}, provider {route.provider})"
        for name, route in table.routes.items()))
    return 0


def _sync_openai(args: argparse.Namespace) -> int:
    """Exit 0 having replaced the days' provider figures; 1 when the usage API or the database
    failed (nothing changed), 2 for bad dates."""
    settings = Settings.load({"database_url": args.database_url, "openai_api_base": args.api_base})
    try:
        start, end = parse_range(args.start_date, args.end_date, names=("--start-date", "--end-date"))
    except BadRequest as exc:
        print(f"tokenmeter-proxy: {exc.message}", file=sys.stderr)
        return 2
    engine = engine_from_url(settings.database_url)
    try:
        behind = schema_behind(engine, settings.database_url)
        if behind is not None:
            print(f"tokenmeter-proxy: {behind}", file=sys.stderr)
            return 1
        api = UsageAPI(settings.openai_api_base, settings.openai_admin_key)
        rows = asyncio.run(api.daily_completions(start, end))
        stored = ProviderStore(engine).replace_days("openai", start, end, rows, now=utc_now())
    except ProviderError as exc:
        print(f"tokenmeter-proxy: {exc.message}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        print(f"tokenmeter-proxy: the database {settings.database_url} is unreachable: {exc.orig}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    totals = sum((row.figures for row in rows), ZERO)
    print(f"synced {(end - start).days + 1} day(s), {start} to {end}, from {settings.openai_api_base}: "
          f"{stored} day x model row(s), {totals.requests:,} requests, {totals.input_tokens:,} input tokens "
          f"({totals.cached_input_tokens:,} cached), {totals.output_tokens:,} output tokens")
    return 0
