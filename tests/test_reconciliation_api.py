"""POST /api/usage/sync-openai and GET /api/usage/reconciliation, as an admin client sees them,
against a fake OpenAI usage API served over real HTTP."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from conftest import admin_headers, free_port, proxy_client, serve_in_thread
from fake_usage_api import ADMIN_KEY, FakeUsageAPI
from test_openai_usage import D1, D2, DAYS
from test_storage import NOW, record
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.repository import Repository

pytestmark = pytest.mark.anyio
SYNC = {"start_date": "2026-11-23", "end_date": "2026-11-24"}
RANGE = "/api/usage/reconciliation?start_date=2026-11-23&end_date=2026-11-24"


def figures(requests: int, input_tokens: int, cached: int, output_tokens: int) -> dict[str, int]:
    return {"requests": requests, "input_tokens": input_tokens, "cached_input_tokens": cached,
            "output_tokens": output_tokens}


@pytest.fixture
def usage() -> Iterator[tuple[str, FakeUsageAPI]]:
    fake = FakeUsageAPI(DAYS, throttle={"p1"})
    with serve_in_thread(fake.app) as base:
        yield f"{base}/v1", fake


@pytest.fixture
async def api(settings: Settings, usage: tuple[str, FakeUsageAPI]) -> AsyncIterator[httpx.AsyncClient]:
    """The admin API (clock at 2026-11-25 12:00) reading the fake usage API, over a database
    holding records on 2026-11-23 and 2026-11-24, a demo record and one from today."""
    engine = engine_from_url(settings.database_url)
    Repository(engine).insert_records([
        record(1, hours_ago=48), record(2, hours_ago=47, model="gpt-4o-2024-08-06"),
        record(3, hours_ago=24, model="homegrown-llm", cost=None),
        dataclasses.replace(record(4, hours_ago=24), usage_source="demo"),
        record(5, hours_ago=0),
    ])
    engine.dispose()
    settings = dataclasses.replace(settings, openai_api_base=usage[0], openai_admin_key=ADMIN_KEY)
    async with proxy_client(create_app(settings, clock=lambda: NOW)) as client:
        client.headers.update(admin_headers())
        yield client


async def test_a_sync_then_the_reconciliation_of_those_days(api: httpx.AsyncClient,
                                                            usage: tuple[str, FakeUsageAPI]) -> None:
    synced = await api.post("/api/usage/sync-openai", json=SYNC)
    assert synced.status_code == 200, synced.text
    assert synced.json() == {"provider": "openai", "api_base": usage[0], "start_date": "2026-11-23",
                             "end_date": "2026-11-24", "days": 2, "rows": 3, "totals": figures(18, 1800, 200, 490)}
    assert [page for _, page in usage[1].seen] == [None, "p1", "p1"]  # the 429 on p1 was retried
    report = (await api.get(RANGE)).json()
    assert report["days"] == [
        {"date": "2026-11-23", "model": "gpt-4o", "metered": figures(2, 200, 10, 20),  # gpt-4o-2024-08-06 folds in
         "provider": figures(10, 1000, 200, 300), "difference": figures(-8, -800, -190, -280)},
        {"date": "2026-11-23", "model": "gpt-4o-mini", "metered": figures(0, 0, 0, 0),
         "provider": figures(5, 500, 0, 100), "difference": figures(-5, -500, 0, -100)},
        {"date": "2026-11-24", "model": "gpt-4o", "metered": figures(0, 0, 0, 0),  # the demo record does not count
         "provider": figures(3, 300, 0, 90), "difference": figures(-3, -300, 0, -90)},
        {"date": "2026-11-24", "model": "homegrown-llm", "metered": figures(1, 100, 5, 10),
         "provider": None, "difference": None},
    ]
    assert report["totals"] == {"metered": figures(3, 300, 15, 30), "provider": figures(18, 1800, 200, 490),
                                "difference": figures(-15, -1500, -185, -460)}


async def test_syncing_again_replaces_the_days_figures(api: httpx.AsyncClient,
                                                       usage: tuple[str, FakeUsageAPI]) -> None:
    assert (await api.post("/api/usage/sync-openai", json=SYNC)).status_code == 200
    usage[1].days[D1] = [("gpt-4o-2024-08-06", 1, 1, 0, 1)]
    assert (await api.post("/api/usage/sync-openai", json=SYNC)).status_code == 200
    totals = (await api.get(RANGE)).json()["totals"]
    assert totals["provider"] == figures(4, 301, 0, 91)


async def test_the_body_may_name_a_local_stand_in_but_no_other_host(api: httpx.AsyncClient,
                                                                    usage: tuple[str, FakeUsageAPI]) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    unreachable = await api.post("/api/usage/sync-openai", json={**SYNC, "api_base": closed})
    assert unreachable.status_code == 502 and unreachable.json()["error"]["code"] == "provider_unreachable"
    foreign = await api.post("/api/usage/sync-openai", json={**SYNC, "api_base": "https://collector.example/v1"})
    assert foreign.status_code == 400 and foreign.json()["error"]["param"] == "api_base"
    assert usage[1].seen == []


async def test_a_refused_key_is_a_502_that_does_not_repeat_it(api: httpx.AsyncClient,
                                                              usage: tuple[str, FakeUsageAPI],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    usage[1].key = "sk-admin-another"  # the fake's error message repeats the key it was sent
    response = await api.post("/api/usage/sync-openai", json=SYNC)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "provider_auth_failed" and "refused OPENAI_ADMIN_KEY (HTTP 401)" in error["message"]
    assert ADMIN_KEY not in response.text + caplog.text


async def test_without_an_admin_key_the_sync_is_refused_before_anything_is_sent(
        settings: Settings, usage: tuple[str, FakeUsageAPI]) -> None:
    async with proxy_client(create_app(dataclasses.replace(settings, openai_api_base=usage[0]))) as client:
        response = await client.post("/api/usage/sync-openai", json=SYNC, headers=admin_headers())
    assert response.status_code == 400 and response.json()["error"]["code"] == "openai_admin_key_missing"
    assert usage[1].seen == []


@pytest.mark.parametrize(("query", "param"), [
    ("start_date=2026-13-01&end_date=2026-01-01", "start_date"),
    ("start_date=2026-11-24&end_date=2026-11-23", "end_date"),
    ("start_date=2025-01-01&end_date=2026-11-23", "end_date"),
    ("end_date=2026-11-23", "start_date"),
    ("start_date=2026-11-23&end_date=tomorrow", "end_date"),
])
async def test_bad_dates_get_a_400_naming_the_parameter(api: httpx.AsyncClient, query: str, param: str) -> None:
    response = await api.get(f"/api/usage/reconciliation?{query}")
    assert response.status_code == 400 and response.json()["error"]["param"] == param


@pytest.mark.parametrize(("body", "param"), [
    (b"not json", None), (b"[]", None), (b'{"start_date": "2026-11-23"}', "end_date"),
    (b'{"start_date": 20261123, "end_date": "2026-11-24"}', "start_date"),
    (b'{"start_date": "2026-11-23", "end_date": "2026-11-24", "api_base": "ftp://x"}', "api_base"),
])
async def test_a_bad_sync_body_gets_a_400(api: httpx.AsyncClient, usage: tuple[str, FakeUsageAPI], body: bytes,
                                          param: str | None) -> None:
    response = await api.post("/api/usage/sync-openai", content=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert usage[1].seen == []


async def test_both_endpoints_need_the_admin_token(api: httpx.AsyncClient) -> None:
    api.headers.pop("authorization")
    assert (await api.get(RANGE)).status_code == 401
    assert (await api.post("/api/usage/sync-openai", json=SYNC)).status_code == 401


async def test_only_the_days_asked_for_are_reconciled(api: httpx.AsyncClient) -> None:
    await api.post("/api/usage/sync-openai", json=SYNC)
    report = (await api.get(f"/api/usage/reconciliation?start_date={D2}&end_date={D2}")).json()
    assert {row["date"] for row in report["days"]} == {"2026-11-24"}
    assert report["totals"]["provider"] == figures(3, 300, 0, 90)
