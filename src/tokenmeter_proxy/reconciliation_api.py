"""The admin API's reconciliation endpoints, under `/api` behind the admin token:

    POST /api/usage/sync-openai       {"start_date", "end_date", "api_base"?}: read OpenAI's usage
                                      for those UTC days and replace the stored provider figures
    GET  /api/usage/reconciliation    ?start_date=&end_date=: provider figures against metered ones
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .config import is_base_url
from .errors import BadRequest
from .openai_usage import UsageAPI
from .pricing import PriceTable
from .reconciliation import ZERO, parse_range, reconcile
from .storage.provider_store import ProviderStore
from .types import Clock
from .web import JSONResponse, json_object

PROVIDER = "openai"


@dataclass(frozen=True)
class ReconciliationAPI:
    """The endpoints, bound to the provider store, the configured usage API, the prices in force
    (model names fold to their pricing keys) and a clock."""

    store: ProviderStore
    usage_api: UsageAPI
    prices: Callable[[], PriceTable]
    clock: Clock

    def routes(self) -> list[Route]:
        return [
            Route("/usage/sync-openai", self.sync_openai, methods=["POST"]),
            Route("/usage/reconciliation", self.reconciliation, methods=["GET"]),
        ]

    async def sync_openai(self, request: Request) -> Response:
        """Read the provider's figures for the days asked for and store them in place of any
        synced before: 200 with what was stored, or the provider's failure as 4xx/502/504."""
        payload = json_object(await request.body(), ': {"start_date", "end_date", "api_base"?}')
        start, end = parse_range(payload.get("start_date"), payload.get("end_date"))
        usage_api = dataclasses.replace(self.usage_api, api_base=self._api_base(payload.get("api_base")))
        rows = await usage_api.daily_completions(start, end)
        stored = await run_in_threadpool(self.store.replace_days, PROVIDER, start, end, rows, now=self.clock())
        totals = sum((row.figures for row in rows), ZERO)
        return JSONResponse({"provider": PROVIDER, "api_base": usage_api.api_base, "start_date": start.isoformat(),
                      "end_date": end.isoformat(), "days": (end - start).days + 1, "rows": stored,
                      "totals": totals.as_json()})

    async def reconciliation(self, request: Request) -> Response:
        """Per UTC day and model, metered figures (every record but demo ones) against the
        provider's, with their difference and totals."""
        start, end = parse_range(request.query_params.get("start_date"), request.query_params.get("end_date"))
        provider = await run_in_threadpool(self.store.provider_daily, PROVIDER, start, end)
        metered = await run_in_threadpool(self.store.metered_daily, start, end)
        return JSONResponse(reconcile(metered, provider, resolve=self.prices().resolve))

    def _api_base(self, requested: object) -> str:
        """The configured usage API, or the one the body names when it may be sent the admin key:
        the configured one, or one on this machine (a local stand-in). Any other host would be
        handed the organization's admin key by whoever holds the admin token."""
        if requested is None or requested == "":
            return self.usage_api.api_base
        if not isinstance(requested, str) or not is_base_url(requested):
            raise BadRequest(f"api_base must be an http(s) URL such as {self.usage_api.api_base}", param="api_base")
        if requested.rstrip("/") != self.usage_api.api_base.rstrip("/") and not _is_loopback(requested):
            raise BadRequest(
                "api_base may only name the configured usage API (TOKENMETER_OPENAI_API_BASE, "
                f"{self.usage_api.api_base}) or this machine: the admin key is sent nowhere else", param="api_base")
        return requested


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

