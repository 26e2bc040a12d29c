"""Alert webhooks: alerts become events in the database's outbox (the database's own outage in
memory, since it cannot wait there), and a background sender POSTs each one to every URL, signed
as Standard Webhooks defines, retried with backoff for a day.

Nothing here is on a request's path: `emit()` only queues. A receiver that hangs holds at most
`MAX_IN_FLIGHT_PER_URL` attempts, each for at most `ATTEMPT_TIMEOUT` seconds, and never delays
deliveries to other URLs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from . import __version__
from .alerts import (
    CONFIG_REJECTED,
    DIRECT_TYPES,
    STORAGE_DEGRADED,
    STORAGE_RECOVERED,
    Alert,
    Event,
    new_event,
    next_attempt,
    rejected_key,
    stored_key,
)
from .storage.outbox import Claimed, OutboxStore
from .types import Clock

log = logging.getLogger(__name__)

MAX_IN_FLIGHT_PER_URL = 4
ATTEMPT_TIMEOUT = 10.0
POLL_SECONDS = 1.0  # how often the outbox is read for rows other processes added, or that came due
LEASE = dt.timedelta(seconds=ATTEMPT_TIMEOUT + 50)  # a claimed row waits this long for its sender
EXPIRE_EVERY = 600  # rounds between sweeps of rows no process will send
MAX_QUEUED = 10_000  # alerts waiting for the outbox, and in-memory deliveries: past this, dropped
MAX_REMEMBERED = 100_000  # keys of alerts already queued, so a repeat costs no database round trip


@dataclasses.dataclass
class _Direct:
    """An in-memory delivery (the database may be down): one event to one URL."""

    event: Event
    url: str
    due: dt.datetime
    attempts: int = 0


class Webhooks:
    """An `AlertSink`: `emit()` queues an alert from anywhere (the event loop or a thread); `run()`
    stores alerts in the outbox and delivers due events until cancelled."""

    def __init__(self, urls: list[str], secret: str, outbox: OutboxStore, *, clock: Clock, host: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.urls = urls
        self.outbox = outbox
        self.clock = clock
        self.host = host
        self.transport = transport
        self._signer = Webhook(secret)
        self._queue: asyncio.Queue[Alert] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remembered: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._direct: list[_Direct] = []
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._claims_failing = False

    def emit(self, alert: Alert) -> None:
        """Queue an alert; never blocks, never raises. Safe from any thread."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and (self._loop is None or running is self._loop):
            self._accept(alert)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._accept, alert)
        else:
            log.warning("alert %s raised before the webhook sender started; not sent", alert.type)

    def storage_outage(self, problem: str | None) -> None:
        """The record writer's news: the database became unreachable (`problem`), or answers again (None)."""
        if problem is None:
            self.emit(Alert(STORAGE_RECOVERED, {"host": self.host}))
        else:
            self.emit(Alert(STORAGE_DEGRADED, {"host": self.host, "error": problem.splitlines()[0][:300]}))

    def config_rejected(self, path: Path, problems: list[str]) -> None:
        """A pricing or routes file refused on reload (called from the thread that read it)."""
        key = rejected_key(str(path), problems, now=self.clock())
        self.emit(Alert(CONFIG_REJECTED, {"file": str(path), "errors": problems}, key=key))

    async def run(self) -> None:
        """Store queued alerts and deliver due events until cancelled."""
        self._loop = asyncio.get_running_loop()
        # trust_env: receivers are reached through HTTPS_PROXY / HTTP_PROXY / NO_PROXY like the upstreams
        client = httpx.AsyncClient(transport=self.transport, timeout=httpx.Timeout(ATTEMPT_TIMEOUT),
                                   follow_redirects=False, trust_env=True,
                                   limits=httpx.Limits(max_connections=MAX_IN_FLIGHT_PER_URL * max(len(self.urls), 1)))
        try:
            await asyncio.gather(self._store_queued(), self._send(client))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await client.aclose()

    def _accept(self, alert: Alert) -> None:
        if alert.key is not None:
            if alert.key in self._remembered:
                return
            self._remembered[alert.key] = None
            if len(self._remembered) > MAX_REMEMBERED:
                self._remembered.popitem(last=False)
        if self._queue.qsize() >= MAX_QUEUED:
            log.error("%d alerts wait for the outbox; %s dropped", self._queue.qsize(), alert.type)
            return
        self._queue.put_nowait(alert)

    async def flush(self) -> None:
        """Store the alerts still queued (at shutdown: the outbox keeps them for the next sender)."""
        while not self._queue.empty():
            await self._store_one(self._queue.get_nowait())

    async def _store_queued(self) -> None:
        while True:
            await self._store_one(await self._queue.get())

    async def _store_one(self, alert: Alert) -> None:
        try:
            if alert.type in DIRECT_TYPES:
                self._add_direct(alert)
            else:
                await asyncio.to_thread(self._store, alert)
        except Exception as exc:  # the database is down or the data could not be read: forget it was raised
            log.error("alert %s could not be stored in the webhook outbox: %s", alert.type, exc)
            if alert.key is not None:
                self._remembered.pop(alert.key, None)
        self._wake.set()

    def _store(self, alert: Alert) -> None:
        """Make the alert an event and add it to the outbox, once (runs in a thread)."""
        data = alert.data() if callable(alert.data) else alert.data
        event = new_event(alert.type, data, now=self.clock())
        if self.outbox.add(event, key=stored_key(alert, event.id), urls=self.urls):
            log.info("webhook %s %s queued: %s", event.type, event.id, event.text)

    def _add_direct(self, alert: Alert) -> None:
        data = alert.data() if callable(alert.data) else alert.data
        event = new_event(alert.type, data, now=self.clock())
        if len(self._direct) + len(self.urls) > MAX_QUEUED:
            log.error("too many webhooks wait in memory; %s dropped", event.type)
            return
        log.info("webhook %s %s queued in memory: %s", event.type, event.id, event.text)
        self._direct += [_Direct(event, url, due=event.created_at) for url in self.urls]

    async def _send(self, client: httpx.AsyncClient) -> None:
        rounds = 0
        while True:
            self._wake.clear()
            try:
                await self._send_due(client, expire=rounds % EXPIRE_EVERY == 0)
            except Exception:  # a fault of ours: never let it stop deliveries for good
                log.exception("sending webhooks failed; trying again")
            rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def _send_due(self, client: httpx.AsyncClient, *, expire: bool) -> None:
        now = self.clock()
        for direct in self._direct:
            if direct.due <= now and self._in_flight[direct.url] < MAX_IN_FLIGHT_PER_URL:
                direct.due = dt.datetime.max.replace(tzinfo=dt.UTC)  # not again while this attempt runs
                self._start(direct.url, self._deliver_direct(client, direct))
        try:
            if expire:
                await asyncio.to_thread(self.outbox.expire, now=now, grace=LEASE)
            for url in self.urls:
                free = MAX_IN_FLIGHT_PER_URL - self._in_flight[url]
                if free <= 0:
                    continue
                claimed = await asyncio.to_thread(self.outbox.claim, url, now=now, limit=free, lease_until=now + LEASE)
                for delivery in claimed:
                    self._start(url, self._deliver(client, delivery))
        except Exception as exc:  # the database is down: the outbox waits, in-memory events do not
            if not self._claims_failing:
                log.error("reading the webhook outbox failed (%s); retrying every %.0fs", exc, POLL_SECONDS)
            self._claims_failing = True
        else:
            self._claims_failing = False

    def _start(self, url: str, delivery: Coroutine[Any, Any, None]) -> None:
        self._in_flight[url] += 1
        task = asyncio.create_task(delivery)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._in_flight[url] -= 1
            self._wake.set()  # a slot is free: more may be due

        task.add_done_callback(done)

    async def _deliver(self, client: httpx.AsyncClient, claimed: Claimed) -> None:
        code = await self._post(client, claimed.url, claimed.webhook_id, claimed.body)
        try:
            status = await asyncio.to_thread(self.outbox.settle, claimed, status_code=code, now=self.clock())
        except Exception as exc:  # its lease lapses and it is sent again: the receiver drops the duplicate by id
            log.error("webhook %s: recording the attempt failed: %s", claimed.webhook_id, exc)
            return
        if status == "failed":
            log.error("webhook %s to %s failed for 24 hours; given up", claimed.webhook_id, _host(claimed.url))

    async def _deliver_direct(self, client: httpx.AsyncClient, direct: _Direct) -> None:
        code = await self._post(client, direct.url, direct.event.id, direct.event.body())
        direct.attempts += 1
        now = self.clock()
        retry = None if code is not None and 200 <= code < 300 else next_attempt(
            direct.attempts, created_at=direct.event.created_at, now=now)
        if retry is None:
            self._direct.remove(direct)
        else:
            direct.due = retry

    async def _post(self, client: httpx.AsyncClient, url: str, webhook_id: str, body: bytes) -> int | None:
        """One signed attempt; the status code, or None when the receiver did not answer in time."""
        sent_at = dt.datetime.now(dt.UTC)  # the receiver checks it against its own clock
        headers = {"content-type": "application/json", "user-agent": f"tokenmeter-proxy/{__version__}",
                   "webhook-id": webhook_id, "webhook-timestamp": str(int(sent_at.timestamp())),
                   "webhook-signature": self._signer.sign(webhook_id, sent_at, body)}
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT), client.stream("POST", url, content=body,
                                                                        headers=headers) as response:
                code = response.status_code  # the body is not read: a receiver cannot make us hold much
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("webhook %s to %s: no answer (%s)", webhook_id, _host(url), type(exc).__name__)
            return None
        if not 200 <= code < 300:
            log.warning("webhook %s to %s: status %d; it will be retried", webhook_id, _host(url), code)
        return code


def _host(url: str) -> str:
    """Where a webhook goes, for the log: never the whole URL, which may hold a token."""
    return urlsplit(url).netloc.rpartition("@")[2]
