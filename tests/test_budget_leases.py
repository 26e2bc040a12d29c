"""Budget leases across real processes sharing PostgreSQL: admitted in memory, yet never
overspent. A limit lowered while slices are out holds at once; a killed process's slice lapses
and nothing is lost or doubled; 1,000 requests through three processes whose budget runs out
midway admit no more than the limit, and the budget's spend equals the records. In-process: a
period that rolls over mid-load."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import admin_headers, proxy_client, serve_in_thread
from fake_upstream import FakeUpstream
from processes import KEY, Proxy
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings

# 1 prompt token reported against an estimate of 8, 100 completion tokens within max_tokens 100:
# each request is estimated at 0.00102 and costs 0.0010025 (gpt-4o: 2.50 and 10.00 per million)
STEER = {"x-fake-prompt-tokens": "1", "x-fake-completion-tokens": "100"}
BODY = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}
COST = Decimal("0.0010025")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def proxies(upstream: tuple[FakeUpstream, str], postgres_url: str, tmp_path: Path) -> Iterator[list[Proxy]]:
    started = [Proxy(tmp_path / f"p{n}", upstream[1], database_url=postgres_url,
                     environ={"TOKENMETER_BUDGET_LEASE_SECONDS": "3"}) for n in range(3)]
    yield started
    for proxy in started:
        if proxy.process.poll() is None:
            proxy.stop()


async def send(client: httpx.AsyncClient, base: str, session: str, **steer: str) -> int:
    response = await client.post(f"{base}/v1/chat/completions", json=BODY, headers={
        "authorization": f"Bearer {KEY}", "x-session-id": session, **STEER, **steer})
    return response.status_code


def budget_of(proxy: Proxy, session: str) -> dict[str, Any]:
    return next(item for item in proxy.admin("/api/budgets")["budgets"] if item["subject"] == session)


def settled(proxy: Proxy, session: str, records: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The session's totals (once it holds `records`) and its budget once no lease holds anything."""
    totals = proxy.session(session, records=records)["totals"] if records else {"cost": 0, "requests": 0}
    deadline = time.monotonic() + 10
    while (budget := budget_of(proxy, session))["reserved_cost"] and time.monotonic() < deadline:
        time.sleep(0.2)
    return totals, budget


def test_a_thousand_requests_through_three_processes_never_pass_the_limit(proxies: list[Proxy]) -> None:
    limit = Decimal("0.5")  # ~490 requests' worth: the budget runs out midway
    proxies[0].admin("/api/budgets", method="PUT", json={"scope": "session", "subject": "thousand", "period": "day",
                                                         "max_cost": float(limit)})

    async def load() -> list[int]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=48)) as client:
            gate = asyncio.Semaphore(48)

            async def one(n: int) -> int:
                async with gate:
                    return await send(client, proxies[n % 3].url, "thousand")

            return list(await asyncio.gather(*(one(n) for n in range(1000))))

    codes = asyncio.run(load())
    admitted = codes.count(200)
    assert set(codes) == {200, 429} and 400 <= admitted < 500, admitted
    totals, budget = settled(proxies[1], "thousand", admitted)
    assert totals["requests"] == admitted and Decimal(str(totals["cost"])) == admitted * COST <= limit
    assert Decimal(str(budget["spent_cost"])) == Decimal(str(totals["cost"]))  # spend equals the records


def test_a_limit_lowered_while_slices_are_out_holds_at_once_everywhere(proxies: list[Proxy]) -> None:
    proxies[0].admin("/api/budgets", method="PUT", json={"scope": "session", "subject": "lowered", "period": "day",
                                                         "max_cost": 1})

    async def round_(count: int) -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(send(client, proxies[n % 3].url, "lowered") for n in range(count))))

    assert asyncio.run(round_(30)) == [200] * 30  # every process now holds a slice of what is left
    spent = Decimal(str(proxies[0].session("lowered", records=30)["totals"]["cost"]))
    proxies[2].admin("/api/budgets", method="PUT", json={"scope": "session", "subject": "lowered", "period": "day",
                                                         "max_cost": float(spent + Decimal("0.0015"))})
    time.sleep(0.5)  # every process hears of the change (LISTEN/NOTIFY) and gives its slice back
    codes = asyncio.run(round_(30))
    assert codes.count(200) <= 1, codes  # room for one more request at most, whichever process gets it
    totals, budget = settled(proxies[0], "lowered", 30 + codes.count(200))
    assert Decimal(str(totals["cost"])) <= spent + Decimal("0.0015")
    assert Decimal(str(budget["spent_cost"])) == Decimal(str(totals["cost"]))


