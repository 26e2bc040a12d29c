"""`GET /api/webhooks/deliveries`: the newest webhook deliveries and how each went."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .storage.outbox import OutboxStore
from .web import JSONResponse, int_param

MAX_LIMIT = 500


@dataclass(frozen=True)
class WebhooksAPI:
    """The deliveries in the outbox, newest first: one per event and URL."""

    outbox: OutboxStore

    def routes(self) -> list[Route]:
        return [Route("/webhooks/deliveries", self.deliveries, methods=["GET"])]

    async def deliveries(self, request: Request) -> Response:
        """`?limit=50` (1 to 500) deliveries; `id` is the event's `webhook-id`."""
        limit = int_param(request, "limit", default=50, maximum=MAX_LIMIT)
        return JSONResponse({"deliveries": await run_in_threadpool(self.outbox.recent, limit)})
