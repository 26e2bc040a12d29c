"""The batch writer: records stored off the request path, spooled while the database is down,
replayed exactly once when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError

from test_storage import record
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.repository import Filters, Repository
from tokenmeter_proxy.storage.spool import Spool
from tokenmeter_proxy.storage.writer import RecordWriter
from tokenmeter_proxy.types import UsageRecord

pytestmark = pytest.mark.anyio


class FlakyRepository(Repository):
    """The real repository, with a switch that makes the database unreachable."""

    down = False

    def insert_records(self, records: Sequence[UsageRecord]) -> int:
        self._check()
        return super().insert_records(records)

    def ping(self) -> None:
        self._check()
        super().ping()

    def _check(self) -> None:
        if self.down:
            raise OperationalError("INSERT", {}, ConnectionRefusedError("the database is down"))


@pytest.fixture
def repository(sqlite_url: str) -> Iterator[FlakyRepository]:
    engine = engine_from_url(sqlite_url)
    yield FlakyRepository(engine)
    engine.dispose()


async def test_records_are_stored_in_batches(repository: FlakyRepository, tmp_path: Path) -> None:
    writer = RecordWriter(repository, Spool(tmp_path / "spool"))
    for n in range(25):
        writer.submit(record(n))
    await _run_until_drained(writer)
    assert repository.totals(Filters()).requests == 25 and writer.written == 25 and writer.spooled == 0


async def test_records_wait_in_the_spool_while_the_database_is_down(repository: FlakyRepository,
                                                                    tmp_path: Path) -> None:
    writer = RecordWriter(repository, Spool(tmp_path / "spool"))
    repository.down = True
    for n in range(10):
        writer.submit(record(n))
    await _run_until_drained(writer)
    assert writer.database_down and writer.spooled == 10 and writer.spool.pending_files() >= 1
    await writer.replay_once()  # still down: nothing moves
    assert writer.spool.pending_files() >= 1
    repository.down = False
    await writer.replay_once()
    assert not writer.database_down and writer.replayed == 10 and writer.spool.pending_files() == 0
    assert repository.totals(Filters()).requests == 10


async def test_a_batch_replayed_twice_is_stored_once(repository: FlakyRepository, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    batch = [record(1, cost="0.5"), record(2, cost="0.5")]
    repository.insert_records(batch)  # stored, but the process died before deleting its spool file
    spool.put(batch)
    writer = RecordWriter(repository, spool)
    await writer.replay_once()
    totals = repository.totals(Filters())
    assert (totals.requests, str(totals.cost)) == (2, "1.0000000000") and spool.pending_files() == 0


async def test_another_processs_spooled_batches_are_replayed_too(repository: FlakyRepository,
                                                                 tmp_path: Path) -> None:
    Spool(tmp_path / "spool").put([record(7)])  # left by a process that shared the directory
    writer = RecordWriter(repository, Spool(tmp_path / "spool"))
    await writer.replay_once()
    assert repository.totals(Filters()).requests == 1


async def test_a_spooled_record_the_database_refuses_as_data_does_not_hold_up_the_rest(
        repository: FlakyRepository, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put([record(n) for n in range(5)])
    refused = record(3).id
    original = repository.insert_records

    def refusing(records: Sequence[UsageRecord]) -> int:
        if any(item.id == refused for item in records):
            raise IntegrityError("INSERT", {}, Exception("value too long for type character varying(32)"))
        return original(records)

    repository.insert_records = refusing  # type: ignore[method-assign]
    writer = RecordWriter(repository, spool)
    await writer.replay_once()
    assert repository.totals(Filters()).requests == 4 and spool.pending_files() == 0
    assert not writer.database_down and writer.written == 4


async def _run_until_drained(writer: RecordWriter) -> None:
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.wait_for(writer.drain(), 10)
    finally:
        task.cancel()


async def test_a_database_that_refuses_writes_gets_records_spooled_not_dropped(repository: FlakyRepository,
                                                                             tmp_path: Path) -> None:
    def read_only(records: Sequence[UsageRecord]) -> int:
        raise InternalError("INSERT", {}, Exception("cannot execute INSERT in a read-only transaction"))

    writer = RecordWriter(repository, Spool(tmp_path / "spool"))
    original = repository.insert_records
    repository.insert_records = read_only  # type: ignore[method-assign]
    for n in range(5):
        writer.submit(record(n))
    await _run_until_drained(writer)
    assert writer.spooled == 5 and writer.written == 0
    await writer.replay_once()  # still refused: the batch goes back, nothing is lost
    assert writer.spool.pending_files() == 1
    repository.insert_records = original  # type: ignore[method-assign]
    await writer.replay_once()
    assert repository.totals(Filters()).requests == 5 and writer.spool.pending_files() == 0
