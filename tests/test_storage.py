"""The repository and migrations, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, insert, select, table

from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.migrate import current_revision, downgrade, head_revision, upgrade
from tokenmeter_proxy.storage.record_rows import record_values, records_table
from tokenmeter_proxy.storage.repository import Cursor, Filters, Repository, Totals
from tokenmeter_proxy.storage.rollups import spend_table
from tokenmeter_proxy.storage.tables import SQLModel, cost_from_e10, cost_to_e10
from tokenmeter_proxy.types import Usage, UsageRecord

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def record(n: int, *, hours_ago: float = 0, session: str | None = "s-1", user: str | None = "u-1",
           model: str | None = "gpt-4o", cost: str | None = "0.001", input_tokens: int = 100,
           provider: str = "openai", tags: dict[str, str] | None = None) -> UsageRecord:
    return UsageRecord(
        id=f"{n:024x}", created_at=NOW - dt.timedelta(hours=hours_ago), session_id=session, user_id=user,
        api_key_id="0123456789abcdef", endpoint="chat/completions", model=model,
        usage=Usage(input_tokens=input_tokens, output_tokens=10, cached_input_tokens=5, reasoning_tokens=2),
        cost=None if cost is None else Decimal(cost), currency="USD", price_version="v1", usage_source="upstream",
        status_code=200, streamed=False, latency_ms=12, provider=provider, route=provider, tags=tags or {},
    )


@pytest.fixture
def repository(database_url: str) -> Iterator[Repository]:
    engine = engine_from_url(database_url)
    yield Repository(engine)
    engine.dispose()


def test_migrations_are_idempotent_and_match_the_tables(database_url: str) -> None:
    engine = engine_from_url(database_url)
    try:
        assert upgrade(engine) == (head_revision(), head_revision())
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_every_migration_can_be_undone_and_done_again(database_url: str) -> None:
    engine = engine_from_url(database_url)
    try:
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert upgrade(engine) == (None, head_revision())
    finally:
        engine.dispose()


def test_a_record_comes_back_exactly_as_stored(repository: Repository) -> None:
    stored = record(1, cost="0.0072500001")
    repository.insert_records([stored])
    [loaded] = repository.records(Filters(), limit=10)
    assert loaded == stored


def test_totals_sum_exactly_and_count_unpriced_requests(repository: Repository) -> None:
    repository.insert_records([record(1, cost="0.1"), record(2, cost="0.2"), record(3, cost=None)])
    totals = repository.totals(Filters())
    assert totals.cost == Decimal("0.3")  # never 0.30000000000000004
    assert (totals.requests, totals.input_tokens, totals.cached_input_tokens, totals.output_tokens) == (3, 300, 15, 30)
    assert totals.unpriced_requests == 1


def test_filters_narrow_by_time_session_user_and_model(repository: Repository) -> None:
    repository.insert_records([
        record(1, hours_ago=30), record(2, session="s-2"), record(3, user="u-2"), record(4, model="gpt-4o-mini"),
    ])
    assert repository.totals(Filters(since=NOW - dt.timedelta(hours=24))).requests == 3
    assert repository.totals(Filters(until=NOW - dt.timedelta(hours=24))).requests == 1
    assert repository.totals(Filters(session_id="s-2")).requests == 1
    assert repository.totals(Filters(user_id="u-2")).requests == 1
    assert repository.totals(Filters(model="gpt-4o-mini")).requests == 1


def test_groups_by_day_model_session_and_user(repository: Repository) -> None:
    repository.insert_records([
        record(1, hours_ago=36, session="old"), record(2, session="new", cost="0.5"),
        record(3, session="new", model="gpt-4o-mini"), record(4, session=None, user=None),
    ])
    days = repository.grouped("day", Filters())
    assert [(group.key, group.totals.requests) for group in days] == [("2026-11-24", 1), ("2026-11-25", 3)]
    models = repository.grouped("model", Filters())
    assert [group.key for group in models] == ["gpt-4o", "gpt-4o-mini"]  # biggest cost first
    sessions = repository.grouped("session", Filters())
    assert [(group.key, group.totals.requests) for group in sessions] == [("new", 2), ("old", 1)]
    assert sessions[0].first_seen == NOW and sessions[0].last_seen == NOW
    total, page = repository.sessions(limit=10, offset=0)
    assert total == 2 and [group.key for group in page] == ["new", "old"]
    assert [group.key for group in repository.grouped("user", Filters())] == ["u-1"]


def test_records_page_newest_first_from_a_cursor(repository: Repository) -> None:
    repository.insert_records([record(n, hours_ago=n % 3) for n in range(10)])
    seen: list[str] = []
    cursor = None
    while True:
        page = repository.records(Filters(), limit=4, after=cursor)
        seen += [item.id for item in page]
        if len(page) < 4:
            break
        cursor = Cursor(page[-1].created_at, page[-1].id)
    assert sorted(seen) == sorted(f"{n:024x}" for n in range(10)) and len(set(seen)) == 10
    times = [item.created_at for item in repository.records(Filters(), limit=10)]
    assert times == sorted(times, reverse=True)


def test_costs_are_stored_as_exact_integers() -> None:
    assert cost_to_e10(Decimal("0.00725")) == 72_500_000
    assert cost_from_e10(72_500_000) == Decimal("0.00725")
    assert cost_to_e10(None) is None and cost_from_e10(None) is None


def test_storing_records_keeps_the_daily_spend_of_every_budget_subject(repository: Repository) -> None:
    repository.insert_records([record(1, cost="0.25"), record(2, cost="0.5", user="u-2"),
                               record(3, hours_ago=24, cost=None)])
    with repository.engine.connect() as connection:
        rows = connection.execute(select(spend_table).order_by("day", "scope", "subject")).all()
    today, yesterday = NOW.date(), (NOW - dt.timedelta(days=1)).date()
    assert [(row.day, row.scope, row.subject, row.cost_e10, row.tokens) for row in rows] == [
        (yesterday, "global", "*", 0, 110), (yesterday, "key", "0123456789abcdef", 0, 110),
        (yesterday, "session", "s-1", 0, 110), (yesterday, "user", "u-1", 0, 110),
        (today, "global", "*", 7_500_000_000, 220), (today, "key", "0123456789abcdef", 7_500_000_000, 220),
        (today, "session", "s-1", 7_500_000_000, 220), (today, "user", "u-1", 2_500_000_000, 110),
        (today, "user", "u-2", 5_000_000_000, 110),
    ]


def test_the_spend_migration_counts_records_stored_before_it(tmp_path: Path) -> None:
    engine = engine_from_url(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0002")
        with engine.begin() as connection:
            old_columns = {k: v for k, v in record_values(record(1, cost="0.25")).items()
                           if k not in ("price_source", "provider", "route", "tags")}
            as_then = table("usage_records", *(column(name) for name in old_columns))
            connection.execute(insert(as_then), [old_columns])  # the record as revision 0002 stored it
        upgrade(engine)
        with engine.connect() as connection:
            spent = connection.execute(select(spend_table.c.cost_e10).where(spend_table.c.scope == "session")).all()
    finally:
        engine.dispose()
    assert spent == [(2_500_000_000,)]


def test_rollups_give_the_same_figures_as_the_records(repository: Repository) -> None:
    batch = [record(n, hours_ago=n * 5, session=f"s-{n % 3}", user=f"u-{n % 2}",
                    model=("gpt-4o", "gpt-4o-mini", None)[n % 3], cost=None if n % 4 == 0 else f"0.{n:03d}",
                    input_tokens=100 + n, provider=("openai", "azure", "anthropic", "openai", "google")[n % 5])
             for n in range(40)]
    repository.insert_records(batch[:25])
    repository.insert_records(batch[25:])
    for filters in (Filters(since=NOW - dt.timedelta(days=9)), Filters(since=NOW - dt.timedelta(hours=30)),
                    Filters(since=NOW - dt.timedelta(days=9), session_id="s-1"),
                    Filters(since=NOW - dt.timedelta(days=9), user_id="u-0", model="gpt-4o"),
                    Filters(since=NOW - dt.timedelta(days=9), session_id="s-2", user_id="u-1"),
                    Filters(since=NOW - dt.timedelta(days=9), provider="azure"),
                    Filters(since=NOW - dt.timedelta(hours=30), provider="openai", session_id="s-0"),
                    Filters(since=NOW - dt.timedelta(days=9), provider="google", user_id="u-1")):
        from_rollups = Totals()
        for _, provider, _, figures in repository.window(filters):
            assert filters.provider in (None, provider)
            from_rollups += figures
        assert from_rollups == repository.totals(filters), filters
    by_provider = {group.key: group.totals.requests for group in repository.grouped("provider", Filters())}
    assert by_provider == {"openai": 16, "azure": 8, "anthropic": 8, "google": 8}
    top_models = dict(repository.top("model", NOW - dt.timedelta(days=9), limit=10, provider="anthropic"))
    assert sum(totals.requests for totals in top_models.values()) == 8


def test_session_totals_come_from_the_sessions_rollup(repository: Repository) -> None:
    repository.insert_records([record(1, hours_ago=3, session="s-x"), record(2, hours_ago=1, session="s-x")])
    repository.insert_records([record(3, hours_ago=2, session="s-x")])
    [group] = repository.sessions(limit=5, offset=0)[1]
    assert group.first_seen == NOW - dt.timedelta(hours=3) and group.last_seen == NOW - dt.timedelta(hours=1)
    totals, records = repository.session("s-x", limit=10)
    assert totals == repository.totals(Filters(session_id="s-x")) and len(records) == 3
    assert repository.session("nobody", limit=10) == (None, [])


def test_rebuilding_a_day_recomputes_it_from_the_records(repository: Repository) -> None:
    repository.insert_records([record(1, session="s-1"), record(2, session="s-1", user="u-2")])
    with repository.engine.begin() as connection:
        connection.execute(records_table.delete().where(records_table.c.id == f"{2:024x}"))
        repository.rollups.rebuild(connection, [NOW.date()], ["s-1"])
    window = repository.window(Filters(since=NOW - dt.timedelta(hours=1)))
    assert sum(figures.requests for _, _, _, figures in window) == 1
    assert repository.session("s-1", limit=10)[0] == repository.totals(Filters(session_id="s-1"))


def test_the_provider_migration_keeps_every_figure_and_can_be_undone(database_url: str) -> None:
    """Before 0010 every record came through /v1: it becomes OpenAI's, and its rollups too."""
    engine = engine_from_url(database_url)
    try:
        downgrade(engine, "0009")
        old = {k: v for k, v in record_values(record(1, cost="0.25")).items()
               if k not in ("provider", "route", "tags")}
        reported = {**old, "id": f"{2:024x}", "usage_source": "reported"}
        with engine.begin() as connection:
            connection.execute(insert(table("usage_records", *(column(name) for name in old))), [old, reported])
        upgrade(engine)
        repository = Repository(engine)
        stored = {item.id: (item.provider, item.route) for item in repository.records(Filters(), limit=10)}
        assert stored == {f"{1:024x}": ("openai", "openai"), f"{2:024x}": ("openai", None)}
        repository.insert_records([record(3, provider="anthropic", cost="0.5"), record(4, cost="0.25")])
        downgrade(engine, "0009")  # Anthropic's figures fold into the only key the old rollups know
        with engine.connect() as connection:
            folded = connection.execute(select(column("model"), column("requests"), column("cost_e10")).select_from(
                table("rollup_daily_model"))).all()
        upgrade(engine)
    finally:
        engine.dispose()
    assert folded == [("gpt-4o", 2, 7_500_000_000)]


