"""Reading OpenAI's usage API, and `tokenmeter-proxy sync-openai`: pages followed, 429 and 5xx
retried with backoff, clear errors, and the admin key never written anywhere."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from conftest import free_port, serve_in_thread
from fake_usage_api import ADMIN_KEY, FakeUsageAPI
from tokenmeter_proxy.cli import main
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.errors import ProviderError
from tokenmeter_proxy.openai_usage import UsageAPI
from tokenmeter_proxy.reconciliation import DayFigures, Figures
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.provider_store import ProviderStore

D1, D2, D3 = dt.date(2026, 11, 23), dt.date(2026, 11, 24), dt.date(2026, 11, 25)
DAYS = {
    D1: [("gpt-4o-2024-08-06", 10, 1000, 200, 300), ("gpt-4o-mini-2024-07-18", 5, 500, 0, 100)],
    D2: [("gpt-4o-2024-08-06", 3, 300, 0, 90)],
    D3: [("gpt-4o-2024-08-06", 1, 10, 0, 1)],
}


class Sleeps(list[float]):
    """A stand-in for asyncio.sleep that only notes how long it was asked to wait."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def usage_api(fake: FakeUsageAPI, *, key: str | None = ADMIN_KEY, sleep: Sleeps | None = None) -> UsageAPI:
    return UsageAPI("http://usage.test/v1", key, transport=httpx.ASGITransport(app=fake.app),
                    backoff_seconds=0.5, sleep=Sleeps() if sleep is None else sleep)


@pytest.mark.anyio
async def test_every_page_is_read_and_a_429_on_the_way_is_retried() -> None:
    fake = FakeUsageAPI(DAYS, throttle={"p1"})
    rows = await usage_api(fake).daily_completions(D1, D3)
    assert rows == [DayFigures(D1, "gpt-4o-2024-08-06", Figures(10, 1000, 200, 300)),
                    DayFigures(D1, "gpt-4o-mini-2024-07-18", Figures(5, 500, 0, 100)),
                    DayFigures(D2, "gpt-4o-2024-08-06", Figures(3, 300, 0, 90)),
                    DayFigures(D3, "gpt-4o-2024-08-06", Figures(1, 10, 0, 1))]
    assert [page for _, page in fake.seen] == [None, "p1", "p1", "p2"]  # p1 throttled once, then asked again
    first = parse_qs(fake.seen[0][0])
    assert first == {"start_time": ["1795392000"], "end_time": ["1795651200"],  # 2026-11-23 to 2026-11-26, UTC
                     "bucket_width": ["1d"], "group_by": ["model"], "limit": ["3"]}


@pytest.mark.anyio
async def test_backoff_doubles_and_retry_after_is_honoured() -> None:
    sleeps = Sleeps()
    with pytest.raises(ProviderError) as caught:
        await usage_api(FakeUsageAPI(DAYS, status=503), sleep=sleeps).daily_completions(D1, D1)
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # five attempts in all, then it gives up
    assert caught.value.status == 502 and caught.value.code == "provider_unavailable"
    assert "still failed after 5 attempts (HTTP 503)" in caught.value.message
    sleeps.clear()
    await usage_api(FakeUsageAPI(DAYS, throttle={"p1"}), sleep=sleeps).daily_completions(D1, D2)
    assert sleeps == [0.0]  # the fake says Retry-After: 0


@pytest.mark.anyio
async def test_a_refused_key_is_a_clear_error_that_does_not_repeat_the_key() -> None:
    fake = FakeUsageAPI(DAYS, key="sk-admin-the-right-one")
    with pytest.raises(ProviderError) as caught:
        await usage_api(fake).daily_completions(D1, D1)
    assert caught.value.code == "provider_auth_failed" and caught.value.status == 502
    assert "refused OPENAI_ADMIN_KEY (HTTP 401)" in caught.value.message
    assert ADMIN_KEY not in str(caught.value) and len(fake.seen) == 1  # not retried


@pytest.mark.anyio
async def test_another_refusal_quotes_the_provider_without_the_key() -> None:
    async def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers["authorization"]
        return httpx.Response(400, json={"error": {"message": f"bad group_by; you sent {sent}"}})

    api = UsageAPI("http://usage.test/v1", ADMIN_KEY, transport=httpx.MockTransport(echo))
    with pytest.raises(ProviderError) as caught:
        await api.daily_completions(D1, D1)
    assert caught.value.message.endswith("answered HTTP 400: bad group_by; you sent Bearer [admin key]")


@pytest.mark.anyio
async def test_without_a_key_nothing_is_sent() -> None:
    fake = FakeUsageAPI(DAYS)
    with pytest.raises(ProviderError) as caught:
        await usage_api(fake, key=None).daily_completions(D1, D1)
    assert caught.value.status == 400 and "OPENAI_ADMIN_KEY is not set" in caught.value.message
    assert fake.seen == []


@pytest.mark.anyio
async def test_an_unreachable_api_fails_at_once() -> None:
    api = UsageAPI(f"http://127.0.0.1:{free_port()}/v1", ADMIN_KEY)
    with pytest.raises(ProviderError) as caught:
        await api.daily_completions(D1, D1)
    assert caught.value.code == "provider_unreachable" and "cannot reach the usage API" in caught.value.message


