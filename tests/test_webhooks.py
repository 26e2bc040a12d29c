"""Alert webhooks through the whole app, in-process, to a real receiver that verifies every
signature with the Standard Webhooks library: each event type with its data, once-only keys,
retries under one webhook-id, a receiver that hangs, the deliveries API; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from conftest import ADMIN_TOKEN, admin_headers, proxy_client, wait_for
from fake_upstream import FakeUpstream
from tokenmeter_proxy import alerts, webhooks
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.outbox import OutboxStore
from tokenmeter_proxy.storage.spool import Spool
from tokenmeter_proxy.storage.writer import RecordWriter
from tokenmeter_proxy.types import Usage, UsageRecord, utc_now
from tokenmeter_proxy.webhooks import Webhooks
from webhook_receiver import SECRET, Receiver, receiver

pytestmark = pytest.mark.anyio


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries a second apart instead of 5 s, 30 s...: the schedule itself is tested in test_alerts."""
    monkeypatch.setattr(alerts, "RETRY_DELAYS", (1,))


@contextlib.asynccontextmanager
async def hooked(database_url: str, pricing_file: Path, *urls: str) -> AsyncIterator[httpx.AsyncClient]:
    """The proxy in-process, sending its webhooks to `urls`, forwarding to a fake upstream."""
    settings = Settings(upstream="http://upstream.test/v1", database_url=database_url, pricing=pricing_file,
                        admin_token=ADMIN_TOKEN, spool_dir=pricing_file.parent / "spool",
                        webhook_urls=",".join(urls), webhook_secret=SECRET)
    app = create_app(settings, transport=httpx.ASGITransport(app=FakeUpstream().app))
    async with proxy_client(app) as client:
        yield client


async def chat(client: httpx.AsyncClient, model: str = "gpt-4o", session: str = "s-1", **steer: str) -> int:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if "completion-tokens" in steer:  # ask for what the fake answers: estimates then match the costs
        body["max_tokens"] = int(steer["completion-tokens"])
    response = await client.post("/v1/chat/completions", json=body, headers={
        "authorization": "Bearer sk-test", "x-session-id": session, **{f"x-fake-{k}": v for k, v in steer.items()}})
    return response.status_code


