"""The webhook outbox on SQLite and PostgreSQL: once-only inserts, claims, leases, settling, and
on PostgreSQL a claim that skips the rows another sender holds instead of waiting for them."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tokenmeter_proxy.alerts import Alert, new_event, stored_key
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.outbox import OutboxStore, outbox_table

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
URLS = ["http://a.test/hook", "http://b.test/hook"]
LEASE = dt.timedelta(seconds=60)


@pytest.fixture
def outbox(database_url: str) -> Iterator[OutboxStore]:
    engine = engine_from_url(database_url)
    yield OutboxStore(engine)
    engine.dispose()


def add(outbox: OutboxStore, key: str | None = "k-1", *, now: dt.datetime = NOW, urls: list[str] = URLS) -> str:
    data = {"model": "m", "provider": "openai"}
    alert = Alert("model.unpriced", data, key=key)
    event = new_event(alert.type, data, now=now)
    outbox.add(event, key=stored_key(alert, event.id), urls=urls)
    return event.id


def test_an_event_is_stored_once_per_url_however_often_it_is_raised(outbox: OutboxStore) -> None:
    first = add(outbox)
    add(outbox)  # the same key, raised again (another request, another process): nothing new
    add(outbox, key=None)  # no key: an event of its own
    rows = outbox.recent(50)
    assert len(rows) == 4 and {row["url"] for row in rows} == set(URLS)
    assert [row["id"] for row in rows if row["id"] == first] == [first, first]  # one webhook-id on every URL
    assert {row["status"] for row in rows} == {"pending"} and {row["attempts"] for row in rows} == {0}


def test_claim_lease_settle_and_retry(outbox: OutboxStore) -> None:
    webhook_id = add(outbox)
    [claimed] = outbox.claim(URLS[0], now=NOW, limit=5, lease_until=NOW + LEASE)
    assert (claimed.webhook_id, claimed.attempt, claimed.created_at) == (webhook_id, 1, NOW)
    assert b'"type":"model.unpriced"' in claimed.body
    assert outbox.claim(URLS[0], now=NOW, limit=5, lease_until=NOW + LEASE) == []  # held by its sender
    assert outbox.settle(claimed, status_code=503, now=NOW) == "pending"
    assert outbox.claim(URLS[0], now=NOW + dt.timedelta(seconds=4), limit=5, lease_until=NOW + LEASE) == []
    [again] = outbox.claim(URLS[0], now=NOW + dt.timedelta(seconds=5), limit=5, lease_until=NOW + LEASE)
    assert again.webhook_id == webhook_id and again.attempt == 2 and again.body == claimed.body
    assert outbox.settle(again, status_code=204, now=NOW + dt.timedelta(seconds=6)) == "delivered"
    row = next(row for row in outbox.recent(10) if row["url"] == URLS[0])
    assert row == {"id": webhook_id, "type": "model.unpriced", "url": URLS[0], "status": "delivered", "attempts": 2,
                   "last_status_code": 204, "created_at": NOW, "delivered_at": NOW + dt.timedelta(seconds=6)}
    # a sender that died holding a claim: another takes it once the lease lapses
    [held] = outbox.claim(URLS[1], now=NOW, limit=5, lease_until=NOW + LEASE)
    [taken] = outbox.claim(URLS[1], now=NOW + LEASE, limit=5, lease_until=NOW + 2 * LEASE)
    assert taken.row_id == held.row_id and taken.attempt == 2


def test_a_day_of_failures_fails_the_delivery(outbox: OutboxStore) -> None:
    add(outbox, urls=URLS[:1])
    late = NOW + dt.timedelta(hours=24)
    [claimed] = outbox.claim(URLS[0], now=late, limit=1, lease_until=late + LEASE)
    assert outbox.settle(claimed, status_code=None, now=late) == "failed"
    [row] = outbox.recent(1)
    assert row["status"] == "failed" and row["last_status_code"] is None and row["delivered_at"] is None
    add(outbox, key="to-a-url-no-one-sends-to", urls=["http://gone.test/"])
    assert outbox.expire(now=late + LEASE / 2, grace=LEASE) == 0  # its sender may still be at it
    assert outbox.expire(now=late + LEASE * 2, grace=LEASE) == 1
    assert {row["status"] for row in outbox.recent(10)} == {"failed"}


def test_recent_lists_newest_first(outbox: OutboxStore) -> None:
    ids = [add(outbox, key=f"k-{n}", now=NOW + dt.timedelta(minutes=n), urls=URLS[:1]) for n in range(3)]
    assert [row["id"] for row in outbox.recent(2)] == ids[::-1][:2]


def test_postgres_claims_skip_rows_another_sender_holds(postgres_url: str) -> None:
    engine = engine_from_url(postgres_url)
    outbox = OutboxStore(engine)
    try:
        for n in range(2):
            add(outbox, key=f"k-{n}", urls=URLS[:1])
        locked, release = threading.Event(), threading.Event()

        def hold_first_row() -> None:  # another replica, mid-claim
            with engine.begin() as connection:
                first = connection.execute(select(outbox_table.c.id).order_by(outbox_table.c.id).limit(1)
                                           .with_for_update()).scalar()
                assert first is not None
                locked.set()
                release.wait(10)

        holder = threading.Thread(target=hold_first_row)
        holder.start()
        assert locked.wait(10)
        claimed = outbox.claim(URLS[0], now=NOW, limit=5, lease_until=NOW + LEASE)  # does not wait for the lock
        release.set()
        holder.join(10)
        assert len(claimed) == 1
        [rest] = outbox.claim(URLS[0], now=NOW, limit=5, lease_until=NOW + LEASE)
        assert rest.row_id != claimed[0].row_id
    finally:
        engine.dispose()
