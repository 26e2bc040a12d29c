"""Provider figures stored per day and model, replaced day by day; metered figures summed the
same way. On SQLite and on PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest

from test_storage import NOW, record
from tokenmeter_proxy.reconciliation import DayFigures, Figures
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.provider_store import ProviderStore
from tokenmeter_proxy.storage.repository import Repository

D1, D2, D3 = dt.date(2026, 11, 23), dt.date(2026, 11, 24), dt.date(2026, 11, 25)


@pytest.fixture
def store(database_url: str) -> Iterator[ProviderStore]:
    engine = engine_from_url(database_url)
    yield ProviderStore(engine)
    engine.dispose()


def test_syncing_days_again_replaces_them_and_leaves_other_days_alone(store: ProviderStore) -> None:
    store.replace_days("openai", D1, D2, [DayFigures(D1, "gpt-4o", Figures(1, 10, 0, 1)),
                                          DayFigures(D2, "gpt-4o", Figures(2, 20, 0, 2)),
                                          DayFigures(D2, "o3", Figures(3, 30, 0, 3))], now=NOW)
    stored = store.replace_days("openai", D2, D3, [DayFigures(D2, "gpt-4o", Figures(5, 50, 5, 5)),
                                                   DayFigures(D2, "gpt-4o", Figures(1, 10, 0, 1)),  # summed
                                                   DayFigures(D3, "gpt-4o", Figures(7, 70, 0, 7))], now=NOW)
    assert stored == 2
    assert store.provider_daily("openai", D1, D3) == [
        DayFigures(D1, "gpt-4o", Figures(1, 10, 0, 1)),  # outside the second sync: kept
        DayFigures(D2, "gpt-4o", Figures(6, 60, 5, 6)),  # replaced, not added to; o3 gone from that day
        DayFigures(D3, "gpt-4o", Figures(7, 70, 0, 7)),
    ]
    assert store.provider_daily("anthropic", D1, D3) == []


def test_metered_figures_are_every_record_but_demo_ones_per_day_and_model(store: ProviderStore) -> None:
    Repository(store.engine).insert_records([
        record(1, hours_ago=48), record(2, hours_ago=47), record(3, hours_ago=24, model="gpt-4o-2024-08-06"),
        dataclasses.replace(record(4, hours_ago=24), usage_source="demo"),
        record(5, hours_ago=72, model=None),  # 2026-11-22 12:00: before the range
        record(6, hours_ago=0),  # 2026-11-25: after it
    ])
    rows = sorted(store.metered_daily(D1, D2), key=lambda row: (row.day, row.model or ""))
    assert rows == [DayFigures(D1, "gpt-4o", Figures(2, 200, 10, 20)),
                    DayFigures(D2, "gpt-4o-2024-08-06", Figures(1, 100, 5, 10))]
