"""The spool: usage records the database could not take, kept on local disk until it can.

Each batch is one file, written in full to a temporary name, fsynced, then renamed into place
(and the directory fsynced), so a file is either whole or absent, whatever kills the process.
Several processes may share one directory: each names its files after its pid, and a replay
claims a file by renaming it (`.claimed-<pid>`), which only one process can do. A claim left by
a process that died is taken back. Replays are idempotent (records are inserted on their id),
so a batch stored but not yet deleted when a process dies is never counted twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from ..types import Usage, UsageRecord

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
CLAIM = ".claimed-"


class Spool:
    """Files of records in one directory, written durably and replayed exactly once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sequence = 0
        self._started = True  # claims under our own pid are from an earlier process: take them back once

    def put(self, records: list[UsageRecord]) -> Path:
        """Write a batch durably; raises OSError if the disk refuses (the caller keeps the batch)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        name = f"batch-{time.time_ns():020d}-{os.getpid()}-{self._sequence}{SUFFIX}"
        target = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        data = b"".join(orjson.dumps(_encode(record)) + b"\n" for record in records)
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
        _fsync_directory(self.directory)
        return target

    def claim(self) -> Iterator[tuple[Path, list[UsageRecord]]]:
        """Batches to replay, oldest first, each claimed for this process as it is yielded."""
        self._take_back_dead_claims()
        for path in sorted(self.directory.glob(f"batch-*{SUFFIX}")):
            claimed = path.with_name(f"{path.name}{CLAIM}{os.getpid()}")
            try:
                path.rename(claimed)  # atomic: of processes racing for a file, one wins
            except FileNotFoundError:
                continue  # another process claimed it first
            try:
                records = [_decode(orjson.loads(line)) for line in claimed.read_bytes().splitlines() if line]
            except (OSError, ValueError, KeyError) as exc:
                log.error("spool file %s cannot be read (%s); moved aside", claimed, exc)
                claimed.rename(claimed.with_name(claimed.name + ".unreadable"))
                continue
            yield claimed, records

    def done(self, claimed: Path) -> None:
        """The batch is stored: forget it."""
        claimed.unlink(missing_ok=True)
        _fsync_directory(self.directory)

    def release(self, claimed: Path) -> None:
        """The batch could not be stored now: put it back for a later replay."""
        original = claimed.with_name(claimed.name.split(CLAIM)[0])
        os.replace(claimed, original)

    def pending_files(self) -> int:
        """Batches waiting (claimed or not)."""
        if not self.directory.exists():
            return 0
        return sum(1 for path in self.directory.glob("batch-*") if not path.name.endswith(".unreadable"))

    def _take_back_dead_claims(self) -> None:
        if not self.directory.exists():
            return
        for path in self.directory.glob(f"batch-*{SUFFIX}{CLAIM}*"):
            owner = int(path.name.rsplit(CLAIM, 1)[1])
            if (owner == os.getpid() and self._started) or not _alive(owner):
                # an earlier process's with our pid, or a dead process's: replay it again
                with contextlib.suppress(FileNotFoundError):
                    self.release(path)
        self._started = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _encode(record: UsageRecord) -> dict[str, Any]:
    usage = record.usage
    return {
        "id": record.id, "created_at": record.created_at.isoformat(), "session_id": record.session_id,
        "user_id": record.user_id, "api_key_id": record.api_key_id, "endpoint": record.endpoint,
        "model": record.model, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens, "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens, "cost": None if record.cost is None else str(record.cost),
        "currency": record.currency, "price_version": record.price_version, "usage_source": record.usage_source,
        "status_code": record.status_code, "streamed": record.streamed, "latency_ms": record.latency_ms,
        "price_source": record.price_source, "provider": record.provider, "route": record.route,
        "tags": dict(record.tags),
    }


def _decode(data: dict[str, Any]) -> UsageRecord:
    return UsageRecord(
        id=data["id"], created_at=dt.datetime.fromisoformat(data["created_at"]), session_id=data["session_id"],
        user_id=data["user_id"], api_key_id=data["api_key_id"], endpoint=data["endpoint"], model=data["model"],
        usage=Usage(input_tokens=data["input_tokens"], output_tokens=data["output_tokens"],
                    cached_input_tokens=data["cached_input_tokens"], cache_write_tokens=data["cache_write_tokens"],
                    reasoning_tokens=data["reasoning_tokens"]),
        cost=None if data["cost"] is None else Decimal(data["cost"]), currency=data["currency"],
        price_version=data["price_version"], usage_source=data["usage_source"], status_code=data["status_code"],
        streamed=data["streamed"], latency_ms=data["latency_ms"], price_source=data.get("price_source"),
        # spooled before providers existed: every such record came through /v1 or was reported
        provider=data.get("provider", "openai"),
        route=data.get("route", None if data["usage_source"] == "reported" else "openai"),
        tags=data.get("tags") or {},
    )
