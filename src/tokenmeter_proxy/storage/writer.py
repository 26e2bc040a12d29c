"""The background batch writer: records leave the request path at once and reach the database
in batches, written from a worker thread so the event loop never waits on the database."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import OperationalError

from ..types import UsageRecord
from .repository import Repository

log = logging.getLogger(__name__)


class RecordWriter:
    """A `UsageSink`: `submit()` queues a record and returns at once; `run()` stores them."""

    def __init__(
        self, repository: Repository, *, max_batch: int = 1000, retry_delay: float = 0.5, batch_window: float = 0.02,
    ) -> None:
        self.repository = repository
        self.max_batch = max_batch
        # Waiting a moment for more records makes batches of tens instead of ones: a one-record
        # SQLite insert costs ~115 us of CPU, a record in a batch of 64 ~16 us, and each batch is
        # one hop to a worker thread that contends with the event loop for the GIL.
        self.batch_window = batch_window
        self.retry_delay = retry_delay
        self.written = 0
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue()
        self._in_flight = 0  # records taken from the queue whose batch is not stored yet

    @property
    def pending(self) -> int:
        """Records submitted but not yet stored."""
        return self._queue.qsize() + self._in_flight

    def submit(self, record: UsageRecord) -> None:
        """Queue a record for storage; never blocks, never raises."""
        self._queue.put_nowait(record)

    async def run(self) -> None:
        """Store queued records until cancelled; a failed batch is retried, never dropped."""
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

    async def drain(self) -> None:
        """Wait until everything submitted so far is stored."""
        while self.pending:
            await asyncio.sleep(0.01)

    async def _store(self, batch: list[UsageRecord]) -> None:
        delay = self.retry_delay
        while True:
            try:
                await asyncio.to_thread(self.repository.insert_records, batch)
            except OperationalError as exc:  # the database is unreachable or busy: keep the batch, retry
                log.error("storing %d usage records failed, retrying in %.1fs: %s", len(batch), delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # the database refuses the data itself: find the record at fault
                await asyncio.to_thread(self._store_one_by_one, batch)
                return
            else:
                self.written += len(batch)
                return

    def _store_one_by_one(self, batch: list[UsageRecord]) -> None:
        """A batch the database refuses as data: store what it accepts, log what it does not."""
        for record in batch:
            try:
                self.repository.insert_records([record])
            except Exception as exc:
                log.error("usage record %s refused by the database and dropped: %s", record.id, exc)
            else:
                self.written += 1
