"""Budgets across real processes: the openai SDK's view of a refusal, and two proxy processes
sharing one PostgreSQL that must never jointly overspend."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from conftest import serve_in_thread
from fake_upstream import FakeUpstream
from processes import KEY, Proxy


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve_in_thread(fake.app) as url:
        yield fake, url


def refusals(proxy: Proxy) -> float:
    for line in httpx.get(f"{proxy.url}/metrics").text.splitlines():
        if line.startswith('tokenmeter_budget_refusals_total{scope="session"}'):
            return float(line.split()[-1])
    return 0.0


def test_the_openai_sdk_raises_rate_limit_error_and_does_not_retry(upstream: tuple[FakeUpstream, str],
                                                                   tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, upstream[1])
    try:
        proxy.admin("/api/budgets", method="PUT", json={"scope": "session", "subject": "sdk", "period": "day",
                                                        "max_cost": 0})
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=2)  # the SDK's default
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"X-Session-Id": "sdk"})
        assert refused.value.code == "budget_exceeded" and refused.value.type == "insufficient_quota"
        assert refusals(proxy) == 1.0, "the SDK retried a refusal marked x-should-retry: false"
    finally:
        proxy.stop()


def burst(proxies: list[Proxy], session: str, count: int = 40) -> int:
    """`count` requests released together, alternating between the proxies; returns how many
    were admitted. Each is estimated at 0.00102 and costs 0.0010025: at most 9 fit in 0.01."""
    proxies[0].admin("/api/budgets", method="PUT", json={"scope": "session", "subject": session, "period": "day",
                                                         "max_cost": 0.01})
    clients = [httpx.Client(base_url=proxies[n % len(proxies)].url, timeout=30) for n in range(count)]
    for client in clients:  # open every connection first, so the requests leave together
        client.get("/healthz")
    gate = threading.Barrier(count)

    def one(client: httpx.Client) -> int:
        gate.wait(30)
        return client.post("/v1/chat/completions", json={
            "model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}, headers={
            "authorization": f"Bearer {KEY}", "x-session-id": session, "x-fake-prompt-tokens": "1",
            "x-fake-completion-tokens": "100", "x-fake-delay-ms": "300"}).status_code

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        codes = list(pool.map(one, clients))
    for client in clients:
        client.close()
    assert set(codes) <= {200, 429}, codes
    return codes.count(200)


def test_two_processes_sharing_postgresql_never_jointly_overspend(upstream: tuple[FakeUpstream, str],
                                                                  postgres_url: str, tmp_path: Path) -> None:
    proxies = [Proxy(tmp_path, upstream[1], database_url=postgres_url) for _ in range(2)]
    try:
        for round_ in range(3):  # an interleaving gap would show by chance: three bursts
            session = f"pg-burst-{round_}"
            admitted = burst(proxies, session)
            totals = proxies[1].session(session, records=admitted)["totals"]
            assert 5 <= admitted <= 9, admitted
            assert totals["requests"] == admitted
            assert Decimal(str(totals["cost"])) <= Decimal("0.01"), totals
    finally:
        for proxy in proxies:
            proxy.stop()


def test_one_process_on_sqlite_never_overspends(upstream: tuple[FakeUpstream, str], tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, upstream[1])
    try:
        admitted = burst([proxy], "sqlite-burst")
        totals = proxy.session("sqlite-burst", records=admitted)["totals"]
        assert 5 <= admitted <= 9 and Decimal(str(totals["cost"])) <= Decimal("0.01")
    finally:
        proxy.stop()
