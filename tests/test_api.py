"""The admin API: every endpoint's JSON shape, its auth, and its refusal of bad parameters."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from conftest import ADMIN_TOKEN, admin_headers, proxy_client
from test_storage import NOW, record
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.openapi import admin_openapi
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.repository import Repository

pytestmark = pytest.mark.anyio
TOTALS_KEYS = {"requests", "input_tokens", "cached_input_tokens", "output_tokens", "total_tokens", "cost",
               "unpriced_requests", "estimated_requests"}  # the last: so nobody mistakes an estimate for a bill
RECORD_KEYS = {"id", "created_at", "session_id", "user_id", "api_key_id", "endpoint", "model", "input_tokens",
               "cached_input_tokens", "output_tokens", "reasoning_tokens", "total_tokens", "cost", "currency",
               "price_version", "usage_source", "status_code", "streamed", "latency_ms", "price_source", "provider",
               "route", "tags"}
ENDPOINTS = ["/api/usage/stats", "/api/usage/sessions", "/api/usage/sessions/s-1", "/api/usage/records"]


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a fixed clock, over a database holding a few known records."""
    engine = engine_from_url(settings.database_url)
    Repository(engine).insert_records([
        record(1, hours_ago=1, session="s-1", cost="0.001"),
        record(2, hours_ago=2, session="s-1", model="gpt-4o-mini", cost="0.0005"),
        record(3, hours_ago=50, session="s-2", user="u-2", cost=None),
        record(4, hours_ago=24 * 10, session="s-old", cost="1"),
    ])
    engine.dispose()
    async with proxy_client(create_app(settings, clock=lambda: NOW)) as client:
        client.headers.update(admin_headers())
        yield client


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x"])
async def test_every_endpoint_needs_the_admin_token(api: httpx.AsyncClient, path: str,
                                                    authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    api.headers.pop("authorization")
    response = await api.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_admin_token"


async def test_without_a_configured_token_the_admin_api_stays_locked(settings: Settings) -> None:
    app = create_app(Settings(**{**settings.__dict__, "admin_token": None}))
    async with proxy_client(app) as client:
        response = await client.get("/api/usage/stats", headers={"authorization": "Bearer "})
    assert response.status_code == 401 and "TOKENMETER_ADMIN_TOKEN" in response.json()["error"]["message"]


async def test_stats_have_the_contract_shape(api: httpx.AsyncClient) -> None:
    stats = (await api.get("/api/usage/stats")).json()
    assert set(stats) == {"period", "currency", "totals", "daily", "by_model", "by_provider"}
    assert (stats["period"], stats["currency"]) == ("7d", "USD")
    assert set(stats["totals"]) == TOTALS_KEYS
    assert stats["totals"]["requests"] == 3 and stats["totals"]["unpriced_requests"] == 1
    assert stats["totals"]["cost"] == 0.0015 and stats["totals"]["total_tokens"] == 330
    assert [day["date"] for day in stats["daily"]] == [f"2026-11-{day}" for day in range(18, 26)]
    assert all(set(day) == {"date", "requests", "input_tokens", "output_tokens", "cost"} for day in stats["daily"])
    assert stats["daily"][-1]["requests"] == 2 and stats["daily"][-3]["requests"] == 1
    assert [(row["model"], row["requests"]) for row in stats["by_model"]] == [("gpt-4o", 2), ("gpt-4o-mini", 1)]
    assert set(stats["by_model"][0]) == {"model", "requests", "input_tokens", "output_tokens", "cost"}


async def test_stats_by_period_filter_and_currency(api: httpx.AsyncClient) -> None:
    day = (await api.get("/api/usage/stats", params={"period": "24h"})).json()
    assert day["totals"]["requests"] == 2 and len(day["daily"]) == 2
    quarter = (await api.get("/api/usage/stats", params={"period": "90d"})).json()
    assert quarter["totals"]["requests"] == 4 and len(quarter["daily"]) == 91
    assert (await api.get("/api/usage/stats", params={"session_id": "s-2"})).json()["totals"]["requests"] == 1
    assert (await api.get("/api/usage/stats", params={"user_id": "u-2"})).json()["totals"]["requests"] == 1
    assert (await api.get("/api/usage/stats", params={"model": "gpt-4o-mini"})).json()["totals"]["requests"] == 1
    euros = (await api.get("/api/usage/stats", params={"currency": "eur"})).json()
    assert euros["currency"] == "EUR" and Decimal(str(euros["totals"]["cost"])) == Decimal("0.00075")


async def test_stats_by_provider_and_filtered_to_one(settings: Settings) -> None:
    engine = engine_from_url(settings.database_url)
    Repository(engine).insert_records([
        record(1, hours_ago=1, cost="0.001"), record(2, hours_ago=30, model="claude-sonnet-4-5", cost="0.003",
                                                     provider="anthropic"),
        record(3, hours_ago=2, model="gemini-2.5-flash", cost="0.002", provider="google"),
        record(4, hours_ago=3, model="claude-haiku-4-5", cost="0.0005", provider="anthropic"),
    ])
    engine.dispose()
    async with proxy_client(create_app(settings, clock=lambda: NOW)) as client:
        client.headers.update(admin_headers())
        stats = (await client.get("/api/usage/stats")).json()
        anthropic = (await client.get("/api/usage/stats", params={"provider": "anthropic"})).json()
        top = (await client.get("/api/usage/top", params={"by": "model", "provider": "anthropic"})).json()
        listed = (await client.get("/api/usage/records", params={"provider": "google"})).json()["records"]
    assert [(row["provider"], row["requests"], row["cost"]) for row in stats["by_provider"]] == [
        ("anthropic", 2, 0.0035), ("google", 1, 0.002), ("openai", 1, 0.001)]
    assert set(stats["by_provider"][0]) == {"provider", "requests", "input_tokens", "output_tokens", "cost"}
    assert (anthropic["totals"]["requests"], anthropic["totals"]["cost"]) == (2, 0.0035)
    assert [row["model"] for row in anthropic["by_model"]] == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    assert [row["provider"] for row in anthropic["by_provider"]] == ["anthropic"]
    assert [row["id"] for row in top["top"]] == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    assert [(item["provider"], item["route"]) for item in listed] == [("google", "google")]


async def test_sessions_newest_first_with_paging(api: httpx.AsyncClient) -> None:
    page = (await api.get("/api/usage/sessions", params={"limit": "2"})).json()
    assert page["total"] == 3
    assert [session["session_id"] for session in page["sessions"]] == ["s-1", "s-2"]
    first = page["sessions"][0]
    assert set(first) == {"session_id", "first_seen", "last_seen", "requests", "input_tokens", "output_tokens", "cost",
                          "providers"}
    assert first["providers"] == [{"provider": "openai", "requests": 2, "cost": 0.0015}]
    described = admin_openapi()["components"]["schemas"]["Sessions"]["properties"]["sessions"]["items"]
    assert set(described["required"]) == set(first)
    assert set(described["properties"]["providers"]["items"]["required"]) == set(first["providers"][0])
    assert first["first_seen"] == "2026-11-25T10:00:00Z" and first["last_seen"] == "2026-11-25T11:00:00Z"
    assert first["requests"] == 2 and first["cost"] == 0.0015
    rest = (await api.get("/api/usage/sessions", params={"limit": "2", "offset": "2"})).json()
    assert [session["session_id"] for session in rest["sessions"]] == ["s-old"]


async def test_a_sessions_totals_and_records(api: httpx.AsyncClient) -> None:
    detail = (await api.get("/api/usage/sessions/s-1")).json()
    assert detail["session_id"] == "s-1" and set(detail["totals"]) == TOTALS_KEYS
    assert detail["totals"]["requests"] == 2
    assert [item["id"] for item in detail["records"]] == [f"{1:024x}", f"{2:024x}"]
    assert set(detail["records"][0]) == RECORD_KEYS
    missing = await api.get("/api/usage/sessions/nobody")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "session_id"


async def test_records_have_the_contract_types_and_a_cursor(api: httpx.AsyncClient) -> None:
    first = (await api.get("/api/usage/records", params={"limit": "3"})).json()
    assert len(first["records"]) == 3 and first["next_cursor"]
    item = first["records"][0]
    assert set(item) == RECORD_KEYS
    assert item["created_at"] == "2026-11-25T11:00:00Z" and item["streamed"] is False
    assert isinstance(item["input_tokens"], int) and item["cost"] == 0.001
    last = (await api.get("/api/usage/records", params={"limit": "3", "cursor": first["next_cursor"]})).json()
    assert [entry["id"] for entry in last["records"]] == [f"{4:024x}"] and last["next_cursor"] is None
    unpriced = (await api.get("/api/usage/records", params={"session_id": "s-2"})).json()["records"][0]
    assert unpriced["cost"] is None
    since = (NOW - dt.timedelta(hours=3)).isoformat()
    recent = (await api.get("/api/usage/records", params={"since": since, "until": NOW.isoformat()})).json()
    assert len(recent["records"]) == 2


@pytest.mark.parametrize(("path", "params", "param"), [
    ("/api/usage/stats", {"period": "1y"}, "period"),
    ("/api/usage/stats", {"currency": "XYZ"}, "currency"),
    ("/api/usage/sessions", {"limit": "-1"}, "limit"),
    ("/api/usage/sessions", {"limit": "ten"}, "limit"),
    ("/api/usage/sessions", {"offset": "-5"}, "offset"),
    ("/api/usage/records", {"limit": "100000"}, "limit"),
    ("/api/usage/records", {"cursor": "not-a-cursor"}, "cursor"),
    ("/api/usage/records", {"since": "yesterday"}, "since"),
    ("/api/usage/records", {"since": "2026-11-25", "until": "2026-11-01"}, "since"),
    ("/api/usage/records", {"session_id": "' OR 1=1 --"}, None),
    ("/api/usage/sessions", {"offset": "99999999999999999999999"}, "offset"),
    ("/api/usage/records", {"since": "0001-01-01T00:00:00+01:00"}, "since"),
    ("/api/usage/records", {"until": "9999-12-31T23:59:59-05:00"}, "until"),
    ("/api/usage/records", {"cursor": "MDAwMS0wMS0wMVQwMDowMDowMCswNTowMHx4"}, "cursor"),
    ("/api/usage/records", {"session_id": "a\x00b"}, "session_id"),
    ("/api/usage/stats", {"model": "a\x00b"}, "model"),
])
async def test_bad_parameters_get_a_4xx_json_error(api: httpx.AsyncClient, path: str, params: dict[str, str],
                                                   param: str | None) -> None:
    response = await api.get(path, params=params)
    if param is None:  # an injection attempt is just a value that matches nothing
        assert response.status_code == 200 and response.json()["records"] == []
        return
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


async def test_unknown_admin_paths_are_json_404s(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/usage/nothing-here")
    assert response.status_code == 404 and "error" in response.json()


async def test_the_bearer_scheme_is_case_insensitive(api: httpx.AsyncClient) -> None:
    api.headers["authorization"] = f"bearer {ADMIN_TOKEN}"
    assert (await api.get("/api/usage/stats")).status_code == 200


async def test_a_session_id_with_a_nul_byte_is_a_400(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/usage/sessions/a%00b")).status_code == 400


async def test_with_the_database_down_the_admin_api_answers_503(settings: Settings) -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:9/none"  # the discard port: nothing answers
    app = create_app(Settings(**{**settings.__dict__, "database_url": unreachable}), check_schema=False)
    async with proxy_client(app) as client:
        response = await client.get("/api/usage/stats", headers=admin_headers())
        ready = await client.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["code"] == "database_unavailable"
    assert ready.status_code == 503 and ready.json()["status"] == "degraded"
