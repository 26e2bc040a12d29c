"""A stand-in for OpenAI's organization usage API (`GET /v1/organization/usage/completions`):
daily buckets grouped by model, one day per page, with a 429 on the way if asked for."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ADMIN_KEY = "sk-admin-test-7f3e9c1d"
# (model as OpenAI names it, requests, input tokens, cached input tokens, output tokens)
Result = tuple[str, int, int, int, int]


@dataclass
class FakeUsageAPI:
    """`days` maps each UTC day to its results. The first page has no `page` parameter, the
    following ones are `p1`, `p2`...; `throttle` names pages answered 429 once (with
    `Retry-After: 0`, so tests do not wait). `status` answers every request with that status."""

    days: dict[dt.date, list[Result]]
    key: str = ADMIN_KEY
    throttle: set[str] = field(default_factory=set)
    status: int | None = None
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (query string, page)

    def __post_init__(self) -> None:
        self.days = dict(self.days)  # a test may change a day's results: never the caller's

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/organization/usage/completions", self.completions)])

    async def completions(self, request: Request) -> Response:
        query = request.query_params
        self.seen.append((request.url.query, query.get("page")))
        if self.status is not None:
            return JSONResponse({"error": {"message": "failing on purpose"}}, status_code=self.status)
        if request.headers.get("authorization") != f"Bearer {self.key}":
            # OpenAI echoes part of a wrong key; this echoes all of it, to prove we never repeat it
            sent = request.headers.get("authorization", "")
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {sent}"}}, status_code=401)
        page = query.get("page")
        if page in self.throttle:
            self.throttle.discard(page)
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"retry-after": "0"})
        start, end = (dt.datetime.fromtimestamp(int(query[name]), dt.UTC).date() for name in ("start_time", "end_time"))
        days = sorted(day for day in self.days if start <= day < end)
        index = int(page[1:]) if page else 0
        data = [_bucket(days[index], self.days[days[index]])] if days else []
        more = index + 1 < len(days)
        return JSONResponse({"object": "page", "data": data, "has_more": more,
                             "next_page": f"p{index + 1}" if more else None})


def _bucket(day: dt.date, results: list[Result]) -> dict[str, object]:
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    return {"object": "bucket", "start_time": start, "end_time": start + 86400, "results": [
        {"object": "organization.usage.completions.result", "model": model, "num_model_requests": requests,
         "input_tokens": input_tokens, "input_cached_tokens": cached, "output_tokens": output_tokens,
         "input_audio_tokens": 0, "output_audio_tokens": 0, "project_id": None, "user_id": None,
         "api_key_id": None, "batch": None}
        for model, requests, input_tokens, cached, output_tokens in results]}
