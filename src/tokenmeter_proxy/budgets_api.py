"""The budget endpoints under `/api/budgets`: set, list (with where each stands) and remove."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .budgeting import BudgetGate
from .budgets import parse_budget
from .errors import BadRequest
from .identity import UserIds
from .types import Clock
from .web import JSONResponse


@dataclass(frozen=True)
class BudgetsAPI:
    """`PUT/GET /api/budgets`, `DELETE /api/budgets/{id}`."""

    budgets: BudgetGate
    clock: Clock
    user_ids: UserIds

    def routes(self) -> list[Route]:
        return [
            Route("/budgets", self.list_budgets, methods=["GET"]),
            Route("/budgets", self.put_budget, methods=["PUT"]),
            Route("/budgets/{budget_id}", self.delete_budget, methods=["DELETE"]),
        ]

    async def list_budgets(self, request: Request) -> Response:
        """Every budget set through the API with where it stands, and the defaults from configuration."""
        budgets = await run_in_threadpool(self.budgets.store.all)
        listed = await run_in_threadpool(lambda: [self.budgets.status(budget) for budget in budgets])
        defaults = [{"scope": budget.scope, "period": budget.period, "max_cost": budget.max_cost,
                     "max_tokens": budget.max_tokens, "warn_at": budget.warn_at} for budget in self.budgets.defaults]
        return JSONResponse({"budgets": sorted(listed, key=lambda item: item["id"]), "defaults": defaults})

    async def put_budget(self, request: Request) -> Response:
        """Create (201) or replace (200) the budget for (scope, subject, period)."""
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise BadRequest("the body must be JSON: {\"scope\", \"subject\", \"period\", \"max_cost\"...}") from None
        budget = parse_budget(payload)
        if budget.scope == "user":  # a user's budget is kept under the id records are stored with
            budget = dataclasses.replace(budget, subject=self.user_ids.stored(budget.subject))
        stored, created = await run_in_threadpool(self.budgets.store.put, budget, now=self.clock())
        await self.budgets.refresh()
        return JSONResponse(await run_in_threadpool(self.budgets.status, stored), status_code=201 if created else 200)

    async def delete_budget(self, request: Request) -> Response:
        """Remove a budget: 204, or 404 when there is none with that id."""
        text = request.path_params["budget_id"]
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise BadRequest(f"no budget with id {text!r}", param="id", status=404)
        if not await run_in_threadpool(self.budgets.store.delete, int(text)):
            raise BadRequest(f"no budget with id {text}", param="id", status=404)
        await self.budgets.refresh()
        return Response(status_code=204)