def test_tag_rollups_give_the_same_figures_as_the_records(repository: Repository) -> None:
    features = ({"feature": "summarize", "team": "search"}, {"feature": "translate"}, {}, {"team": "ads"})
    batch = [record(n, hours_ago=n * 5, session=f"s-{n % 3}", cost=f"0.{n:03d}", input_tokens=100 + n,
                    provider=("openai", "anthropic")[n % 2], tags=features[n % 4]) for n in range(40)]
    repository.insert_records(batch[:25])
    repository.insert_records(batch[25:])
    for filters in (Filters(since=NOW - dt.timedelta(days=9), tag=("team", "search")),
                    Filters(since=NOW - dt.timedelta(hours=30), tag=("feature", "translate")),
                    Filters(since=NOW - dt.timedelta(days=9), tag=("team", "search"), provider="openai"),
                    Filters(since=NOW - dt.timedelta(days=9), tag=("team", "ads"), session_id="s-1")):
        from_rollups = Totals()
        for _, _, _, figures in repository.window(filters):
            from_rollups += figures
        assert from_rollups == repository.totals(filters) and from_rollups.requests > 0, filters
    since = NOW - dt.timedelta(days=9)
    by_feature = dict(repository.by_tag("feature", Filters(since=since)))
    assert {value: totals.requests for value, totals in by_feature.items()} == {"summarize": 10, "translate": 10}
    assert by_feature["summarize"] == repository.totals(Filters(since=since, tag=("feature", "summarize")))
    assert dict(repository.by_tag("team", Filters(since=since, session_id="s-0")))["ads"].requests == 4  # 3, 15, 27, 39
    stored = {item.id: item.tags for item in repository.records(Filters(tag=("team", "ads")), limit=50)}
    assert len(stored) == 10 and all(tags == {"team": "ads"} for tags in stored.values())


def test_a_tags_spend_counts_for_its_budgets_and_survives_a_rebuild(repository: Repository) -> None:
    repository.insert_records([record(1, cost="0.5", tags={"team": "search"}), record(2, cost="0.25")])
    query = select(spend_table.c.cost_e10).where(spend_table.c.scope == "tag", spend_table.c.subject == "team:search")
    with repository.engine.begin() as connection:
        before = connection.execute(query).all()
        repository.rollups.rebuild(connection, [NOW.date()], ["s-1"])
        after = connection.execute(query).all()
    assert before == after == [(5_000_000_000,)]
