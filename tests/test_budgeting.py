"""Budgets enforced by the proxy in-process: refusals, headers, periods on a movable clock,
reservations, defaults, and the admin endpoints that set them."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from conftest import admin_headers, proxy_client, wait_for
from fake_upstream import FakeUpstream
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.budgeting import _TokenRates
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.pricing import parse_pricing

pytestmark = pytest.mark.anyio
AUTH = {"authorization": "Bearer sk-budget"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 25, 23, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def proxy(settings: Settings, fake_upstream: FakeUpstream, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, transport=httpx.ASGITransport(app=fake_upstream.app), clock=clock)
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


async def put_budget(proxy: httpx.AsyncClient, **budget: Any) -> httpx.Response:
    return await proxy.put("/api/budgets", json=budget, headers=admin_headers())


async def ask(proxy: httpx.AsyncClient, *, prompt_tokens: int = 1000, completion_tokens: int = 0,
              max_tokens: int | None = None, **headers: str) -> httpx.Response:
    """A gpt-4o chat request: estimated beforehand at 0.00002 (8 prompt tokens, no max_tokens), it
    costs 0.0025 once done (the fake upstream reports 1000 prompt tokens)."""
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    response = await proxy.post("/v1/chat/completions", json=body, headers={
        **AUTH, "x-fake-prompt-tokens": str(prompt_tokens), "x-fake-completion-tokens": str(completion_tokens),
        **headers})
    await proxy.app.writer.drain()  # type: ignore[attr-defined]
    return response


async def test_a_spent_budget_refuses_with_openais_429_and_nothing_goes_upstream(
        proxy: httpx.AsyncClient, fake_upstream: FakeUpstream) -> None:
    created = await put_budget(proxy, scope="session", subject="s-1", period="day", max_cost=0.006)
    assert created.status_code == 201
    for _ in range(3):
        assert (await ask(proxy, **{"x-session-id": "s-1"})).status_code == 200
    forwarded = len(fake_upstream.seen)

    refused = await ask(proxy, **{"x-session-id": "s-1"})

    assert refused.status_code == 429 and len(fake_upstream.seen) == forwarded
    assert refused.json() == {"error": {
        "message": refused.json()["error"]["message"], "type": "insufficient_quota", "code": "budget_exceeded",
        "param": None}}
    assert "session s-1 (day)" in refused.json()["error"]["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert refused.headers["retry-after"] == "3600"  # 23:00 to midnight UTC
    assert (await ask(proxy, **{"x-session-id": "another"})).status_code == 200


async def test_a_new_day_lifts_a_day_budget(proxy: httpx.AsyncClient, clock: Clock) -> None:
    await put_budget(proxy, scope="user", subject="u-1", period="day", max_cost=0.002)
    assert (await ask(proxy, **{"x-user-id": "u-1"})).status_code == 200
    assert (await ask(proxy, **{"x-user-id": "u-1"})).status_code == 429
    clock.now += dt.timedelta(hours=1, seconds=1)
    assert (await ask(proxy, **{"x-user-id": "u-1"})).status_code == 200


async def test_a_token_budget_over_all_time_has_no_retry_after(proxy: httpx.AsyncClient) -> None:
    await put_budget(proxy, scope="session", subject="s-tok", period="total", max_tokens=1500)
    await ask(proxy, **{"x-session-id": "s-tok"})
    first = await ask(proxy, **{"x-session-id": "s-tok"})
    assert first.status_code == 200 and first.headers["x-tokenmeter-budget-remaining-tokens"] == "492"
    refused = await ask(proxy, **{"x-session-id": "s-tok"})
    assert refused.status_code == 429 and "retry-after" not in refused.headers


async def test_remaining_and_warning_headers(proxy: httpx.AsyncClient) -> None:
    await put_budget(proxy, scope="key", subject=_key_id(), period="month", max_cost=0.01, warn_at=0.4)
    first = await ask(proxy)
    # the estimate reserved: 8 prompt tokens at 2.50 per million (the fake then reports 1000)
    assert first.headers["x-tokenmeter-budget-remaining"] == "0.00998"
    assert "x-tokenmeter-budget-warning" not in first.headers
    await ask(proxy)
    third = await ask(proxy)
    assert third.headers["x-tokenmeter-budget-warning"] == f"key {_key_id()} (month): 0.005 of 0.01 USD used"


async def test_the_real_usage_replaces_the_reservation(proxy: httpx.AsyncClient) -> None:
    await put_budget(proxy, scope="session", subject="s-r", period="day", max_cost=1)
    await ask(proxy, max_tokens=4000, **{"x-session-id": "s-r"})
    [budget] = (await proxy.get("/api/budgets", headers=admin_headers())).json()["budgets"]
    # the request's 0.0025 is spent at once; what the process still holds of its lease is reserved
    assert (budget["spent_cost"], budget["spent_tokens"]) == (0.0025, 1000) and budget["reserved_cost"] > 0

    async def settled() -> Any:
        [budget] = (await proxy.get("/api/budgets", headers=admin_headers())).json()["budgets"]
        return budget if budget["reserved_cost"] == 0 else None

    budget = await wait_for(settled, timeout=3)  # an idle lease goes back within a second or two
    assert budget and (budget["spent_cost"], budget["reserved_cost"], budget["spent_tokens"]) == (0.0025, 0, 1000)
    assert budget["remaining_cost"] == 0.9975 and budget["resets_at"] == "2026-11-26T00:00:00Z"


async def test_spend_logged_before_the_budget_existed_counts(proxy: httpx.AsyncClient) -> None:
    await ask(proxy, **{"x-session-id": "s-early"})
    await put_budget(proxy, scope="session", subject="s-early", period="day", max_cost=0.002)
    assert (await ask(proxy, **{"x-session-id": "s-early"})).status_code == 429


async def test_deleting_a_budget_lifts_it(proxy: httpx.AsyncClient) -> None:
    budget = (await put_budget(proxy, scope="global", period="day", max_cost=0)).json()
    assert (await ask(proxy)).status_code == 429
    deleted = await proxy.delete(f"/api/budgets/{budget['id']}", headers=admin_headers())
    assert deleted.status_code == 204
    assert (await ask(proxy)).status_code == 200
    missing = await proxy.delete(f"/api/budgets/{budget['id']}", headers=admin_headers())
    assert missing.status_code == 404


async def test_put_replaces_the_budget_of_the_same_subject_and_period(proxy: httpx.AsyncClient) -> None:
    first = await put_budget(proxy, scope="session", subject="s-p", period="day", max_cost=1)
    second = await put_budget(proxy, scope="session", subject="s-p", period="day", max_cost=2)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"] and second.json()["max_cost"] == 2
    listed = (await proxy.get("/api/budgets", headers=admin_headers())).json()["budgets"]
    assert len(listed) == 1
    assert set(listed[0]) >= {"id", "scope", "subject", "period", "max_cost", "max_tokens", "warn_at", "spent_cost",
                              "spent_tokens", "reserved_cost", "reserved_tokens", "resets_at"}


async def test_a_user_budget_sent_back_as_listed_replaces_itself_under_hashed_user_ids(
        settings: Settings, fake_upstream: FakeUpstream) -> None:
    app = create_app(Settings(**{**settings.__dict__, "user_id_hash_secret": "pepper"}),
                     transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as proxy:
        first = await put_budget(proxy, scope="user", subject="alice@example.com", period="day", max_cost=1)
        listed = first.json()["subject"]
        assert listed.startswith("u_") and "alice" not in listed
        again = await put_budget(proxy, scope="user", subject=listed, period="day", max_cost=2)  # the dashboard's edit
        assert (first.status_code, again.status_code) == (201, 200) and again.json()["id"] == first.json()["id"]
        assert len((await proxy.get("/api/budgets", headers=admin_headers())).json()["budgets"]) == 1


@pytest.mark.parametrize("body", [
    {"scope": "planet", "subject": "x", "period": "day", "max_cost": 1},
    {"scope": "session", "subject": "x", "period": "day", "max_cost": -1},
    {"scope": "session"},
    "not an object",
])
async def test_bad_budget_input_gets_a_4xx_json_error(proxy: httpx.AsyncClient, body: Any) -> None:
    response = await proxy.put("/api/budgets", json=body, headers=admin_headers())
    assert response.status_code == 400 and response.json()["error"]["message"]
    garbled = await proxy.put("/api/budgets", content=b"{", headers=admin_headers())
    assert garbled.status_code == 400


async def test_an_unpriced_model_under_a_cost_budget_is_refused_by_name(proxy: httpx.AsyncClient) -> None:
    await put_budget(proxy, scope="session", subject="s-u", period="day", max_cost=1)
    response = await proxy.post("/v1/chat/completions", headers={**AUTH, "x-session-id": "s-u"},
                                json={"model": "mystery-model-9", "messages": []})
    assert response.status_code == 429 and "'mystery-model-9' has no price" in response.json()["error"]["message"]


async def test_defaults_from_configuration_and_allowing_unpriced_models(settings: Settings,
                                                                         fake_upstream: FakeUpstream) -> None:
    configured = Settings(**{**settings.__dict__, "unpriced": "allow",
                             "default_budgets": '[{"scope": "session", "period": "day", "max_cost": 0.002}]'})
    app = create_app(configured, transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as proxy:
        proxy.app = app  # type: ignore[attr-defined]
        assert (await ask(proxy, **{"x-session-id": "any"})).status_code == 200
        assert (await ask(proxy, **{"x-session-id": "any"})).status_code == 429
        assert (await ask(proxy, **{"x-session-id": "other"})).status_code == 200
        unpriced = await proxy.post("/v1/chat/completions", headers={**AUTH, "x-session-id": "u"},
                                    json={"model": "mystery-model-9", "messages": []})
        assert unpriced.status_code == 200
        listed = (await proxy.get("/api/budgets", headers=admin_headers())).json()
        assert listed["defaults"] == [{"scope": "session", "period": "day", "max_cost": 0.002, "max_tokens": None,
                                       "warn_at": 0.8}]
        metrics = (await proxy.get("/metrics")).text
        assert 'tokenmeter_budget_refusals_total{scope="session"} 1.0' in metrics


async def test_concurrent_requests_never_overspend(proxy: httpx.AsyncClient) -> None:
    """40 requests at once, each estimated at 0.00102 (8 prompt tokens and max_tokens 100), each
    costing 0.0010025: at most 9 fit in 0.01, whatever the interleaving."""
    await put_budget(proxy, scope="session", subject="burst", period="day", max_cost=0.01)
    body = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}
    headers = {**AUTH, "x-session-id": "burst", "x-fake-prompt-tokens": "1", "x-fake-completion-tokens": "100",
               "x-fake-delay-ms": "200"}
    responses = await asyncio.gather(*[proxy.post("/v1/chat/completions", json=body, headers=headers)
                                       for _ in range(40)])
    admitted = sum(response.status_code == 200 for response in responses)
    assert 5 <= admitted <= 9 and admitted + sum(r.status_code == 429 for r in responses) == 40
    await proxy.app.writer.drain()  # type: ignore[attr-defined]
    stats = (await proxy.get("/api/usage/stats", params={"session_id": "burst", "period": "24h"},
                             headers=admin_headers())).json()
    assert Decimal(str(stats["totals"]["cost"])) <= Decimal("0.01")


async def test_no_budget_means_no_database_round_trip(settings: Settings, fake_upstream: FakeUpstream) -> None:
    app = create_app(settings, transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as proxy:
        gate = app.proxy.admission
        assert gate is not None

        def no_database(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the database was asked about budgets")

        gate.store.reserve = no_database  # type: ignore[attr-defined]
        response = await proxy.post("/v1/chat/completions", headers={**AUTH, "x-session-id": "free"},
                                    json={"model": "gpt-4o", "messages": []})
    assert response.status_code == 200


def _key_id() -> str:
    return hashlib.sha256(b"sk-budget").hexdigest()[:16]


async def test_a_tag_budget_limits_the_requests_carrying_that_tag_only(proxy: httpx.AsyncClient) -> None:
    assert (await put_budget(proxy, scope="tag", subject="team:search", period="day",
                             max_cost=0.0025)).status_code == 201
    search = {"x-tokenmeter-tags": "feature=summarize, team=search"}
    assert (await ask(proxy, **search)).status_code == 200  # 0.0025 spent
    refused = await ask(proxy, **search)
    assert refused.status_code == 429 and "tag team:search (day)" in refused.json()["error"]["message"]
    assert (await ask(proxy, **{"x-tokenmeter-tags": "team=ads"})).status_code == 200
    assert (await ask(proxy)).status_code == 200
    bad = await put_budget(proxy, scope="tag", subject="team", period="day", max_cost=1)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "subject"


async def test_every_budget_says_when_it_will_run_out_at_the_recent_rate(proxy: httpx.AsyncClient,
                                                                         clock: Clock) -> None:
    await put_budget(proxy, scope="session", subject="s-f", period="month", max_cost=0.0075)
    await put_budget(proxy, scope="session", subject="s-idle", period="month", max_cost=1)
    for _ in range(2):
        assert (await ask(proxy, **{"x-session-id": "s-f"})).status_code == 200  # 0.0025 each
    listed = {item["subject"]: item for item in (await proxy.get("/api/budgets", headers=admin_headers())
                                                 ).json()["budgets"]}
    # 0.005 spent in the window of 7 days and 23 hours: the 0.0025 left takes ~96 hours, within November
    at = dt.datetime.fromisoformat(listed["s-f"]["forecast_exhausted_at"].replace("Z", "+00:00"))
    assert clock.now + dt.timedelta(hours=95) < at < clock.now + dt.timedelta(hours=96)
    assert listed["s-idle"]["forecast_exhausted_at"] is None


def test_an_estimate_takes_the_token_prices_of_the_pricing_table_in_force() -> None:
    rates = _TokenRates()
    cheap = parse_pricing("currency: USD\nmodels:\n  m: {input: 1, output: 2}\n")
    dear = parse_pricing("currency: USD\nmodels:\n  m: {input: 3, output: 4}\n  odd: {input: 0.00001}\n")
    assert rates.of(cheap, "m-2025-01-01", "openai") == (10_000, 20_000)  # per token, in 10^-10
    assert rates.of(dear, "m-2025-01-01", "openai") == (30_000, 40_000), "a reloaded file applies at once"
    assert rates.of(dear, "odd", "openai") is None, "not whole units: priced with decimals instead"
    assert rates.of(dear, "unknown", "openai") is None and rates.of(dear, None, "openai") is None