async def arrived(hooks: Receiver, path: str, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The deliveries of `kind` on `path` once there are `count` (the app runs meanwhile)."""
    async def enough() -> list[dict[str, Any]]:
        found = hooks.deliveries(path, kind)
        return found if len(found) >= count else []
    await wait_for(enough, timeout)
    return hooks.deliveries(path, kind)


async def listed(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    response = await client.get("/api/webhooks/deliveries?limit=50", headers=admin_headers())
    assert response.status_code == 200, response.text
    return [row for row in response.json()["deliveries"] if row["url"] == url]


async def test_model_unpriced_once_per_model_signed_and_listed_delivered(
        database_url: str, pricing_file: Path, hooks: Receiver) -> None:
    url = hooks.base + "/ok/unpriced"
    async with hooked(database_url, pricing_file, url) as client:
        assert await chat(client, "acme-unknown-1") == 200
        assert await chat(client, "acme-unknown-1", "s-2") == 200
        assert await chat(client, "gpt-4o") == 200
        assert await chat(client, "acme-unknown-2", **{"status": "404"}) == 404  # not billed: no alert
        [delivery] = await arrived(hooks, "/ok/unpriced", "model.unpriced")
        payload = delivery["payload"]
        assert payload["data"] == {"model": "acme-unknown-1", "provider": "openai"}
        assert payload["text"].startswith("Model acme-unknown-1 (openai) has no price")
        await asyncio.sleep(1.5)  # a second event, or one for the priced or failed model, would be here by now
        assert len(hooks.deliveries("/ok/unpriced")) == 1
        [row] = await wait_for(lambda: _delivered(client, url))
        assert row["id"] == delivery["headers"]["webhook-id"] and row["type"] == "model.unpriced"
        assert row["attempts"] == 1 and row["last_status_code"] == 200 and row["created_at"].endswith("Z")


async def _delivered(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    rows = await listed(client, url)
    return rows if rows and all(row["status"] == "delivered" for row in rows) else []


async def test_a_failed_delivery_is_retried_under_the_same_id_on_every_url(
        database_url: str, pricing_file: Path, hooks: Receiver, quick_retries: None) -> None:
    flaky, ok = hooks.base + "/flaky/a", hooks.base + "/ok/a"
    async with hooked(database_url, pricing_file, flaky, ok) as client:
        assert await chat(client, "acme-retry-1") == 200
        attempts = await arrived(hooks, "/flaky/a", "model.unpriced", count=2)
        [other] = await arrived(hooks, "/ok/a", "model.unpriced")
        assert len(attempts) == 2
        ids = {item["headers"]["webhook-id"] for item in [*attempts, other]}
        assert len(ids) == 1, f"the retry or the other URL changed the webhook-id: {ids}"
        assert attempts[0]["body"] == attempts[1]["body"]  # the same event; only the signature's time moves
        rows = await wait_for(lambda: _delivered(client, flaky))
        assert [(row["status"], row["attempts"], row["last_status_code"]) for row in rows] == [("delivered", 2, 200)]
        await asyncio.sleep(1.2)
        assert len(hooks.deliveries("/flaky/a")) == 2  # delivered: no further attempt


async def test_budget_warning_and_exhaustion_once_each_and_a_replaced_budget_re_arms(
        database_url: str, pricing_file: Path, hooks: Receiver) -> None:
    async with hooked(database_url, pricing_file, hooks.base + "/ok/budget") as client:
        budget = {"scope": "session", "subject": "s-b", "period": "day", "max_cost": 0.01, "warn_at": 0.5}
        created = (await client.put("/api/budgets", json=budget, headers=admin_headers())).json()
        steer = {"prompt-tokens": "1", "completion-tokens": "100"}  # 0.0010025 each: 9 fit, the 5th warns
        codes = [await chat(client, session="s-b", **steer) for _ in range(12)]
        assert codes.count(429) >= 1, codes
        [warning] = await arrived(hooks, "/ok/budget", "budget.warning")
        [exhausted] = await arrived(hooks, "/ok/budget", "budget.exhausted")
        for delivery in (warning, exhausted):
            data = delivery["payload"]["data"]
            assert data["id"] == created["id"] and data["subject"] == "s-b" and data["scope"] == "session"
            assert set(created) <= set(data)  # the budget as the budgets API shows it
        assert warning["payload"]["text"].startswith("Budget session s-b (day) reached 50% of 0.01 USD: ")
        assert "exhausted" in exhausted["payload"]["text"]
        assert [await chat(client, session="s-b", **steer) for _ in range(3)] == [429] * 3
        await asyncio.sleep(1.5)
        assert len(hooks.deliveries("/ok/budget")) == 2, "a budget event was sent twice in one period"

        replaced = {**budget, "max_cost": 0.02, "warn_at": 0.4}  # re-armed, and 0.009 spent is past 0.008
        assert (await client.put("/api/budgets", json=replaced, headers=admin_headers())).status_code == 200
        again = await arrived(hooks, "/ok/budget", "budget.warning", count=2)
        assert len(again) == 2 and again[1]["payload"]["data"]["max_cost"] == 0.02
        assert again[0]["headers"]["webhook-id"] != again[1]["headers"]["webhook-id"]


async def test_a_hanging_receiver_delays_neither_requests_nor_other_urls(
        sqlite_url: str, pricing_file: Path, hooks: Receiver) -> None:
    async with hooked(sqlite_url, pricing_file, hooks.base + "/hang/x", hooks.base + "/ok/x") as client:
        timings = []
        for n in range(12):  # each a new unpriced model: an event for each
            started = time.perf_counter()
            assert await chat(client, f"acme-hang-{n}") == 200
            timings.append(time.perf_counter() - started)
        delivered = await arrived(hooks, "/ok/x", "model.unpriced", count=12, timeout=5)
        assert len(delivered) == 12, "deliveries to a healthy URL waited for the hanging one"
        assert max(timings) < 1.0 and statistics.median(timings) < 0.1, timings
        assert 1 <= hooks.most_open_hangs <= webhooks.MAX_IN_FLIGHT_PER_URL


async def test_a_refused_pricing_file_is_sent_as_config_rejected(sqlite_url: str, pricing_file: Path,
                                                                 hooks: Receiver) -> None:
    async with hooked(sqlite_url, pricing_file, hooks.base + "/ok/config"):
        pricing_file.write_text("currency: USD\nmodels:\n  gpt-4o: {input: lots}\n")
        [delivery] = await arrived(hooks, "/ok/config", "config.rejected", timeout=5)
        data = delivery["payload"]["data"]
        assert data["file"] == str(pricing_file) and data["errors"] and all(
            error.startswith(str(pricing_file)) for error in data["errors"]), data
        assert delivery["payload"]["text"].startswith(f"{pricing_file} was refused on reload")


class FlakyRepository:
    """Stands in for the database: refuses everything while `down`."""

    def __init__(self) -> None:
        self.down = True
        self.stored: list[UsageRecord] = []

    def insert_records(self, batch: list[UsageRecord]) -> int:
        if self.down:
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        self.stored += batch
        return len(batch)

    def ping(self) -> None:
        if self.down:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))


async def test_an_outage_is_told_once_from_memory_and_so_is_the_recovery(
        tmp_path: Path, hooks: Receiver, quick_retries: None) -> None:
    unreachable = engine_from_url(f"sqlite:///{tmp_path / 'missing' / 'no.db'}")  # the outbox is down too
    sender = Webhooks([hooks.base + "/flaky/storage"], SECRET, OutboxStore(unreachable), clock=utc_now,
                      host="test-host")
    repository = FlakyRepository()
    writer = RecordWriter(repository, Spool(tmp_path / "spool"), batch_window=0, probe_interval=0.1,  # type: ignore[arg-type]
                          on_outage=sender.storage_outage)
    tasks = [asyncio.create_task(job) for job in (sender.run(), writer.run(), writer.replay())]
    try:
        for n in range(3):
            writer.submit(_record(n))
            await writer.drain()
        degraded = await arrived(hooks, "/flaky/storage", "storage.degraded", count=2)  # refused once, then again
        assert len({item["headers"]["webhook-id"] for item in degraded}) == 1
        assert degraded[0]["payload"]["data"] == {
            "host": "test-host", "error": "OperationalError: (builtins.Exception) connection refused"}
        repository.down = False
        recovered = await arrived(hooks, "/flaky/storage", "storage.recovered", count=2)
        assert len(recovered) == 2 and len(repository.stored) == 3
        await asyncio.sleep(0.5)
        kinds = [item["payload"]["type"] for item in hooks.deliveries("/flaky/storage")]
        assert kinds.count("storage.degraded") == 2 and kinds.count("storage.recovered") == 2  # once each, retried
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        unreachable.dispose()


def _record(n: int) -> UsageRecord:
    return UsageRecord(id=f"{n:024x}", created_at=utc_now(), session_id="s", user_id=None, api_key_id=None,
                       endpoint="chat/completions", model="gpt-4o", usage=Usage(input_tokens=1), cost=None,
                       currency="USD", price_version="v", usage_source="upstream", status_code=200, streamed=False,
                       latency_ms=1)


async def test_the_deliveries_api_checks_its_limit_and_token(proxy: httpx.AsyncClient) -> None:
    response = await proxy.get("/api/webhooks/deliveries", headers=admin_headers())
    assert response.status_code == 200 and response.json() == {"deliveries": []}
    for limit in ("0", "501", "x"):
        bad = await proxy.get(f"/api/webhooks/deliveries?limit={limit}", headers=admin_headers())
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    assert (await proxy.get("/api/webhooks/deliveries")).status_code == 401
