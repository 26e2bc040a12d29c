"""The analytics side: reported usage, CSV export, erasure, the short-lived cache, and the data
commands (demo-data, prune, reprice, pricing diff and import)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from conftest import admin_headers, proxy_client
from test_storage import NOW, record
from tokenmeter_proxy.admin_commands import _pricer
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.catalog import Catalog
from tokenmeter_proxy.cli import main
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.pricing import parse_pricing
from tokenmeter_proxy.reports import RECORD_FIELDS
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.maintenance import reprice
from tokenmeter_proxy.storage.repository import Filters, Repository

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    engine = engine_from_url(settings.database_url)
    Repository(engine).insert_records([
        record(1, hours_ago=1, session="s-1", user="alice", cost="0.5"),
        record(2, hours_ago=2, session="s-1", user="bob", cost="0.25"),
        record(3, hours_ago=30, session="s-2", user="alice", cost="1"),
    ])
    engine.dispose()
    app = create_app(Settings(**{**settings.__dict__, "upstream": "http://127.0.0.1:9/v1"}), clock=Clock())
    async with proxy_client(app) as client:
        client.headers.update(admin_headers())
        client.app = app  # type: ignore[attr-defined]
        yield client


async def test_reported_usage_is_recorded_priced_and_counted(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/usage/log", json={"session_id": "s-ext", "user_id": "carol", "model": "gpt-4o",
                                                       "input_tokens": 1000, "output_tokens": 100,
                                                       "cached_input_tokens": 200})
    assert response.status_code == 201
    logged = response.json()
    assert set(logged) == set(RECORD_FIELDS)
    assert (logged["usage_source"], logged["endpoint"], logged["status_code"], logged["api_key_id"]) == (
        "reported", "reported", None, None)
    assert logged["cost"] == 0.00325 and logged["price_source"] == "pricing_file"
    stats = (await api.get("/api/usage/stats", params={"session_id": "s-ext"})).json()
    assert stats["totals"]["requests"] == 1 and stats["totals"]["cached_input_tokens"] == 200


async def test_reported_usage_names_its_provider_and_is_priced_as_that_providers(api: httpx.AsyncClient) -> None:
    body = {"session_id": "s-ext", "model": "claude-like", "input_tokens": 1000, "output_tokens": 100}
    default = (await api.post("/api/usage/log", json=body)).json()
    assert (default["provider"], default["route"], default["price_source"]) == ("openai", None, "pricing_file")
    other = (await api.post("/api/usage/log", json={**body, "provider": "some-lab"})).json()
    assert (other["provider"], other["cost"]) == ("some-lab", None)  # top-level prices are OpenAI's and Azure's
    refused = await api.post("/api/usage/log", json={**body, "provider": "Some Lab"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "provider"


async def test_tags_in_records_export_and_stats(api: httpx.AsyncClient) -> None:
    for session, tags, tokens in (("s-t1", {"feature": "summarize", "team": "search"}, 1000),
                                  ("s-t2", {"feature": "translate", "team": "search"}, 2000), ("s-t3", None, 10)):
        logged = await api.post("/api/usage/log", json={"session_id": session, "model": "gpt-4o", "tags": tags,
                                                        "input_tokens": tokens, "output_tokens": 0})
        assert logged.status_code == 201 and logged.json()["tags"] == (tags or {})
    stats = (await api.get("/api/usage/stats", params={"period": "24h", "tag": "team:search"})).json()
    assert (stats["totals"]["requests"], stats["totals"]["input_tokens"]) == (2, 3000)
    grouped = (await api.get("/api/usage/stats", params={"period": "24h", "by_tag": "feature"})).json()
    by = {row["value"]: row["requests"] for row in grouped["by_tag"]}
    assert by == {"summarize": 1, "translate": 1, None: grouped["totals"]["requests"] - 2}
    for params in ({"tag": "team"}, {"by_tag": "Feature"}):
        refused = await api.get("/api/usage/stats", params=params)
        assert refused.status_code == 400 and refused.json()["error"]["param"] in params
    rows = list(csv.DictReader(io.StringIO((await api.get("/api/usage/export", params={"period": "24h"})).text)))
    tagged = {row["session_id"]: row["tags"] for row in rows}
    assert tagged["s-t1"] == '{"feature":"summarize","team":"search"}' and tagged["s-t3"] == "{}"
    bad = await api.post("/api/usage/log", json={"session_id": "s", "model": "m", "input_tokens": 1,
                                                 "output_tokens": 1, "tags": {"Team": "x"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tags"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}, "session_id"),
    ({"session_id": "s", "input_tokens": 1, "output_tokens": 1}, "model"),
    ({"session_id": "s", "model": "m", "input_tokens": -1, "output_tokens": 1}, "input_tokens"),
    ({"session_id": "s", "model": "m", "input_tokens": 1, "output_tokens": "2"}, "output_tokens"),
    ({"session_id": "s", "model": "m", "input_tokens": 1, "output_tokens": 1, "cached_input_tokens": 5},
     "cached_input_tokens"),
    ({"session_id": "s", "model": "m", "input_tokens": 1, "output_tokens": 1, "user_id": 7}, "user_id"),
])
async def test_bad_reported_usage_is_refused_by_field(api: httpx.AsyncClient, body: dict[str, object],
                                                      param: str) -> None:
    response = await api.post("/api/usage/log", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


async def test_the_export_is_csv_with_every_record_of_the_period(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/usage/export", params={"period": "7d", "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == list(RECORD_FIELDS) and len(rows) == 3
    assert rows[0]["cost"] == "0.5" and rows[0]["streamed"] == "false" and rows[0]["created_at"].endswith("Z")
    assert (await api.get("/api/usage/export", params={"period": "24h"})).text.count("\n") == 3  # header + 2
    refused = await api.get("/api/usage/export", params={"format": "xml"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "format"


async def test_the_export_pages_through_large_periods(api: httpx.AsyncClient, settings: Settings,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tokenmeter_proxy.api.EXPORT_PAGE", 2)
    rows = list(csv.reader(io.StringIO((await api.get("/api/usage/export")).text)))
    assert len(rows) == 4 and len({row[0] for row in rows[1:]}) == 3


async def test_erasing_a_user_removes_them_and_nothing_else(api: httpx.AsyncClient) -> None:
    before = (await api.get("/api/usage/stats")).json()["totals"]
    response = await api.delete("/api/usage/users/alice")
    assert response.status_code == 200 and response.json() == {"deleted": 2}
    after = (await api.get("/api/usage/stats")).json()["totals"]
    assert after["requests"] == before["requests"] - 2 and after["cost"] == 0.25
    assert (await api.get("/api/usage/records", params={"user_id": "alice"})).json()["records"] == []
    assert (await api.get("/api/usage/stats", params={"user_id": "alice", "period": "90d"})).json()[
        "totals"]["requests"] == 0
    sessions = {s["session_id"]: s["requests"] for s in (await api.get("/api/usage/sessions")).json()["sessions"]}
    assert sessions == {"s-1": 1}
    assert (await api.delete("/api/usage/users/nobody")).json() == {"deleted": 0}


async def test_stats_are_served_from_the_cache_until_a_record_is_stored(api: httpx.AsyncClient,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = Repository.window

    def counted(self: Repository, filters: Filters) -> object:
        calls.append(1)
        return original(self, filters)

    monkeypatch.setattr(Repository, "window", counted)
    for _ in range(5):
        await api.get("/api/usage/stats")
    assert len(calls) == 1
    # a proxied request (its upstream is unreachable here: recorded as a 502) is stored by the writer
    assert (await api.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []})).status_code == 502
    await api.app.writer.drain()  # type: ignore[attr-defined]
    assert (await api.get("/api/usage/stats")).json()["totals"]["requests"] == 4 and len(calls) == 2


def test_demo_data_prune_and_reprice_from_the_command_line(database_url: str, pricing_file: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOKENMETER_PRICING", str(pricing_file))
    assert main(["demo-data", "--records", "3000", "--days", "20", "--database-url", database_url, "--seed", "3"]) == 0
    engine = engine_from_url(database_url)
    repository = Repository(engine)
    everything = repository.totals(Filters())
    assert everything.requests == 3000
    assert {record.usage_source for record in repository.records(Filters(), limit=50)} == {"demo"}
    window = sum((figures for _, _, _, figures in repository.window(Filters(since=dt.datetime(2000, 1, 1,
                                                                                           tzinfo=dt.UTC)))),
                 start=type(everything)())
    assert window == everything  # the rollups were rebuilt from the bulk load

    pricing_file.write_text(pricing_file.read_text().replace("gpt-4o-mini: {input: 0.15", "gpt-4o-mini: {input: 0.30"))
    assert main(["reprice", "--since", "2000-01-01", "--dry-run", "--database-url", database_url]) == 0
    assert "would reprice 3,000 records" in capsys.readouterr().out
    assert repository.totals(Filters()).cost == everything.cost
    assert main(["reprice", "--since", "2000-01-01", "--database-url", database_url]) == 0
    assert "gpt-4o-mini" in capsys.readouterr().out
    repriced = repository.totals(Filters())
    assert repriced.cost > everything.cost and repriced.requests == 3000

    assert main(["prune", "--older-than", "10d", "--database-url", database_url]) == 0
    assert "deleted" in capsys.readouterr().out
    left = repository.totals(Filters())
    assert 0 < left.requests < 3000
    assert repository.totals(Filters(until=dt.datetime.now(dt.UTC) - dt.timedelta(days=10))).requests == 0
    engine.dispose()


def test_pricing_diff_and_import(pricing_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pricing", "diff", str(pricing_file)]) == 0
    out = capsys.readouterr().out
    assert "gpt-4o-mini" in out and "claude-like" in out and "not in the catalog" in out
    assert main(["pricing", "import", "gpt-4.1-nano", "no-such-model-xyz", "--file", str(pricing_file)]) == 0
    text = pricing_file.read_text()
    assert "gpt-4.1-nano: {input: 0.1, cached_input: 0.025, output: 0.4}" in text
    assert "skipped no-such-model-xyz: not in the catalog" in capsys.readouterr().err


def test_prices_never_change_history_silently(sqlite_url: str) -> None:
    engine = engine_from_url(sqlite_url)
    Repository(engine).insert_records([record(1, cost="0.5")])
    [stored] = Repository(engine).records(Filters(), limit=1)
    engine.dispose()
    assert stored.cost == Decimal("0.5") and stored.price_version == "v1"


def test_reprice_keeps_what_an_upstream_charged_unless_the_file_now_prices_the_model(sqlite_url: str,
                                                                                      pricing_file: Path) -> None:
    engine = engine_from_url(sqlite_url)
    repository = Repository(engine)
    charged = [replace(record(n, model=model, cost="0.0042", provider="openrouter"), price_source="upstream")
               for n, model in ((1, "deepseek/deepseek-chat"), (2, "openai/gpt-4o-mini"))]
    repository.insert_records([*charged, record(3, model="claude-like", cost="9", provider="anthropic")])
    table = parse_pricing(pricing_file.read_text() + "providers:\n  openrouter:\n    models:\n"
                          "      openai/gpt-4o-mini: {input: 0.15, output: 0.60}\n")
    reprice(engine, repository.rollups, NOW - dt.timedelta(days=1), _pricer(table, Catalog()), version=table.version)
    stored = {item.id[-1]: (item.cost, item.price_source) for item in repository.records(Filters(), limit=10)}
    engine.dispose()
    assert stored["1"] == (Decimal("0.0042"), "upstream")  # no price of its own: what OpenRouter charged stays
    assert stored["2"] == (Decimal("0.000021"), "pricing_file")  # 100 x 0.15 + 10 x 0.60, per million
    assert stored["3"][1] != "pricing_file"  # claude-like is priced top-level, for openai and azure only


def test_pricing_import_adds_inside_the_models_block_whatever_follows(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text("currency: USD\nmodels:\n    gpt-4o: {input: 2.5}\n\nexchange_rates:\n  EUR: 0.9\n")
    assert main(["pricing", "import", "gpt-4.1-nano", "--file", str(path)]) == 0
    text = path.read_text()
    assert text.index("gpt-4.1-nano") < text.index("exchange_rates") and "    gpt-4.1-nano:" in text
    assert main(["pricing", "check", str(path)]) == 0


async def test_the_export_defuses_spreadsheet_formulas(api: httpx.AsyncClient) -> None:
    await api.post("/api/usage/log", json={"session_id": "=HYPERLINK(\"http://evil\")", "model": "gpt-4o",
                                           "input_tokens": 1, "output_tokens": 1})
    rows = list(csv.DictReader(io.StringIO((await api.get("/api/usage/export")).text)))
    assert {row["session_id"] for row in rows} >= {"'=HYPERLINK(\"http://evil\")"}
