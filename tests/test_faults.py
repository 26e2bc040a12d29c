"""Faults injected for real: a PostgreSQL of our own stopped mid-load, the proxy killed with
SIGKILL and restarted, two proxies behind a round-robin balancer. Nothing may be lost, nothing
counted twice, and no proxied request may fail because of the database."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from conftest import free_port, serve_in_thread
from fake_upstream import FakeUpstream
from pgcluster import Cluster, available
from processes import KEY, Proxy
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.record_rows import records_table

pytestmark = pytest.mark.skipif(not available(), reason="needs PostgreSQL 15's initdb and pg_ctl")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    database = Cluster()
    database.start()
    yield database
    database.destroy()


def ask(base: str, session: str, *, delay_ms: int = 0, stream: bool = False) -> int:
    response = httpx.post(f"{base}/v1/chat/completions", timeout=60, headers={
        "authorization": f"Bearer {KEY}", "x-session-id": session, "x-fake-prompt-tokens": "100",
        "x-fake-completion-tokens": "10", "x-fake-delay-ms": str(delay_ms)},
        json={"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    return response.status_code


def stored(url: str) -> tuple[int, int]:
    """(records, distinct ids) in the database."""
    engine = engine_from_url(url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count(), func.count(func.distinct(records_table.c.id)))).one()
    finally:
        engine.dispose()


def wait_for_records(url: str, count: int, timeout: float = 30) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = stored(url)
        except Exception:  # the database may still be starting
            found = (0, 0)
        if found[0] >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def metric(proxy: Proxy, name: str) -> float:
    match = re.search(rf"^{name} ([\d.e+]+)$", httpx.get(f"{proxy.url}/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_database_outage_of_20_seconds_mid_load_loses_no_request_and_no_record(
        upstream: tuple[FakeUpstream, str], cluster: Cluster, tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, upstream[1], database_url=cluster.url)
    outage: list[int] = []

    def stop_for_twenty_seconds() -> None:
        time.sleep(4)
        cluster.stop()
        outage.append(httpx.get(f"{proxy.url}/api/usage/stats", headers={
            "authorization": "Bearer test-admin-token"}).status_code)
        time.sleep(20)
        cluster.start()

    try:
        fault = threading.Thread(target=stop_for_twenty_seconds)
        fault.start()
        # 500 requests at 32 concurrency, paced to run ~30 s so the outage falls in the middle
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(lambda n: ask(proxy.url, f"outage-{n % 16}", delay_ms=1800), range(500)))
        fault.join()
        assert codes == [200] * 500
        assert outage == [503], "the admin API should answer 503 while the database is down"
        assert metric(proxy, "tokenmeter_records_spooled_total") > 0, "the outage did not hit the writer"
        assert wait_for_records(cluster.url, 500) == (500, 500)
        time.sleep(2)
        assert stored(cluster.url) == (500, 500)
    finally:
        proxy.stop()


def test_spooled_records_survive_sigkill_and_are_stored_exactly_once(
        upstream: tuple[FakeUpstream, str], cluster: Cluster, tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, upstream[1], database_url=cluster.url)
    cluster.stop()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda n: ask(proxy.url, "killed"), range(60))) == [200] * 60
    deadline = time.monotonic() + 10
    while metric(proxy, "tokenmeter_records_spooled_total") < 60:
        assert time.monotonic() < deadline, "the records were not spooled"
        time.sleep(0.1)
    assert proxy.stop(signal.SIGKILL) == -signal.SIGKILL
    cluster.start()
    restarted = Proxy(tmp_path, upstream[1], database_url=cluster.url)  # same directory, same spool
    try:
        assert wait_for_records(cluster.url, 60) == (60, 60)
        time.sleep(2)  # a second replay must find nothing left to add
        assert stored(cluster.url) == (60, 60)
        assert not list((tmp_path / "tokenmeter-spool").glob("batch-*"))
    finally:
        restarted.stop()


def test_two_proxies_behind_a_balancer_count_every_request_once(upstream: tuple[FakeUpstream, str],
                                                                 cluster: Cluster, tmp_path: Path) -> None:
    first, second = (Proxy(tmp_path / name, upstream[1], database_url=cluster.url) for name in ("a", "b"))
    try:
        with round_robin([first.url, second.url]) as balancer, concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda n: ask(balancer, f"lb-{n % 7}", stream=n % 3 == 0), range(300)))
        assert codes == [200] * 300
        assert wait_for_records(cluster.url, 300) == (300, 300)
        stats = httpx.get(f"{first.url}/api/usage/stats", params={"period": "24h"},
                          headers={"authorization": "Bearer test-admin-token"}).json()
        # what the upstream reported: 100 prompt and 10 completion tokens per request
        assert (stats["totals"]["requests"], stats["totals"]["input_tokens"],
                stats["totals"]["output_tokens"]) == (300, 30_000, 3_000)
    finally:
        first.stop()
        second.stop()


@contextlib.contextmanager
def round_robin(backends: list[str]) -> Iterator[str]:
    """A small TCP balancer: each new connection goes to the next backend in turn."""
    ports = itertools.cycle([int(url.rsplit(":", 1)[1]) for url in backends])
    port = free_port()
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", next(ports))
        await asyncio.gather(pipe(reader, backend_writer), pipe(backend_reader, writer))

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
