"""End to end: the proxy as a real process (uvicorn), a fake upstream on a real socket, and the
official `openai` client pointed at the proxy the way a chat app would be."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def proxy(upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    running = Proxy(tmp_path_factory.mktemp("proxy"), upstream[1])
    yield running
    running.stop()


@pytest.fixture
def client(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0)


def cost(value: Any) -> Decimal:
    return Decimal(str(value))


def test_the_openai_client_works_unchanged_and_every_call_is_metered(proxy: Proxy, client: openai.OpenAI) -> None:
    steer = {"X-Session-Id": "e2e-1", "X-User-Id": "alice", "x-fake-prompt-tokens": "1000",
             "x-fake-completion-tokens": "500", "x-fake-cached-tokens": "200", "x-fake-reasoning-tokens": "50"}
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-2024-08-06", messages=[{"role": "user", "content": "hi"}], extra_headers=steer)
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from fake"
    assert completion.usage is not None and completion.usage.prompt_tokens == 1000
    assert raw.headers["x-tokenmeter-cost"] == "0.00725"

    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}],
                                                 stream=True, extra_headers=steer))
    assert chunks and all(chunk.choices for chunk in chunks), "a usage-only chunk reached the client"
    own = list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}],
                                              stream=True, stream_options={"include_usage": True},
                                              extra_headers=steer))
    assert own[-1].usage is not None and own[-1].usage.completion_tokens == 500

    embedding = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], extra_headers=steer)
    assert len(embedding.data) == 2
    response = client.responses.create(model="gpt-4o", input="hello", extra_headers=steer)
    assert response.output_text == "hello from fake"
    events = list(client.responses.create(model="gpt-4o", input="hello", stream=True, extra_headers=steer))
    assert events[-1].type == "response.completed"

    session = proxy.session("e2e-1", records=6)
    by_endpoint = sorted((record["endpoint"], record["streamed"]) for record in session["records"])
    assert by_endpoint == [("chat/completions", False), ("chat/completions", True), ("chat/completions", True),
                           ("embeddings", False), ("responses", False), ("responses", True)]
    for record in session["records"]:
        assert record["usage_source"] == "upstream" and record["user_id"] == "alice"
        assert record["input_tokens"] == 1000
        expected_output = 0 if record["endpoint"] == "embeddings" else 500
        assert record["output_tokens"] == expected_output
    totals = session["totals"]
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (6, 6000, 2500)
    # 1 x gpt-4o chat + 2 x gpt-4o responses: 0.00725 each; 2 x gpt-4o-mini: (800x0.15 + 200x0.075 + 500x0.6)/1e6;
    # embeddings: the cached-input price defaults to the input price, so 1000 x 0.02 / 1e6
    expected = 3 * Decimal("0.00725") + 2 * Decimal("0.000435") + Decimal("0.00002")
    assert abs(cost(totals["cost"]) - expected) <= Decimal("1e-9")
    stats = proxy.admin("/api/usage/stats", period="24h", session_id="e2e-1")
    assert stats["totals"] == totals


def test_a_stream_is_relayed_as_it_arrives(proxy: Proxy, client: openai.OpenAI) -> None:
    started = time.monotonic()
    arrivals = [time.monotonic() - started for _ in client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "slow"}], stream=True,
        extra_headers={"X-Session-Id": "e2e-slow", "x-fake-chunks": "5", "x-fake-delay-ms": "200"})]
    assert arrivals[0] < 0.45 * arrivals[-1], f"the first chunk came at {arrivals[0]:.2f}s of {arrivals[-1]:.2f}s"


def test_a_client_that_leaves_mid_stream_closes_the_upstream_and_is_recorded(
        proxy: Proxy, upstream: tuple[FakeUpstream, str]) -> None:
    fake, _ = upstream
    with httpx.Client(timeout=10) as http, http.stream("POST", f"{proxy.url}/v1/chat/completions", headers={
            "authorization": f"Bearer {KEY}", "X-Session-Id": "e2e-gone", "x-fake-chunks": "50",
            "x-fake-delay-ms": "50"}, json={"model": "gpt-4o", "stream": True,
                                            "messages": [{"role": "user", "content": "a long answer"}]}) as response:
        lines = 0
        for line in response.iter_lines():
            lines += bool(line)
            if lines == 5:
                break
    [record] = proxy.session("e2e-gone")["records"]
    assert record["status_code"] == 499 and record["usage_source"] == "estimated"
    assert record["output_tokens"] > 0 and record["input_tokens"] > 0
    deadline = time.monotonic() + 5
    while "stream-abandoned" not in fake.events:
        assert time.monotonic() < deadline, "the upstream stream was never closed"
        time.sleep(0.05)


def test_upstream_errors_reach_the_client_as_the_sdk_expects(proxy: Proxy, client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failure:
        client.chat.completions.create(model="gpt-4o", messages=[], extra_headers={"x-fake-status": "503"})
    assert failure.value.status_code == 503
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=[], extra_headers={"x-fake-status": "429"})
    assert client.models.list().data[0].id == "gpt-4o"


def test_metrics_and_health(proxy: Proxy) -> None:
    assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{proxy.url}/readyz").json()["status"] == "ready"
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert 'tokenmeter_requests_total{endpoint="chat/completions",provider="openai",status="200"}' in metrics
    assert 'tokenmeter_tokens_total{direction="input",model="gpt-4o",provider="openai"}' in metrics
    assert "tokenmeter_request_duration_seconds_bucket" in metrics and "tokenmeter_cost_total" in metrics


def test_sigterm_lets_open_streams_finish_and_writes_every_record(upstream: tuple[FakeUpstream, str],
                                                                    tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, upstream[1])
    finished: list[int] = []
    opened = threading.Semaphore(0)

    def slow_stream() -> None:
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", timeout=30, json={
                "model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}, headers={
                "authorization": f"Bearer {KEY}", "X-Session-Id": "e2e-term", "x-fake-chunks": "10",
                "x-fake-delay-ms": "200"}) as response:
            events = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events += 1
                    if events == 1:
                        opened.release()
            finished.append(events)

    streams = [threading.Thread(target=slow_stream) for _ in range(20)]
    for stream in streams:
        stream.start()
    for _ in streams:  # every stream is open and under way (10 chunks, 200 ms apart)
        assert opened.acquire(timeout=20)
    assert proxy.stop(signal.SIGTERM) == 0
    for stream in streams:
        stream.join(10)
    assert finished == [12] * 20  # 10 chunks, the finish chunk and [DONE], for every stream
    with sqlite3.connect(proxy.database) as database:
        assert database.execute("SELECT count(*), sum(streamed) FROM usage_records").fetchone() == (20, 20)


def test_a_large_upload_keeps_its_content_length(proxy: Proxy) -> None:
    body = b"x" * 200_000
    response = httpx.post(f"{proxy.url}/v1/echo/files", content=body, headers={"authorization": f"Bearer {KEY}"})
    echoed = response.json()
    assert echoed["headers"]["content-length"] == "200000" and "transfer-encoding" not in echoed["headers"]
    assert len(echoed["body"]) == 200_000


def test_new_prices_apply_within_two_seconds(proxy: Proxy, client: openai.OpenAI) -> None:
    path = proxy.log.parent / "pricing.yaml"  # in the proxy's working directory
    original = path.read_text()
    try:
        path.write_text(original.replace("input: 2.50", "input: 5.00"))
        time.sleep(1.5)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[], extra_headers={"x-fake-prompt-tokens": "1000",
                                                        "x-fake-completion-tokens": "0"})
        assert raw.headers["x-tokenmeter-cost"] == "0.005"
        path.write_text("models: [this is: not valid")
        time.sleep(1.5)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[], extra_headers={"x-fake-prompt-tokens": "1000",
                                                        "x-fake-completion-tokens": "0"})
        assert raw.headers["x-tokenmeter-cost"] == "0.005", "a broken file changed the prices"
    finally:
        path.write_text(original)
        time.sleep(1.5)
