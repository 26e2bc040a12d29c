"""The spool: batches written whole and durably, replayed once, shared safely by processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_storage import record
from tokenmeter_proxy.storage.spool import Spool


def test_a_batch_comes_back_exactly_as_it_went_in(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    batch = [record(1, cost="0.0072500001"), record(2, cost=None, session=None, provider="anthropic")]
    spool.put(batch)
    [(claimed, records)] = list(spool.claim())
    assert records == batch
    spool.done(claimed)
    assert spool.pending_files() == 0 and list(spool.claim()) == []


def test_batches_replay_oldest_first_and_a_released_batch_comes_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put([record(1)])
    spool.put([record(2)])
    claims = list(spool.claim())
    assert [records[0].id for _, records in claims] == [f"{1:024x}", f"{2:024x}"]
    spool.release(claims[1][0])
    spool.done(claims[0][0])
    assert [records[0].id for _, records in spool.claim()] == [f"{2:024x}"]


def test_a_half_written_file_is_never_seen(tmp_path: Path) -> None:
    (tmp_path / ".batch-1-2-3.jsonl.tmp").write_bytes(b'{"id": "trunc')  # a writer killed mid-write
    assert list(Spool(tmp_path).claim()) == []


def test_a_claim_held_by_another_live_process_is_left_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put([record(1)])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        [path] = tmp_path.glob("batch-*.jsonl")
        path.rename(path.with_name(f"{path.name}.claimed-{sleeper.pid}"))
        assert list(Spool(tmp_path).claim()) == []
    finally:
        sleeper.kill()
        sleeper.wait()
    [(_, records)] = list(Spool(tmp_path).claim())  # its owner died: the batch is replayed
    assert records[0].id == f"{1:024x}"


def test_claims_left_under_our_own_pid_by_an_earlier_process_are_taken_back(tmp_path: Path) -> None:
    Spool(tmp_path).put([record(1)])
    [path] = tmp_path.glob("batch-*.jsonl")
    path.rename(path.with_name(f"{path.name}.claimed-{os.getpid()}"))
    assert len(list(Spool(tmp_path).claim())) == 1


def test_an_unreadable_file_is_moved_aside_not_retried_forever(tmp_path: Path) -> None:
    (tmp_path / "batch-00000000000000000001-1-1.jsonl").write_bytes(b"not json\n")
    spool = Spool(tmp_path)
    assert list(spool.claim()) == []
    assert [path.name.endswith(".unreadable") for path in tmp_path.iterdir()] == [True]
