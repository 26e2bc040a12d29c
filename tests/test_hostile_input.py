"""Hostile input: fuzzed admin API calls and SSE streams, brute-forced tokens, foreign origins,
oversized and malformed requests. Nothing may crash or answer 500."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from conftest import ADMIN_TOKEN, PRICING, admin_headers, free_port, postgres_database, proxy_client, serve_in_thread
from conftest import _migrate as migrate
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.openapi import admin_openapi
from tokenmeter_proxy.providers.openai import StreamReader
from tokenmeter_proxy.sse import SSEDecoder

OPERATIONS = [result.ok() for result in schemathesis.openapi.from_dict(admin_openapi()).get_all_operations()]
# CPython 3.11.7 can fail to parse a module that is first imported deep inside a call stack
# ("SystemError: AST constructor recursion depth mismatch", fixed in 3.11.8); hypothesis imports
# its flatmap strategy lazily, deep inside schemathesis's case generation, so import it here.
st.integers().flatmap(st.just)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def admin_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The admin API on a real server, over SQLite and over PostgreSQL (the databases differ in
    what they refuse: text with NUL, integers past 64 bits, impossible dates)."""
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "pricing.yaml").write_text(PRICING)
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            url = stack.enter_context(postgres_database())
        else:
            url = f"sqlite:///{directory / 'usage.db'}"
            migrate(url)
        yield stack.enter_context(_admin_api(url, directory))


@contextlib.contextmanager
def _admin_api(url: str, directory: Path) -> Iterator[str]:
    # No OPENAI_ADMIN_KEY, and the usage API on a closed local port: a fuzzed sync-openai is
    # refused (400) before anything leaves the machine, never sent to the real API.
    settings = Settings(database_url=url, pricing=directory / "pricing.yaml", admin_token=ADMIN_TOKEN,
                        spool_dir=directory / "spool", openai_api_base=f"http://127.0.0.1:{free_port()}/v1")
    with serve_in_thread(create_app(settings)) as base:
        yield base


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_the_admin_api_answers_every_input_without_a_server_error(admin_url: str, operation: object) -> None:
    """Schemathesis generates requests from /api/openapi.json, valid and not."""

    @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
    @hypothesis_settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=admin_url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
        if response.status_code == 200:
            operation.validate_response(response)

    check()


@given(st.lists(st.binary(max_size=64), max_size=12))
@hypothesis_settings(max_examples=400, deadline=None)
def test_the_sse_decoder_survives_any_bytes(chunks: list[bytes]) -> None:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.flush()
    assert b"".join(event.raw for event in events) + decoder.pending() == b"".join(chunks)


@given(st.lists(st.sampled_from([b"data: ", b"{", b"}", b'"usage":', b"null", b'"choices":[]', b"[DONE]",
                                 b"\n", b"\r", b"\n\n", b'{"prompt_tokens":3}', b"event: x\n", b"\xff"]), max_size=40))
@hypothesis_settings(max_examples=400, deadline=None)
def test_the_stream_reader_survives_any_event_soup(pieces: list[bytes]) -> None:
    reader = StreamReader("chat/completions", hide_usage_chunk=True)
    for piece in pieces:
        reader.feed(piece)
    reader.end()


@pytest.mark.anyio
async def test_guessing_the_admin_token_is_cut_off_after_ten_failures(settings: Settings) -> None:
    async with proxy_client(create_app(settings)) as client:
        codes = [(await client.get("/api/usage/stats", headers={"authorization": f"Bearer guess-{n}"})).status_code
                 for n in range(12)]
        right = await client.get("/api/usage/stats", headers=admin_headers())
    assert codes == [401] * 10 + [429] * 2
    assert right.status_code == 429 and right.headers["retry-after"] == "60"


@pytest.mark.anyio
async def test_cors_is_closed_by_default(settings: Settings) -> None:
    async with proxy_client(create_app(settings)) as client:
        preflight = await client.options("/api/usage/stats", headers={
            "origin": "https://evil.example", "access-control-request-method": "GET"})
        read = await client.get("/api/usage/stats", headers={**admin_headers(), "origin": "https://evil.example"})
    for response in (preflight, read):
        assert not any(name.startswith("access-control-") for name in response.headers)


@pytest.mark.anyio
async def test_the_openapi_description_is_public_and_lists_the_admin_api(settings: Settings) -> None:
    async with proxy_client(create_app(settings)) as client:
        document = (await client.get("/api/openapi.json")).json()
    assert document["openapi"].startswith("3.") and "/api/usage/stats" in document["paths"]
    assert "/api/budgets" in document["paths"]


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "body"), [
    ({"x-session-id": "s" * 10_000}, b'{"model": "gpt-4o", "messages": []}'),
    ({"x-session-id": "evil\x01\x02session"}, b'{"model": "gpt-4o", "messages": []}'),
    ({"x-user-id": "\u00e9\u00e9"}, b'{"model": "gpt-4o", "messages": []}'),
    ({}, b"\xff\xfe\x00 not utf-8"),
    ({}, b'{"model": "gpt-4o", "messages": [' + b"[" * 5000 + b"]"),
    ({}, b'{"model": ' + b'"x", ' * 100_000 + b'"y": 1}'),
])
async def test_odd_requests_are_forwarded_and_recorded_without_storing_anything_raw(
        proxy: httpx.AsyncClient, headers: dict[str, str], body: bytes) -> None:
    response = await proxy.post("/v1/chat/completions", content=body, headers={
        "authorization": "Bearer sk-x", **{k: v.encode("latin-1") for k, v in headers.items()}})
    assert response.status_code in (200, 400)
    await proxy.app.writer.drain()  # type: ignore[attr-defined]
    [record] = (await proxy.get("/api/usage/records", headers=admin_headers())).json()["records"]
    assert record["session_id"] is None or (len(record["session_id"]) <= 256 and record["session_id"].isprintable())
