"""`create_app(settings)`: the one place where the parts are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, Router

from . import routes as routing
from . import tokens, vocabularies
from .access import FailureLimiter, Signer
from .api import AdminAPI
from .asgi import ROUTE, Receive, Scope, Send
from .auth import RequireAdminToken
from .budgeting import BudgetGate
from .budgets_api import BudgetsAPI
from .catalog import Catalog
from .config import Settings
from .dashboard.routes import Dashboard
from .errors import BadRequest, ConfigError, ProviderError, openai_error
from .identity import UserIds
from .metering import Meter
from .metrics import Metrics
from .middleware import TokenMeterMiddleware
from .openai_usage import UsageAPI
from .openapi import admin_openapi
from .ops import Operations
from .proxy import ForwardingApp
from .reconciliation_api import ReconciliationAPI
from .routes import builtin_route
from .storage.budget_store import BudgetStore
from .storage.engine import engine_from_url
from .storage.migrate import schema_behind
from .storage.outbox import OutboxStore
from .storage.provider_store import ProviderStore
from .storage.repository import Repository
from .storage.spool import Spool
from .storage.writer import RecordWriter
from .telemetry import Telemetry
from .types import Clock, utc_now
from .upstream import UpstreamPools
from .watched import PriceBook, RouteBook
from .web import JSONResponse
from .webhooks import Webhooks
from .webhooks_api import WebhooksAPI

log = logging.getLogger(__name__)


class TokenMeterApp:
    """The ASGI app: `/v1/*` and `/<route>/*` go straight to the metered forwarder, with their
    route in the scope (no routing layers on the hot path); everything else to the Starlette app
    (admin API, dashboard, health, metrics, lifespan), which answers a path under no route with a
    404 JSON error."""

    def __init__(self, proxy: TokenMeterMiddleware, admin: Starlette, *, writer: RecordWriter,
                 prices: PriceBook, routes: RouteBook, builtin: routing.Route) -> None:
        self.proxy = proxy
        self.admin = admin
        self.writer = writer
        self.prices = prices
        self.routes = routes
        self.builtin = builtin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.route_of(scope["path"])
            if route is not None:
                scope[ROUTE] = route
                await self.proxy(scope, receive, send)
                return
        await self.admin(scope, receive, send)

    def route_of(self, path: str) -> routing.Route | None:
        """The route a path is under: `/v1` the built-in one, else the route its first segment names."""
        if path.startswith("/v1/") or path == "/v1":
            return self.builtin
        end = path.find("/", 1)
        return self.routes.current.routes.get(path[1:end] if end > 0 else path[1:])


def create_app(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None, clock: Clock = utc_now,
    check_schema: bool = True,
) -> TokenMeterApp:
    """The proxy for `settings`. `transport` replaces the upstream transport (tests fake the
    upstream with it); `clock` replaces the real one. Raises `ConfigError` or `PricingError`
    before anything starts when the configuration cannot work."""
    vocabularies.prime_offline_cache(settings.tiktoken_cache_dir)
    prices = PriceBook.open(settings.pricing_path)
    routes = RouteBook.open(settings.routes_path)
    builtin = builtin_route(settings.upstream, api_key=settings.upstream_api_key)
    engine = engine_from_url(settings.database_url)
    if check_schema:
        _require_current_schema(engine, settings.database_url)
    repository = Repository(engine)
    outbox = OutboxStore(engine)
    # alert webhooks, when URLs are configured (the settings make sure a secret comes with them)
    webhooks = Webhooks(settings.webhook_url_list, settings.webhook_secret or "", outbox, clock=clock,
                        host=socket.gethostname()) if settings.webhook_url_list else None
    writer = RecordWriter(repository, Spool(settings.spool_dir),
                          on_outage=None if webhooks is None else webhooks.storage_outage)
    metrics = Metrics()
    metrics.count_from("tokenmeter_records_spooled", "Usage records written to the local spool while the "
                       "database was unreachable.", lambda: writer.spooled)
    metrics.count_from("tokenmeter_records_replayed", "Spooled usage records stored once the database "
                       "answered again.", lambda: writer.replayed)
    upstreams = UpstreamPools(settings, transport)
    for route in (builtin, *routes.current.routes.values()):
        upstreams(route)  # now, not on a first request: TLS setup takes milliseconds, and a bad CA bundle stops startup
    user_ids = UserIds(secret=settings.user_id_hash_secret)
    catalog = Catalog()
    meter = Meter(prices=lambda: prices.current, sink=writer, metrics=metrics, clock=clock, catalog=catalog,
                  alerts=webhooks)
    gate = BudgetGate(
        BudgetStore(engine), prices=lambda: prices.current, clock=clock, defaults=settings.budget_defaults(),
        allow_unpriced=settings.unpriced == "allow", fail_open=settings.budget_failure == "open",
        metrics=metrics, catalog=catalog, alerts=webhooks, lease_seconds=settings.budget_lease_seconds,
    )
    repository.on_store = gate.leases.stored  # the records' transaction settles the leases they came under
    forwarder = ForwardingApp(upstreams, route=builtin, max_body_bytes=settings.max_body_bytes,
                              total_timeout=settings.upstream_total_timeout or None)
    # OpenTelemetry's SDK only runs when an export is on: off, the middleware has no tracing at all
    telemetry = Telemetry(settings.telemetry) if settings.telemetry.enabled else None
    proxy = TokenMeterMiddleware(
        forwarder, meter=meter, admission=gate, session_header=settings.session_header,
        user_header=settings.user_header, max_body_bytes=settings.max_body_bytes, user_ids=user_ids, route=builtin,
        tracing=telemetry,
    )
    admin_api = AdminAPI(repository=repository, prices=lambda: prices.current, clock=clock, user_ids=user_ids,
                         catalog=catalog, stored=lambda: writer.written)
    budgets_api = BudgetsAPI(budgets=gate, clock=clock, user_ids=user_ids)
    reconciliation_api = ReconciliationAPI(
        store=ProviderStore(engine), usage_api=UsageAPI(settings.openai_api_base, settings.openai_admin_key),
        prices=lambda: prices.current, clock=clock,
    )
    operations = Operations(repository=repository, writer=writer, metrics=metrics)
    limiter = FailureLimiter()  # token guesses at the API and at the dashboard's sign-in count together
    signer = Signer.from_admin_token(settings.admin_token) if settings.admin_token else None
    dashboard = Dashboard(repository=repository, prices=lambda: prices.current, clock=clock, signer=signer,
                          limiter=limiter, user_ids=user_ids)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(tokens.warm_up)
        await gate.load()
        # ~100k long-lived objects (encodings, SQLAlchemy, prices) made each full collection an
        # ~80 ms pause of the event loop; frozen, collections scan only what requests create.
        gc.collect()
        gc.freeze()
        refused = None if webhooks is None else webhooks.config_rejected
        jobs = [writer.run(), writer.replay(), prices.watch(on_refused=refused), routes.watch(on_refused=refused),
                gate.watch(), gate.leases.maintain()]
        if webhooks is not None:
            jobs += [webhooks.run(), gate.watch_warnings()]
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            yield
        finally:
            try:  # every queued record to the database, or to the spool when it is down
                await asyncio.wait_for(writer.drain(), timeout=settings.shutdown_grace_seconds)
                await asyncio.wait_for(writer.replay_once(), timeout=settings.shutdown_grace_seconds)
            except TimeoutError:
                log.error("shutting down with %d usage records neither stored nor spooled", writer.pending)
            if webhooks is not None:  # alerts raised but not yet in the outbox: there, the next sender has them
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(webhooks.flush(), timeout=5)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:  # every record is stored: what the leases still hold goes back to the other processes
                await gate.leases.close()
            except Exception as exc:  # the database is down: they lapse on their own
                log.error("giving back budget leases failed (%s); they lapse in %g s", exc,
                          settings.budget_lease_seconds)
            await upstreams.aclose()
            if telemetry is not None:  # the last spans and points, before the process ends
                await asyncio.to_thread(telemetry.shutdown)
            engine.dispose()
            log.info("stopped; %d usage records stored, %d spooled batches left for the next start",
                     writer.written, writer.spool.pending_files())

    admin = Starlette(
        routes=[
            *operations.routes(),
            *dashboard.routes(),
            Route("/api/openapi.json", _openapi),  # public: a description, not data
            Mount("/api", app=RequireAdminToken(
                Router([*admin_api.routes(), *budgets_api.routes(), *reconciliation_api.routes(),
                        *WebhooksAPI(outbox).routes(),
                        *dashboard.admin_routes()]),
                signer=signer, limiter=limiter, clock=clock)),
        ],
        exception_handlers={
            BadRequest: _bad_request, HTTPException: _http_error, OperationalError: _database_down,
            ProviderError: _provider_error, Exception: _server_error,
        },
        lifespan=lifespan,
    )
    return TokenMeterApp(proxy, admin, writer=writer, prices=prices, routes=routes, builtin=builtin)


def app_from_environment() -> TokenMeterApp:
    """Factory for `uvicorn --factory` and worker processes: settings from `TOKENMETER_*`."""
    return create_app(Settings.load())


def _require_current_schema(engine: Engine, url: str) -> None:
    try:
        behind = schema_behind(engine, url, migrate=f"tokenmeter-proxy migrate --database-url {url}")
    except OperationalError as exc:  # start anyway: records wait in the spool until it answers
        log.error("the database %s is unreachable at startup (%s); serving, and spooling usage records", url, exc)
        return
    if behind is not None:
        raise ConfigError(behind)


async def _openapi(request: Request) -> Response:
    return JSONResponse(admin_openapi())


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    kind = "not_found" if exc.status == 404 else "invalid_parameter"
    return JSONResponse(openai_error(exc.message, type="invalid_request_error", code=kind, param=exc.param),
                        status_code=exc.status)


async def _provider_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProviderError)
    log.warning("admin API: %s", exc.message)  # the message never holds the admin key
    kind = "invalid_request_error" if exc.status < 500 else "provider_error"
    return JSONResponse(openai_error(exc.message, type=kind, code=exc.code), status_code=exc.status)


async def _database_down(request: Request, exc: Exception) -> Response:
    log.error("admin API: the database is unreachable: %s", exc)
    return JSONResponse(openai_error("The database is unreachable; usage is still being recorded. Try again shortly.",
                                     type="service_unavailable", code="database_unavailable"), status_code=503)


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse(openai_error("Internal error; the proxy's log has the details.", type="server_error"),
                        status_code=500)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(openai_error(str(exc.detail), type="invalid_request_error", code=None),
                        status_code=exc.status_code)
