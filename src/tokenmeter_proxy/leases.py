"""Budget leases: requests are admitted in memory, against slices of each budget subject's
remaining allowance that this process reserved in the database in advance; never overspent.

Per subject a budget can name (a session, a user, a key, a tag, everyone), the process holds a
lease: one row of `budget_reservations`, named after the process, that counts against every
budget of the subject as any reservation does. A request is admitted when what its estimate
needs is free in the slices of all its subjects, which costs no database round trip. Records
settle the slice they were admitted under in the transaction that stores them (their spend
then counts, their share of the lease no longer does), so spent + reserved never counts a
request twice or not at all. A slice is topped up when it runs low, sized from its recent
rate; the database grants at most half of the room left beyond what is needed, so processes
share what remains and its last part goes one request at a time: replicas together can never
admit more than a limit. Slices unused for a moment, and those of a budget that changed, are
given back; a process that dies stops renewing its leases, and they lapse.

    Leases.admit()    the verdict on a request (top-ups awaited only when a slice is short)
    Leases.settled()  what an admitted request really cost, when its record is made
    Leases.stored()   in the writer's transaction: take those costs from the lease rows
    Leases.maintain() keep the leases alive, give back idle and outdated slices
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from .budgets import Applied, Budget, Decision, Estimate, LeaseRequest, Standing, e10, judge
from .storage.budget_store import BudgetStore, settle
from .types import Clock

log = logging.getLogger(__name__)


IDLE_SECONDS = 1.0  # a slice nothing was admitted against this long is given back
HORIZON_SECONDS = 2.0  # a top-up aims to last this long at the recent rate
RATE_SECONDS = 1.0  # the time over which the rate is averaged
MIN_REQUESTS = 4  # and for at least this many requests like the one that asked
SETTLE_TIMEOUT_SECONDS = 3600.0  # a request whose record never reached the database

Amounts = list[tuple[str, str, int, int]]  # (scope, subject, cost in 10^-10 units, tokens)


@dataclass
class _Slice:
    """What this process holds of one subject's allowance."""

    scope: str
    subject: str
    budgets: tuple[Budget, ...]
    limits: tuple[bool, bool] = (False, False)  # whether they limit cost, tokens (kept by `use`)
    # the lease row, as it will be once every record settled here is stored: below zero when
    # records cost more than the slice held (grants fill that first, in the database as here)
    held_cost: int = 0
    held_tokens: int = 0
    inflight_cost: int = 0  # estimates of the admitted requests whose record is not made yet
    inflight_tokens: int = 0
    standings: list[Standing] = field(default_factory=list)  # as last read, for the response headers
    held_at_read: tuple[int, int] = (0, 0)
    settled_since_read: tuple[int, int] = (0, 0)
    floors: list[_Floor] = field(default_factory=list)  # the standings as used by others, in units
    rate_cost: float = 0.0  # estimates admitted per second (cost in 10^-10 units, tokens), smoothed
    rate_tokens: float = 0.0
    last_admit: float = 0.0
    topping_up: asyncio.Task[bool] | None = None

    def use(self, budgets: tuple[Budget, ...]) -> None:
        """Admit under these budgets from now on (all the subject's: those of the request's scope)."""
        self.budgets = budgets
        self.limits = (any(budget.max_cost is not None for budget in budgets),
                       any(budget.max_tokens is not None for budget in budgets))

    def lacks(self, cost: int, tokens: int) -> bool:
        """Whether the slice is short of room for a request of this estimate (`any(shortfall)`)."""
        by_cost, by_tokens = self.limits
        return ((by_cost and cost > self.held_cost - self.inflight_cost)
                or (by_tokens and tokens > self.held_tokens - self.inflight_tokens))

    def shortfall(self, cost: int, tokens: int) -> tuple[int, int]:
        """What the slice lacks to admit a request of this estimate, in the limited dimensions."""
        by_cost, by_tokens = self.limits
        return (max(cost - (self.held_cost - self.inflight_cost), 0) if by_cost else 0,
                max(tokens - (self.held_tokens - self.inflight_tokens), 0) if by_tokens else 0)

    @property
    def free(self) -> tuple[int, int]:
        return max(self.held_cost - self.inflight_cost, 0), max(self.held_tokens - self.inflight_tokens, 0)

    def note(self, cost: int, tokens: int, moment: float) -> None:
        """Fold an admission into the smoothed rates (exponential averages over about a second)."""
        elapsed = max(moment - self.last_admit, 1e-6)
        weight = 1 - math.exp(-elapsed / RATE_SECONDS)
        self.rate_cost += weight * (cost / elapsed - self.rate_cost)
        self.rate_tokens += weight * (tokens / elapsed - self.rate_tokens)
        self.last_admit = moment

    def low(self, target: tuple[int, int]) -> bool:
        """Whether what the slice holds free fell below half its target, in a limited dimension:
        time to top it up, ahead of need (half, so top-ups come once a horizon, not every request)."""
        return self.lacks(target[0] // 2, target[1] // 2)


@dataclass(slots=True)
class _Admitted:
    slices: list[_Slice]  # each holds the estimate
    cost: int
    tokens: int
    at: float


class Leases:
    """This process's budget leases, and admission against them."""

    def __init__(self, store: BudgetStore, *, clock: Clock, lease_seconds: float = 30.0,
                 lease_id: str | None = None) -> None:
        """`lease_seconds`: how long a lease stops counting after its process stopped renewing it
        (it died); renewed every third of that."""
        self.store = store
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.lease_id = lease_id or f"lease-{random.getrandbits(64):016x}"
        self._slices: dict[tuple[str, str], _Slice] = {}
        self._admitted: dict[str, _Admitted] = {}
        self._to_store: dict[str, Amounts] = {}  # records settled here, not yet stored: the writer takes them
        self._returning: Amounts = []  # taken from slices whose budgets changed, to give back

    async def admit(self, request_id: str, applied: list[Applied], estimate: Estimate, *, currency: str,
                    allow_unpriced: bool) -> Decision:
        """Admit the request if every subject's slice has room for its estimate (topping slices up
        from the database only when one is short), and hold the estimate until it settles."""
        if estimate.cost is None and not allow_unpriced and any(item.budget.max_cost is not None for item in applied):
            return judge([Standing(item) for item in applied], estimate, now=self.clock(), currency=currency)
        cost, tokens = e10(estimate.cost or Decimal(0)), estimate.tokens
        slices = [self._slice(scope, subject, budgets) for (scope, subject), budgets in _by_subject(applied).items()]
        while short := [piece for piece in slices if piece.lacks(cost, tokens)]:
            for piece in short:
                if not await self._top_up(piece, cost, tokens, wait=True):
                    return judge(self._read_standings(piece), estimate, now=self.clock(), currency=currency)
        moment = time.monotonic()
        for piece in slices:
            piece.inflight_cost += cost
            piece.inflight_tokens += tokens
            piece.note(cost, tokens, moment)
            if piece.topping_up is None and piece.low(self._target(piece, cost, tokens)):
                piece.topping_up = asyncio.create_task(self._grant(piece, cost, tokens))  # ahead of need
                piece.topping_up.add_done_callback(_logged)
        self._admitted[request_id] = _Admitted(slices, cost, tokens, moment)
        room = _room(slices, cost, tokens)
        if room is not None:
            remaining_cost, remaining_tokens = room
            return Decision(admitted=True, remaining_cost=None if remaining_cost is None else _money(remaining_cost),
                            remaining_tokens=remaining_tokens)
        # a budget past its warning (rare): worded by judge, from the same figures
        verdict = judge([standing for piece in slices for standing in self._local_standings(piece, cost, tokens)],
                        estimate, now=self.clock(), currency=currency, allow_unpriced=True)
        return Decision(admitted=True, remaining_cost=verdict.remaining_cost,  # the headers' figures
                        remaining_tokens=verdict.remaining_tokens, warnings=verdict.warnings)

    def settled(self, request_id: str, cost: Decimal | None, tokens: int) -> None:
        """An admitted request's record is made: its estimate leaves the slices, its cost is
        taken from them (and from the lease rows when the writer stores the record). None: no
        record will come (it failed before one was made)."""
        admitted = self._admitted.pop(request_id, None)
        if admitted is None:
            return
        spent = e10(cost or Decimal(0))
        amounts: Amounts = []
        for piece in admitted.slices:
            piece.inflight_cost -= admitted.cost
            piece.inflight_tokens -= admitted.tokens
            if cost is None and tokens == 0:
                continue
            piece.held_cost -= spent
            piece.held_tokens -= tokens
            settled_cost, settled_tokens = piece.settled_since_read
            piece.settled_since_read = (settled_cost + spent, settled_tokens + tokens)
            amounts.append((piece.scope, piece.subject, spent, tokens))
        if amounts:
            self._to_store[request_id] = amounts

    def stored(self, connection: Connection, values: Sequence[dict[str, Any]]) -> None:
        """In the transaction that stores records (the writer's thread): take what the records
        settled here cost from this process's lease rows."""
        settle(connection, self.lease_id, [amount for row in values for amount in self._to_store.pop(row["id"], ())])

    def changed(self, budgets: Sequence[Budget]) -> None:
        """The budgets were reloaded: what a slice holds free under budgets that changed (a limit
        lowered, a budget added or removed) is no longer admitted against here, at once, and goes
        back with the next round of `maintain`; the next request leases under the new budgets."""
        current: dict[tuple[str, str], list[Budget]] = defaultdict(list)
        for budget in budgets:
            current[(budget.scope, budget.subject or "*")].append(budget)
        for key, piece in self._slices.items():
            if _versions([b for b in piece.budgets if b.id is not None]) == _versions(current.get(key, [])):
                continue
            piece.use(())  # re-read at the next admission
            free_cost, free_tokens = piece.free
            piece.held_cost -= free_cost
            piece.held_tokens -= free_tokens
            if free_cost or free_tokens:
                self._returning.append((piece.scope, piece.subject, free_cost, free_tokens))

    async def maintain(self) -> None:
        """Until cancelled: renew this process's leases, give back idle and outdated slices."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(IDLE_SECONDS)
            try:
                back, dropped = self._idle_slices()
                back, self._returning = [*self._returning, *back], []
                if back or dropped or time.monotonic() - renewed >= self.lease_seconds / 3:
                    renewed = time.monotonic()
                    await asyncio.to_thread(self.store.shrink, self.lease_id, back, dropped=dropped,
                                            expires_at=self._expiry())
                self._forget_unsettled()
            except Exception as exc:  # the database may be down: the leases lapse, nothing is overspent
                log.error("renewing budget leases failed: %s", exc)

    async def close(self) -> None:
        """Give every lease back (at shutdown, once every record is stored)."""
        dropped = list(self._slices)
        self._slices.clear()
        if dropped:
            await asyncio.to_thread(self.store.shrink, self.lease_id, [], dropped=dropped, expires_at=self._expiry())

    def _slice(self, scope: str, subject: str, budgets: tuple[Budget, ...]) -> _Slice:
        piece = self._slices.get((scope, subject))
        if piece is None:
            piece = self._slices[(scope, subject)] = _Slice(scope, subject, ())
        if piece.budgets != budgets:  # the same objects until the budgets are reloaded: compared by identity
            piece.use(budgets)
        return piece

    def _target(self, piece: _Slice, cost: int, tokens: int) -> tuple[int, int]:
        """What a slice should hold free: enough for the coming seconds at its rate, and for a few
        requests like this one."""
        return (max(int(piece.rate_cost * HORIZON_SECONDS), cost * MIN_REQUESTS),
                max(int(piece.rate_tokens * HORIZON_SECONDS), tokens * MIN_REQUESTS))

    async def _top_up(self, piece: _Slice, cost: int, tokens: int, *, wait: bool) -> bool:
        """Ask for more of the slice's allowance, or wait for the top-up already asked for; False
        when the database granted none (the budgets have no room for this request)."""
        if piece.topping_up is not None:
            await asyncio.shield(piece.topping_up)
            return True  # re-checked by the caller
        piece.topping_up = asyncio.create_task(self._grant(piece, cost, tokens))
        return await asyncio.shield(piece.topping_up)

    async def _grant(self, piece: _Slice, cost: int, tokens: int) -> bool:
        try:
            need = piece.shortfall(cost, tokens)
            target = self._target(piece, cost, tokens)
            free = piece.free
            want = (max(target[0] - free[0], need[0]), max(target[1] - free[1], need[1]))
            request = LeaseRequest(lease_id=self.lease_id, scope=piece.scope, subject=piece.subject,
                                   budgets=piece.budgets, need=need, want=want)
            now = self.clock()
            held = (piece.held_cost, piece.held_tokens)
            granted = await asyncio.to_thread(self.store.lease, request, now=now, expires_at=self._expiry())
            piece.held_cost += granted.cost_e10
            piece.held_tokens += granted.tokens
            piece.standings, piece.held_at_read, piece.settled_since_read = granted.standings, held, (0, 0)
            piece.floors = [_Floor.of(standing, held) for standing in granted.standings]
            return bool(granted.cost_e10 or granted.tokens) or not any(need)
        finally:
            piece.topping_up = None

    def _read_standings(self, piece: _Slice) -> list[Standing]:
        return piece.standings or [Standing(Applied(budget, piece.subject)) for budget in piece.budgets]

    def _local_standings(self, piece: _Slice, cost: int, tokens: int) -> list[Standing]:
        """Where the slice's budgets stand as this process sees them now (before this request):
        what was spent and reserved by others at the last read, plus what was settled here since
        and what is in flight here; for the response's remaining and warning headers."""
        settled_cost, settled_tokens = piece.settled_since_read
        held_cost, held_tokens = piece.held_at_read
        found = []
        for standing in self._read_standings(piece):  # a lease below zero was read as reserving nothing
            others_cost = max(e10(standing.reserved_cost) - max(held_cost, 0), 0)
            others_tokens = max(standing.reserved_tokens - max(held_tokens, 0), 0)
            found.append(Standing(
                standing.applied, spent_cost=standing.spent_cost + _money(settled_cost),
                spent_tokens=standing.spent_tokens + settled_tokens,
                reserved_cost=_money(others_cost + piece.inflight_cost - cost),
                reserved_tokens=others_tokens + piece.inflight_tokens - tokens))
        return found

    def _idle_slices(self) -> tuple[Amounts, list[tuple[str, str]]]:
        """Slices nothing was admitted against for a moment, or whose budgets changed: a slice
        with nothing in flight and nothing waiting to be stored goes whole (and is forgotten);
        another gives back what it holds free."""
        moment, back, dropped = time.monotonic(), [], []
        waiting = {(scope, subject) for amounts in list(self._to_store.values()) for scope, subject, *_ in amounts}
        for key, piece in list(self._slices.items()):
            if piece.topping_up is not None or (piece.budgets and moment - piece.last_admit < IDLE_SECONDS):
                continue
            if not piece.inflight_cost and not piece.inflight_tokens and key not in waiting:
                dropped.append(key)
                del self._slices[key]
                continue
            free_cost, free_tokens = piece.free
            if free_cost or free_tokens:
                back.append((piece.scope, piece.subject, free_cost, free_tokens))
                piece.held_cost -= free_cost
                piece.held_tokens -= free_tokens
        return back, dropped

    def _forget_unsettled(self) -> None:
        """Records that never reached the database (refused as data, or spooled and stored by
        another process) leave their share in the lease until it lapses: forget them after a while."""
        limit = time.monotonic() - SETTLE_TIMEOUT_SECONDS
        for request_id in [key for key, admitted in self._admitted.items() if admitted.at < limit]:
            self.settled(request_id, None, 0)

    def _expiry(self) -> dt.datetime:
        return self.clock() + dt.timedelta(seconds=self.lease_seconds)


@dataclass(frozen=True)
class _Floor:
    """A budget as read with a grant, in units: what was spent, plus what others reserved (this
    process's lease aside), and where its warning starts (None: no such limit)."""

    cost: int
    tokens: int
    max_cost: int | None
    max_tokens: int | None
    warn_cost: int | None
    warn_tokens: int | None

    @classmethod
    def of(cls, standing: Standing, held: tuple[int, int]) -> _Floor:
        budget = standing.applied.budget  # a lease below zero was read as reserving nothing
        others_cost = max(e10(standing.reserved_cost) - max(held[0], 0), 0)
        others_tokens = max(standing.reserved_tokens - max(held[1], 0), 0)
        max_cost = None if budget.max_cost is None else e10(budget.max_cost)
        return cls(cost=e10(standing.spent_cost) + others_cost, tokens=standing.spent_tokens + others_tokens,
                   max_cost=max_cost, max_tokens=budget.max_tokens,
                   warn_cost=None if max_cost is None else math.ceil(budget.warn_at * max_cost),
                   warn_tokens=None if budget.max_tokens is None else math.ceil(budget.warn_at * budget.max_tokens))


def _room(slices: list[_Slice], cost: int, tokens: int) -> tuple[int | None, int | None] | None:
    """What the budgets have left once this request's estimate is counted, in units, as the
    response headers say it (judge's arithmetic on `_local_standings`, without building them);
    None when a budget reached its warning, or nothing was read yet: judge words that."""
    remaining_cost: int | None = None
    remaining_tokens: int | None = None
    for piece in slices:
        if not piece.floors:
            return None
        settled_cost, settled_tokens = piece.settled_since_read
        used_cost = settled_cost + piece.inflight_cost - cost  # before this request, as judge sees it
        used_tokens = settled_tokens + piece.inflight_tokens - tokens
        for floor in piece.floors:
            if floor.max_cost is not None and floor.warn_cost is not None:
                if floor.cost + used_cost >= floor.warn_cost:
                    return None
                left = floor.max_cost - floor.cost - used_cost - cost
                remaining_cost = left if remaining_cost is None else min(remaining_cost, left)
            if floor.max_tokens is not None and floor.warn_tokens is not None:
                if floor.tokens + used_tokens >= floor.warn_tokens:
                    return None
                left = floor.max_tokens - floor.tokens - used_tokens - tokens
                remaining_tokens = left if remaining_tokens is None else min(remaining_tokens, left)
    return remaining_cost, remaining_tokens


def _by_subject(applied: list[Applied]) -> dict[tuple[str, str], tuple[Budget, ...]]:
    found: dict[tuple[str, str], tuple[Budget, ...]] = {}
    for item in applied:
        key = (item.budget.scope, item.subject)
        found[key] = (*found.get(key, ()), item.budget)
    return found


def _versions(budgets: list[Budget]) -> list[tuple[Any, ...]]:
    return sorted((budget.period, budget.id, budget.max_cost, budget.max_tokens, budget.updated_at)
                  for budget in budgets)


def _logged(task: asyncio.Task[bool]) -> None:
    """A top-up asked for ahead of need failed with no request waiting on it: say why."""
    if not task.cancelled() and task.exception() is not None:
        log.error("topping up a budget lease failed: %s", task.exception())


def _money(units: int) -> Decimal:
    return Decimal(units).scaleb(-10)

