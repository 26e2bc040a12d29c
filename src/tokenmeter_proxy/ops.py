"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .metrics import Metrics
from .storage.repository import Repository
from .storage.writer import RecordWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Operations:
    """`/healthz`, `/readyz` and `/metrics`."""

    repository: Repository
    writer: RecordWriter
    metrics: Metrics

    def routes(self) -> list[Route]:
        return [Route("/healthz", self.healthz), Route("/readyz", self.readyz), Route("/metrics", self.metrics_text)]

    async def healthz(self, request: Request) -> Response:
        """The process is up and serving."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """200 when the database answers. While it does not, the proxy still serves and spools
        records: 503 with `"status": "degraded"`, or 200 with `?allow_degraded=1` (for a load
        balancer that should keep sending traffic through a database outage)."""
        try:
            await run_in_threadpool(self.repository.ping)
        except Exception as exc:  # any failure to reach the database means degraded
            log.warning("degraded: the database is unreachable: %s", exc)  # details to the log, not to anyone
            body = {"status": "degraded", "database": "unreachable",
                    "spooled_batches": self.writer.spool.pending_files(), "pending_records": self.writer.pending}
            tolerated = request.query_params.get("allow_degraded") in ("1", "true")
            return JSONResponse(body, status_code=200 if tolerated else 503)
        return JSONResponse({"status": "ready", "database": "reachable", "pending_records": self.writer.pending,
                             "spooled_batches": self.writer.spool.pending_files()})

    async def metrics_text(self, request: Request) -> Response:
        """Prometheus text format."""
        self.metrics.queued_records.set(self.writer.pending)
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
