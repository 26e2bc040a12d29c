"""`TokenMeterMiddleware`: meters the LLM API calls that pass through any ASGI app.

Wrapped around our forwarding app it makes the metering proxy (which puts each request's route
in its scope); wrapped around an ASGI app that serves the OpenAI API itself (a self-hosted model
server, say) it meters that app, in the protocol of its `route` (OpenAI's by default):

    app = TokenMeterMiddleware(model_server_app, meter=meter)

Pure ASGI (no BaseHTTPMiddleware): streamed bytes are forwarded as they come, with a copy
read for usage. A non-streaming response is held until it ends, to add `X-TokenMeter-Cost`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from .asgi import ROUTE, UPSTREAM_FAILURE, ASGIApp, Message, Receive, Scope, Send, send_json
from .budgets import Decision
from .errors import body_too_large, openai_error
from .identity import UserIds, clean_identity
from .metering import CLIENT_CLOSED_REQUEST, Exchange, Meter, new_request_id
from .pricing import money_text
from .providers import ResponseReader, ResponseReading
from .providers.base import key_id
from .routes import Route, builtin_route
from .tags import HEADER as TAGS_HEADER
from .tags import parse_tags
from .types import UsageRecord

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-tokenmeter-request-id"
COST_HEADER = b"x-tokenmeter-cost"
_OWN_APP = builtin_route("http://localhost/v1", api_key=None)  # an app metered in place: OpenAI's protocol


class Admission(Protocol):
    """Budget control: None when no budget applies, else the decision (estimate held if admitted);
    `settled` tells it what an admitted request really cost (None: no record was made)."""

    async def admit(self, exchange: Exchange) -> Decision | None: ...

    def settled(self, exchange: Exchange, record: UsageRecord | None) -> None: ...


class Trace(Protocol):
    """One metered request's span (telemetry.py): `traceparent` names it to the upstream (None: not
    traced); it ends once, when the record is made or the proxy refuses the request."""

    traceparent: bytes | None

    def first_chunk(self) -> None: ...

    def end(self, record: UsageRecord | None, *, status: int | None, response_model: str | None) -> None: ...

    def refused(self, status: int) -> None: ...


class Tracing(Protocol):
    """OpenTelemetry, when it is on: a span for every metered request, a child of the client's
    `traceparent` (in `headers`), begun when the request arrived."""

    def start(self, exchange: Exchange, headers: list[tuple[bytes, bytes]]) -> Trace: ...

    def refused(self, route: Route, endpoint: str, request_id: str, *, status: int, started: float) -> None: ...


class TokenMeterMiddleware:
    """Records usage, cost and identity of every metered request the wrapped app answers, and
    with an `admission` (budgets), refuses requests whose budget is spent before they go on."""

    def __init__(
        self, app: ASGIApp, *, meter: Meter, admission: Admission | None = None, session_header: str = "X-Session-Id",
        user_header: str = "X-User-Id", max_body_bytes: int = 52_428_800, user_ids: UserIds | None = None,
        route: Route = _OWN_APP, tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.tracing = tracing
        self.route = route
        self.user_ids = user_ids or UserIds(secret=None)
        self.meter = meter
        self.admission = admission
        self.session_header = session_header.lower().encode("latin-1")
        self.user_header = user_header.lower().encode("latin-1")
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        route: Route = scope.get(ROUTE) or self.route
        protocol = route.protocol
        endpoint = protocol.endpoint(scope["method"], scope["path"])
        if endpoint is None:
            await self.app(scope, receive, _tagged(send, request_id, route.provider, self.meter.count_unmetered))
            return
        started = time.perf_counter()
        try:
            raw = await _read_body(receive, self.max_body_bytes)
        except _ClientGone:
            return  # the body never arrived whole: nothing is forwarded, nothing was used
        if raw is None:
            if self.tracing is not None:
                self.tracing.refused(route, endpoint, request_id, status=413, started=started)
            await send_json(send, 413, body_too_large(self.max_body_bytes),
                            headers=[(REQUEST_ID_HEADER, request_id.encode())])
            return
        facts = protocol.read_request(endpoint, scope["path"], raw, inject_usage=route.inject_usage)
        session, user, tagged = self._identity(scope["headers"])
        if user is None and facts.user is not None:
            user = clean_identity(facts.user)
        exchange = Exchange(
            id=request_id, route=route, facts=facts, raw_body=raw, session_id=session,
            user_id=self.user_ids.stored(user),
            api_key_id=key_id(protocol.credential(scope["headers"], scope.get("query_string", b""))),
            tags=_tags(tagged, request_id) if tagged else {}, started=started,
        )
        trace = self.tracing.start(exchange, scope["headers"]) if self.tracing is not None else None
        decision = await self.admission.admit(exchange) if self.admission is not None else None
        if decision is not None and not decision.admitted:
            if trace is not None:
                trace.refused(429)
            await send_json(send, 429, openai_error(
                "Budget exceeded: " + "; ".join(decision.refusals) + ".", type="insufficient_quota",
                code="budget_exceeded",
            ), headers=_refusal_headers(decision, request_id))
            return
        body = protocol.upstream_body(raw, facts)
        traceparent = trace.traceparent if trace is not None else None
        inner_scope = dict(scope, headers=_forward_headers(scope["headers"], len(body), traceparent))
        response = _MeteredResponse(self.meter, exchange, send, inner_scope,
                                    headers=_budget_headers(decision) if decision is not None else [], trace=trace,
                                    admission=self.admission if decision is not None else None)
        failed = False
        try:
            await self.app(inner_scope, _replay(body, receive), response.send)
        except BaseException:
            failed = True
            raise
        finally:
            await response.abandon(status=500 if failed and not response.started else CLIENT_CLOSED_REQUEST)

    def _identity(self, headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None, list[bytes]]:
        session = user = None
        tagged: list[bytes] = []
        for name, value in headers:
            if name == self.session_header:
                session = clean_identity(value.decode("latin-1"))
            elif name == self.user_header:
                user = clean_identity(value.decode("latin-1"))
            elif name == TAGS_HEADER:
                tagged.append(value)
        return session, user, tagged


class _MeteredResponse:
    """Relays the wrapped app's response, reading it for usage; records exactly once."""

    def __init__(self, meter: Meter, exchange: Exchange, send: Send, scope: Scope, *,
                 headers: list[tuple[bytes, bytes]], trace: Trace | None = None,
                 admission: Admission | None = None) -> None:
        self.meter = meter
        self.trace = trace
        self.admission = admission  # set when a budget admitted the request: it hears what it cost
        self.scope = scope
        self.extra_headers = headers
        self.exchange = exchange
        self.client_send = send
        self.started = False
        self.recorded = False
        self.status: int | None = None
        self.stream: ResponseReader | None = None
        self.start_message: Message | None = None
        self.parts: list[bytes] = []

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body":
            if self.stream is not None:
                await self._relay(message)
            else:
                await self._hold(message)
        else:
            await self.client_send(message)

    async def _start(self, message: Message) -> None:
        self.started = True
        self.status = message["status"]
        headers = [(REQUEST_ID_HEADER, self.exchange.id.encode()), *self.extra_headers, *message.get("headers", ())]
        facts = self.exchange.facts
        self.stream = self.exchange.route.protocol.stream_reader(facts, status=self.status or 0,
                                                                 content_type=_content_type(headers))
        if self.stream is not None:
            if facts.hide_usage:  # the body will be shorter than the upstream said
                headers = [(name, value) for name, value in headers if name.lower() != b"content-length"]
            await self.client_send({**message, "headers": headers})
        else:
            self.start_message = {**message, "headers": headers}

    async def _relay(self, message: Message) -> None:
        assert self.stream is not None
        body = message.get("body", b"")
        more = message.get("more_body", False)
        out = self.stream.feed(body) if body else b""
        if body and self.trace is not None:
            self.trace.first_chunk()
        if not more:
            out += self.stream.end()
            await self._record(self.stream.reading)
        if out or not more:
            await self.client_send({"type": "http.response.body", "body": out, "more_body": more})

    async def _hold(self, message: Message) -> None:
        chunk = message.get("body", b"")
        if chunk:
            self.parts.append(chunk)
        if message.get("more_body", False):
            return
        body = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        exchange = self.exchange
        record = await self._record(exchange.route.protocol.read_body(exchange.facts, body))
        failure = self.scope.get(UPSTREAM_FAILURE)
        if failure is not None:  # nothing reached the client yet: an error it understands, not half a body
            timeout = failure == 504
            await send_json(self.client_send, failure, openai_error(
                "The upstream " + ("did not finish answering in time." if timeout else "broke off its answer."),
                type="upstream_timeout" if timeout else "upstream_error",
                code="upstream_timeout" if timeout else "upstream_unreachable",
            ), headers=[(REQUEST_ID_HEADER, self.exchange.id.encode())])
            return
        assert self.start_message is not None
        start = self.start_message
        if record is not None and record.cost is not None:
            start["headers"].append((COST_HEADER, money_text(record.cost).encode()))
        await self.client_send(start)
        await self.client_send({"type": "http.response.body", "body": body, "more_body": False})

    async def _record(self, reading: ResponseReading, *, ended: int | None = None) -> UsageRecord | None:
        """Meter the exchange once; `ended` is the status to record when no response came. A
        metering fault is logged, never passed on to the client."""
        self.recorded = True
        status = self.scope.get(UPSTREAM_FAILURE, self.status if ended is None else ended)
        # An upstream that answered with an error bills nothing; one that broke off mid-response,
        # or whose client left, billed what it had done: that is estimated.
        billed = self.status < 400 if self.status is not None else ended == CLIENT_CLOSED_REQUEST
        record = None
        try:
            record = await self.meter.finish(self.exchange, reading, status=status, streamed=self.stream is not None,
                                             billed=billed)
        except Exception:
            log.exception("metering request %s failed; the response is unaffected", self.exchange.id)
        if self.admission is not None:
            self.admission.settled(self.exchange, record)
        if self.trace is not None:
            self.trace.end(record, status=status, response_model=reading.model)
        return record

    async def abandon(self, *, status: int) -> None:
        """The wrapped app stopped before the response ended (the client left, or it failed):
        record what was seen so far."""
        if self.recorded:
            return
        if self.started:
            self.scope.setdefault(UPSTREAM_FAILURE, status)
        reading = ResponseReading()
        if self.stream is not None:
            self.stream.end()  # what it still holds counts; the bytes it owes have nowhere to go
            reading = self.stream.reading
        await self._record(reading, ended=status)


