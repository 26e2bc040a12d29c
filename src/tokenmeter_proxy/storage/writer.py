"""The background batch writer: records leave the request path at once and reach the database
in batches, written from a worker thread so the event loop never waits on the database.

While the database is unreachable, batches go to the local spool (fsynced) instead, and a
replay loop stores them once it answers again; inserts are idempotent on the record id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.exc import DataError, IntegrityError

from ..types import UsageRecord
from .repository import Repository
from .spool import Spool

log = logging.getLogger(__name__)


class RecordWriter:
    """A `UsageSink`: `submit()` queues a record and returns at once; `run()` stores them."""

    def __init__(
        self, repository: Repository, spool: Spool, *, max_batch: int = 1000, batch_window: float = 0.02,
        probe_interval: float = 1.0, on_outage: Callable[[str | None], None] | None = None,
    ) -> None:
        """`on_outage` hears, from the event loop, once per outage: what went wrong when the
        database stops storing records, and None when it answers again."""
        self.repository = repository
        self.spool = spool
        self.max_batch = max_batch
        # Waiting a moment for more records makes batches of tens instead of ones: a one-record
        # SQLite insert costs ~115 us of CPU, a record in a batch of 64 ~16 us, and each batch is
        # one hop to a worker thread that contends with the event loop for the GIL.
        self.batch_window = batch_window
        self.probe_interval = probe_interval
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.database_down = False
        self.on_outage = on_outage
        self._outage_told = False
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue()
        self._in_flight = 0  # records taken from the queue whose batch is not stored or spooled yet

    @property
    def pending(self) -> int:
        """Records submitted but neither stored nor spooled yet."""
        return self._queue.qsize() + self._in_flight

    def submit(self, record: UsageRecord) -> None:
        """Queue a record for storage; never blocks, never raises."""
        self._queue.put_nowait(record)

    async def run(self) -> None:
        """Store queued records until cancelled: in the database, or while it is down, the spool."""
        while True:
            batch = [await self._queue.get()]
            self._in_flight = 1
            if self.batch_window:
                await asyncio.sleep(self.batch_window)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._in_flight = len(batch)
            try:
                await self._store(batch)
            finally:
                self._in_flight = 0

    async def replay(self) -> None:
        """Until cancelled: while the database is down, probe it; once it answers, store what
        the spool holds (this process's batches and any other's in the same directory)."""
        while True:
            await asyncio.sleep(self.probe_interval)
            await self.replay_once()  # which never raises: a failed round is logged and tried again

    async def replay_once(self) -> None:
        """One round: probe the database if it was down, then store every spooled batch."""
        if self.database_down:
            try:
                await asyncio.to_thread(self.repository.ping)
            except Exception:  # still unreachable
                return
            self.database_down = False
            log.warning("the database answers again; storing spooled usage records")
            self._tell_outage(None)
        try:
            await asyncio.to_thread(self._replay_spool)
        except Exception as exc:  # the batch went back to the spool; the next round tries again
            log.error("storing spooled usage records failed (%s); they stay in the spool", exc)
            self._tell_outage(exc)

    async def drain(self) -> None:
        """Wait until everything submitted so far is stored or spooled."""
        while self.pending:
            await asyncio.sleep(0.01)

    async def _store(self, batch: list[UsageRecord]) -> None:
        if not self.database_down:
            try:
                self.written += await asyncio.to_thread(self._insert, batch)
                return
            except Exception as exc:  # unreachable, read-only, failing over...: keep the records safe on disk
                self.database_down = True
                log.error("the database cannot store usage records (%s); spooling them until it can", exc)
                self._tell_outage(exc)
        await self._spool(batch)

    def _tell_outage(self, problem: Exception | None) -> None:
        """Tell `on_outage` when the database went down, or came back, since it was last told."""
        down = problem is not None
        if self.on_outage is None or down == self._outage_told:
            return
        self._outage_told = down
        try:
            self.on_outage(None if problem is None else f"{type(problem).__name__}: {problem}")
        except Exception:  # telling must never cost a record
            log.exception("reporting the database's state failed")

    def _insert(self, batch: list[UsageRecord]) -> int:
        """Store a batch; returns how many records were new."""
        try:
            return self.repository.insert_records(batch)
        except (IntegrityError, DataError):  # the database refuses the data itself: find the record at fault
            return self._store_one_by_one(batch)

    async def _spool(self, batch: list[UsageRecord]) -> None:
        delay = 0.1
        while True:
            try:
                await asyncio.to_thread(self.spool.put, batch)
            except OSError as exc:  # the disk refuses too: hold the batch in memory and keep trying
                log.error("spooling %d usage records failed (%s); retrying in %.1fs", len(batch), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self.spooled += len(batch)
                return

    def _replay_spool(self) -> None:
        for claimed, records in self.spool.claim():
            try:
                stored = self._insert(records)
            except BaseException:
                self.spool.release(claimed)  # back for a later round, whatever went wrong
                self.database_down = True
                raise
            self.spool.done(claimed)
            self.replayed += len(records)
            self.written += stored

    def _store_one_by_one(self, batch: list[UsageRecord]) -> int:
        """A batch the database refuses as data: store what it accepts, log what it does not;
        returns how many it stored."""
        stored = 0
        for record in batch:
            try:
                stored += self.repository.insert_records([record])
            except (IntegrityError, DataError) as exc:
                log.error("usage record %s refused by the database and dropped: %s", record.id, exc)
        return stored
