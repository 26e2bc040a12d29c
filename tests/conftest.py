"""Shared fixtures: pricing files, migrated databases (SQLite and PostgreSQL), the app wired to
a fake upstream in-process, and real servers for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fake_upstream import FakeUpstream
from tokenmeter_proxy import vocabularies
from tokenmeter_proxy.app import TokenMeterApp, create_app
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.migrate import upgrade

ADMIN_TOKEN = "test-admin-token"
PRICING = """\
currency: USD
unit_tokens: 1000000
exchange_rates:
  EUR: 0.5
models:
  gpt-4o:
    input: 2.50
    cached_input: 1.25
    output: 10.00
    aliases: [chatgpt-4o-latest]
  gpt-4o-mini: {input: 0.15, cached_input: 0.075, output: 0.60}
  text-embedding-3-small: {input: 0.02}
  claude-like: {input: 3.00, cached_input: 0.30, cache_write: 3.75, output: 15.00}
"""
POSTGRES_URL = os.environ.get("TOKENMETER_TEST_POSTGRES_URL")


@pytest.fixture(scope="session", autouse=True)
def offline_encodings() -> None:
    """tiktoken's encodings, from the files bpe-openai ships (no download)."""
    vocabularies.prime_offline_cache(Settings().tiktoken_cache_dir)


@pytest.fixture
def pricing_file(tmp_path: Path) -> Path:
    path = tmp_path / "pricing.yaml"
    path.write_text(PRICING)
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    _migrate(url)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards."""
    with postgres_database() as url:
        yield url


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped on leaving; skips the test without one."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need TOKENMETER_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres)")
    name = f"tokenmeter_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False)
    _migrate(url)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


def _migrate(url: str) -> None:
    engine = engine_from_url(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture
def fake_upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def settings(pricing_file: Path, sqlite_url: str) -> Settings:
    return Settings(upstream="http://upstream.test/v1", database_url=sqlite_url, pricing=pricing_file,
                    admin_token=ADMIN_TOKEN, spool_dir=pricing_file.parent / "spool")


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan startup and shutdown around the block."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await from_app.get()
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
        await task


@contextlib.asynccontextmanager
async def proxy_client(app: TokenMeterApp) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process, with its lifespan running."""
    async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                base_url="http://proxy.test") as client:
        yield client


@pytest.fixture
async def proxy(settings: Settings, fake_upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    """The proxy app forwarding to the fake upstream in-process."""
    app = create_app(settings, transport=httpx.ASGITransport(app=fake_upstream.app))
    async with proxy_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_TOKEN}"}


async def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """A real uvicorn server for `app` on a free port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
