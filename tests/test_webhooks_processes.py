"""Alert webhooks across real processes: two proxies sharing one PostgreSQL, a burst of requests
through both crossing a budget's warning and its limit together, and each budget event reaching
the receiver once."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import serve_in_thread
from fake_upstream import FakeUpstream
from processes import KEY, Proxy
from webhook_receiver import SECRET, receiver


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_in_thread(FakeUpstream().app) as url:
        yield url


def test_two_processes_sharing_postgresql_send_each_budget_event_once(upstream: str, postgres_url: str,
                                                                      tmp_path: Path) -> None:
    with receiver() as hooks:
        environ = {"TOKENMETER_WEBHOOK_URLS": hooks.base + "/ok/pg", "TOKENMETER_WEBHOOK_SECRET": SECRET}
        proxies = [Proxy(tmp_path, upstream, database_url=postgres_url, environ=environ) for _ in range(2)]
        try:
            budget = proxies[0].admin("/api/budgets", method="PUT", json={
                "scope": "session", "subject": "s-pg", "period": "day", "max_cost": 0.01, "warn_at": 0.5})
            count = 20
            clients = [httpx.Client(base_url=proxies[n % 2].url, timeout=30) for n in range(count)]
            gate = threading.Barrier(count)

            def one(client: httpx.Client) -> int:
                gate.wait(30)
                return client.post("/v1/chat/completions", json={
                    "model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]},
                    headers={"authorization": f"Bearer {KEY}", "x-session-id": "s-pg", "x-fake-prompt-tokens": "1",
                             "x-fake-completion-tokens": "100", "x-fake-delay-ms": "300"}).status_code

            with concurrent.futures.ThreadPoolExecutor(count) as pool:
                codes = list(pool.map(one, clients))
            for client in clients:
                client.close()
            assert codes.count(200) >= 5 and 429 in codes, codes  # past the warning, and refused at the limit
            assert hooks.wait("/ok/pg", "budget.warning", timeout=10)
            assert hooks.wait("/ok/pg", "budget.exhausted", timeout=10)
            time.sleep(2.5)  # the other process's copy, were there one, would have come by now
            got = hooks.deliveries("/ok/pg")
            assert sorted(item["payload"]["type"] for item in got) == ["budget.exhausted", "budget.warning"], got
            assert all(item["payload"]["data"]["id"] == budget["id"] for item in got)
            rows = proxies[1].admin("/api/webhooks/deliveries", limit=50)["deliveries"]
            assert sorted((row["type"], row["status"], row["attempts"]) for row in rows) == [
                ("budget.exhausted", "delivered", 1), ("budget.warning", "delivered", 1)], rows
            assert {row["id"] for row in rows} == {item["headers"]["webhook-id"] for item in got}
        finally:
            for proxy in proxies:
                proxy.stop()