@pytest.mark.anyio
async def test_a_page_that_is_not_json_or_not_a_page_is_an_error() -> None:
    for body in (b"<html>", b'{"data": 3}'):
        api = UsageAPI("http://usage.test/v1", ADMIN_KEY,
                       transport=httpx.MockTransport(lambda _, body=body: httpx.Response(200, content=body)))
        with pytest.raises(ProviderError) as caught:
            await api.daily_completions(D1, D1)
        assert caught.value.code == "provider_bad_response"


def test_the_key_is_read_from_openai_admin_key_and_never_shown_in_a_repr() -> None:
    settings = Settings.load(environ={"OPENAI_ADMIN_KEY": f" {ADMIN_KEY}\n"})
    assert settings.openai_admin_key == ADMIN_KEY and settings.openai_api_base == "https://api.openai.com/v1"
    assert "OPENAI_ADMIN_KEY" not in str(settings.to_environ())  # workers read it from the environment they inherit
    assert ADMIN_KEY not in repr(settings) + repr(UsageAPI("http://usage.test/v1", ADMIN_KEY))


# The command line, against the fake served over real HTTP


@pytest.fixture
def usage_url() -> Iterator[tuple[str, FakeUsageAPI]]:
    fake = FakeUsageAPI(DAYS, throttle={"p1"})
    with serve_in_thread(fake.app) as base:
        yield f"{base}/v1", fake


def sync(url: str, database_url: str, *dates: str) -> int:
    return main(["sync-openai", "--start-date", dates[0], "--end-date", dates[1], "--api-base", url,
                 "--database-url", database_url])


def test_sync_openai_stores_the_figures_and_a_second_sync_replaces_them(
        usage_url: tuple[str, FakeUsageAPI], sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, fake = usage_url
    monkeypatch.setenv("OPENAI_ADMIN_KEY", ADMIN_KEY)
    assert sync(url, sqlite_url, "2026-11-23", "2026-11-24") == 0
    assert capsys.readouterr().out.strip() == (
        f"synced 2 day(s), 2026-11-23 to 2026-11-24, from {url}: 3 day x model row(s), 18 requests, "
        "1,800 input tokens (200 cached), 490 output tokens")
    fake.days[D2] = [("gpt-4o-2024-08-06", 4, 400, 0, 100)]  # the provider's figures for a day changed
    assert sync(url, sqlite_url, "2026-11-24", "2026-11-24") == 0
    engine = engine_from_url(sqlite_url)
    rows = ProviderStore(engine).provider_daily("openai", D1, D3)
    engine.dispose()
    assert [(row.day, row.model, row.figures.requests) for row in rows] == [
        (D1, "gpt-4o-2024-08-06", 10), (D1, "gpt-4o-mini-2024-07-18", 5), (D2, "gpt-4o-2024-08-06", 4)]


def test_the_admin_key_is_never_logged_printed_or_stored(
        usage_url: tuple[str, FakeUsageAPI], tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    url, fake = usage_url
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_ADMIN_KEY", ADMIN_KEY)
    assert sync(url, sqlite_url, "2026-11-23", "2026-11-25") == 0
    fake.key = "sk-admin-another"  # now refused: the fake's error message repeats the key we sent
    assert sync(url, sqlite_url, "2026-11-23", "2026-11-25") == 1
    printed = capsys.readouterr()
    assert "retrying in 0.0 s" in caplog.text and "refused OPENAI_ADMIN_KEY" in printed.err
    assert ADMIN_KEY not in caplog.text + printed.out + printed.err
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("usage.db*"))  # with the WAL
    assert b"gpt-4o-mini-2024-07-18" in stored and ADMIN_KEY.encode() not in stored


def test_sync_openai_explains_what_went_wrong(usage_url: tuple[str, FakeUsageAPI], sqlite_url: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    url, fake = usage_url
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    assert sync(url, sqlite_url, "2026-11-23", "2026-11-24") == 1
    assert "OPENAI_ADMIN_KEY is not set" in capsys.readouterr().err and fake.seen == []
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-wrong")
    assert sync(url, sqlite_url, "2026-11-23", "2026-11-24") == 1
    assert "refused OPENAI_ADMIN_KEY (HTTP 401)" in capsys.readouterr().err
    assert sync(f"http://127.0.0.1:{free_port()}/v1", sqlite_url, "2026-11-23", "2026-11-24") == 1
    assert "cannot reach the usage API" in capsys.readouterr().err
    assert sync(url, sqlite_url, "2026-11-24", "2026-11-23") == 2
    assert "--end-date (2026-11-23) must not be before --start-date" in capsys.readouterr().err
    assert sync(url, f"sqlite:///{tmp_path / 'empty.db'}", "2026-11-23", "2026-11-24") == 1
    assert "run `tokenmeter-proxy migrate` first" in capsys.readouterr().err


def test_the_api_base_defaults_to_the_variable_then_to_openai(usage_url: tuple[str, FakeUsageAPI], sqlite_url: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    url, fake = usage_url
    monkeypatch.setenv("OPENAI_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("TOKENMETER_OPENAI_API_BASE", url)
    assert main(["sync-openai", "--start-date", "2026-11-23", "--end-date", "2026-11-23",
                 "--database-url", sqlite_url]) == 0
    assert f"from {url}:" in capsys.readouterr().out and len(fake.seen) == 1
    monkeypatch.setenv("TOKENMETER_OPENAI_API_BASE", "ftp://nope")
    assert main(["sync-openai", "--start-date", "2026-11-23", "--end-date", "2026-11-23"]) == 2
    assert "TOKENMETER_OPENAI_API_BASE must be an http(s) URL" in capsys.readouterr().err
