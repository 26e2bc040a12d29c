"""The webhook outbox: alert events waiting for delivery, one row per event and URL.

An event is inserted with INSERT ... ON CONFLICT DO NOTHING on its key and URL, so the same
event raised by many requests or by several processes at once is stored, and sent, once. A
sender claims due rows by moving their next attempt past a lease (`FOR UPDATE SKIP LOCKED` on
PostgreSQL: two processes never claim the same attempt; SQLite serves one process), sends them
outside any transaction, then settles them: delivered, due again later, or failed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..alerts import GIVE_UP_AFTER, Event, next_attempt
from .tables import WebhookOutboxRow, naive_utc

outbox_table = WebhookOutboxRow.__table__  # type: ignore[attr-defined]
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class Claimed:
    """A delivery a sender holds until it settles it (or its lease lapses)."""

    row_id: int
    webhook_id: str
    url: str
    body: bytes
    attempt: int  # this attempt's number, from 1
    created_at: dt.datetime


class OutboxStore:
    """Every query about the outbox. Synchronous; callers on the event loop use a thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = postgresql if engine.dialect.name == "postgresql" else sqlite

    def add(self, event: Event, *, key: str, urls: list[str]) -> int:
        """Queue `event` for each URL unless an event with this key already is; returns the rows added."""
        created = naive_utc(event.created_at)
        body = event.body().decode()
        rows = [{"webhook_id": event.id, "event_key": key, "type": event.type, "url": url, "body": body,
                 "status": PENDING, "attempts": 0, "created_at": created, "next_attempt_at": created}
                for url in urls]
        if not rows:
            return 0
        statement = self._dialect.insert(outbox_table).values(rows).on_conflict_do_nothing(
            index_elements=["event_key", "url"])
        with self.engine.begin() as connection:
            return max(int(connection.execute(statement).rowcount), 0)

    def claim(self, url: str, *, now: dt.datetime, limit: int, lease_until: dt.datetime) -> list[Claimed]:
        """Take up to `limit` deliveries to `url` that are due, counting the attempt and holding
        them until `lease_until` (when another sender may take them, should this one die)."""
        table = outbox_table
        due = (select(table.c.id).where(table.c.status == PENDING, table.c.url == url,
                                        table.c.next_attempt_at <= naive_utc(now))
               .order_by(table.c.next_attempt_at).limit(limit).with_for_update(skip_locked=True))
        statement = (update(table).where(table.c.id.in_(due))
                     .values(attempts=table.c.attempts + 1, next_attempt_at=naive_utc(lease_until))
                     .returning(table.c.id, table.c.webhook_id, table.c.url, table.c.body, table.c.attempts,
                                table.c.created_at))
        with self.engine.begin() as connection:
            rows = connection.execute(statement).all()
        return [Claimed(row_id=row.id, webhook_id=row.webhook_id, url=row.url, body=row.body.encode(),
                        attempt=row.attempts, created_at=row.created_at.replace(tzinfo=dt.UTC))
                for row in sorted(rows, key=lambda row: row.id)]

    def settle(self, claimed: Claimed, *, status_code: int | None, now: dt.datetime) -> str:
        """Record an attempt's outcome (`status_code` None: no answer); returns the new status."""
        values: dict[str, Any] = {"last_status_code": status_code}
        if status_code is not None and 200 <= status_code < 300:
            values |= {"status": DELIVERED, "delivered_at": naive_utc(now)}
        else:
            retry = next_attempt(claimed.attempt, created_at=claimed.created_at, now=now)
            values |= {"status": FAILED} if retry is None else {"next_attempt_at": naive_utc(retry)}
        with self.engine.begin() as connection:
            connection.execute(update(outbox_table).where(outbox_table.c.id == claimed.row_id).values(**values))
        return str(values.get("status", PENDING))

    def expire(self, *, now: dt.datetime, grace: dt.timedelta) -> int:
        """Fail what is still pending a day (plus `grace`) after its event: deliveries to a URL
        no process sends to any more. Returns how many."""
        oldest = naive_utc(now - GIVE_UP_AFTER - grace)
        statement = (update(outbox_table).where(outbox_table.c.status == PENDING, outbox_table.c.created_at < oldest)
                     .values(status=FAILED))
        with self.engine.begin() as connection:
            return int(connection.execute(statement).rowcount)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest deliveries, as `GET /api/webhooks/deliveries` lists them."""
        table = outbox_table
        query = (select(table.c.webhook_id, table.c.type, table.c.url, table.c.status, table.c.attempts,
                        table.c.last_status_code, table.c.created_at, table.c.delivered_at)
                 .order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [{"id": row.webhook_id, "type": row.type, "url": row.url, "status": row.status,
                 "attempts": row.attempts, "last_status_code": row.last_status_code,
                 "created_at": row.created_at.replace(tzinfo=dt.UTC),
                 "delivered_at": None if row.delivered_at is None else row.delivered_at.replace(tzinfo=dt.UTC)}
                for row in rows]