def _refusal_headers(decision: Decision, request_id: str) -> list[tuple[bytes, bytes]]:
    """OpenAI clients honour x-should-retry: false; Retry-After says when the period resets."""
    headers = [(REQUEST_ID_HEADER, request_id.encode()), (b"x-should-retry", b"false")]
    if decision.retry_after is not None:
        headers.append((b"retry-after", str(decision.retry_after).encode()))
    return headers


def _budget_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    headers = []
    if decision.remaining_cost is not None:
        headers.append((b"x-tokenmeter-budget-remaining", money_text(decision.remaining_cost).encode()))
    if decision.remaining_tokens is not None:
        headers.append((b"x-tokenmeter-budget-remaining-tokens", str(decision.remaining_tokens).encode()))
    if decision.warnings:
        warning = "; ".join(decision.warnings).encode("ascii", "backslashreplace")
        headers.append((b"x-tokenmeter-budget-warning", warning))
    return headers


def _tags(values: list[bytes], request_id: str) -> dict[str, str]:
    """The request's valid tags; the others are dropped with a log line, never refused."""
    tags, dropped = parse_tags(b",".join(values).decode("utf-8", "replace"))
    if dropped:
        log.warning("request %s: tags dropped: %s", request_id, "; ".join(dropped))
    return tags


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it exceeds `limit` bytes; `_ClientGone` if the
    client leaves first (a truncated body must never be forwarded as if it were whole)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the (already read) body over once, then waits for a disconnect."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


_NOT_FORWARDED = (b"accept-encoding", b"content-length", b"transfer-encoding")
_NOT_FORWARDED_TRACED = (*_NOT_FORWARDED, b"traceparent")


def _forward_headers(headers: list[tuple[bytes, bytes]], length: int,
                     traceparent: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """Ask for an uncompressed response (so it can be read) and state the body's real length; when
    traced, the upstream's `traceparent` names our span instead of the client's."""
    dropped = _NOT_FORWARDED if traceparent is None else _NOT_FORWARDED_TRACED
    kept = [(name, value) for name, value in headers if name not in dropped]
    kept.append((b"accept-encoding", b"identity"))
    kept.append((b"content-length", str(length).encode()))
    if traceparent is not None:
        kept.append((b"traceparent", traceparent))
    return kept


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value
    return b""


def _tagged(send: Send, request_id: str, provider: str, count: Callable[[str, int], None]) -> Send:
    """A `send` that adds the request id header to the response and counts it."""
    header = (REQUEST_ID_HEADER, request_id.encode())

    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            count(provider, message["status"])
            message = {**message, "headers": [header, *message.get("headers", ())]}
        await send(message)

    return tagged