def test_a_killed_process_slice_lapses_and_nothing_is_lost_or_doubled(proxies: list[Proxy]) -> None:
    victim, survivor = proxies[0], proxies[1]
    victim.admin("/api/budgets", method="PUT", json={"scope": "session", "subject": "killed", "period": "day",
                                                     "max_cost": 0.0105})  # room for 10 requests

    def one(base: str, **steer: str) -> int:
        async def go() -> int:
            async with httpx.AsyncClient(timeout=30) as client:
                return await send(client, base, "killed", **steer)
        try:
            return asyncio.run(go())
        except httpx.TransportError:
            return 0  # its proxy was killed under it

    assert one(victim.url) == 200
    victim.session("killed", records=1)  # stored: the victim dies holding a slice, and a request in flight
    in_flight = threading.Thread(target=one, args=(victim.url,), kwargs={"x-fake-delay-ms": "10000"})
    in_flight.start()
    deadline = time.monotonic() + 5
    while not Decimal(str(budget_of(survivor, "killed")["reserved_cost"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.stop(signal.SIGKILL)
    in_flight.join()
    assert Decimal(str(budget_of(survivor, "killed")["reserved_cost"])) > 0  # until it lapses, it still counts
    time.sleep(3.5)  # TOKENMETER_BUDGET_LEASE_SECONDS
    assert budget_of(survivor, "killed")["reserved_cost"] == 0
    codes = [one(survivor.url) for _ in range(10)]
    assert codes == [200] * 9 + [429], codes  # all the room left after the first request, and no more
    totals, budget = settled(survivor, "killed", 10)
    assert totals["requests"] == 10 and Decimal(str(totals["cost"])) == 10 * COST  # nothing lost, nothing twice
    assert Decimal(str(budget["spent_cost"])) == 10 * COST


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 25, 23, 59, 58, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def rolling(settings: Settings, fake_upstream: FakeUpstream) -> AsyncIterator[tuple[httpx.AsyncClient, Clock]]:
    clock = Clock()
    app = create_app(settings, transport=httpx.ASGITransport(app=fake_upstream.app), clock=clock)
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client, clock


@pytest.mark.anyio
async def test_a_day_rolling_over_mid_load_opens_the_new_day_and_never_overspends_either(
        rolling: tuple[httpx.AsyncClient, Clock]) -> None:
    client, clock = rolling
    await client.put("/api/budgets", headers=admin_headers(), json={"scope": "session", "subject": "midnight",
                                                                      "period": "day", "max_cost": 0.0055})

    async def burst(count: int) -> list[int]:
        codes = await asyncio.gather(*(client.post("/v1/chat/completions", json=BODY, headers={
            "authorization": f"Bearer {KEY}", "x-session-id": "midnight", **STEER}) for _ in range(count)))
        await client.app.writer.drain()  # type: ignore[attr-defined]
        return [response.status_code for response in codes]

    before = await burst(12)
    assert before.count(200) == 5  # 5 x 0.0010025 of the day's 0.0055
    clock.now += dt.timedelta(seconds=3)  # midnight, in the middle of the load
    after = await burst(12)
    assert after.count(200) == 5  # the new day's own 0.0055, again
    stats = (await client.get("/api/usage/stats", params={"period": "24h", "session_id": "midnight"},
                              headers=admin_headers())).json()
    by_day = {day["date"]: day["cost"] for day in stats["daily"] if day["requests"]}
    assert by_day == {"2026-11-25": float(5 * COST), "2026-11-26": float(5 * COST)}
