"""The seam between the proxy and a wire protocol: what a request says, and a reader that finds
the usage in the response. Everything protocol-specific lives in this subpackage, one module per
protocol; the middleware, the meter and the budgets see only what is defined here. Pure: no I/O,
fed bytes, returns values.

    RequestFacts      what a request says (endpoint kind, model, stream, output limit, body's user)
    ResponseReading   what a response said (usage, model, generated text, the upstream's own cost)
    ResponseReader    fed a streamed response chunk by chunk; returns the bytes to relay
    WireProtocol      one protocol: which requests it meters, how it reads them and their answers
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from ..types import Usage

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a request says, as far as metering and budgets care. `body` is the parsed JSON object,
    or None when the body is not one (it is still forwarded as sent)."""

    endpoint: str  # what the record calls it: "chat/completions", "messages", "generate_content"...
    body: dict[str, Any] | None
    model: str | None = None  # the model requested (from the body, or the path)
    stream: bool = False  # the client asked for a streamed answer
    user: str | None = None  # the body's own user id, where the protocol has one
    max_output_tokens: int | None = None  # the request's own cap on output tokens
    hide_usage: bool = False  # the proxy asks upstream for stream usage the client did not: hide it


@dataclass
class ResponseReading:
    """What a response told us: the upstream's usage (if any), its model, its generated text (for an
    estimate where no usage came), and the cost the upstream itself reported (USD), if it did."""

    usage: Usage | None = None
    model: str | None = None
    output_parts: list[str] = field(default_factory=list)
    reported_cost: Decimal | None = None
    # False while the upstream's counts cover only part of what was delivered (a stream that has
    # not ended, or was cut): its input counts hold, its output is estimated from the text.
    usage_final: bool = True

    @property
    def output_text(self) -> str:
        return "".join(self.output_parts)


class ResponseReader(Protocol):
    """Reads a streamed response as it is relayed: `feed(chunk)` returns the bytes to forward
    (the chunk itself unless the reader must hide part of it), `end()` the bytes still owed."""

    reading: ResponseReading

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes: ...


class WireProtocol(Protocol):
    """One wire protocol. Implementations are stateless; a route names one by `name`."""

    name: str

    def endpoint(self, method: str, path: str) -> str | None:
        """The metered endpoint a request goes to (from its method and path), or None: forwarded unmetered."""
        ...

    def read_request(self, endpoint: str, path: str, raw: bytes, *, inject_usage: bool) -> RequestFacts:
        """Facts from the request; never raises, whatever the body holds. `inject_usage`: the route
        lets the proxy ask the upstream for stream usage the client did not ask for."""
        ...

    def upstream_body(self, raw: bytes, facts: RequestFacts) -> bytes:
        """The body to send upstream (the client's own bytes, unless `facts.hide_usage`)."""
        ...

    def count_input(self, facts: RequestFacts, raw: bytes) -> int:
        """An estimate of the input tokens the upstream will bill, counted with tiktoken."""
        ...

    def credential(self, headers: Headers, query: bytes) -> str | None:
        """The client's own key, wherever this protocol carries it (to be hashed, never kept)."""
        ...

    def replace_credential(self, headers: Headers, query: bytes, key: str, *, provider: str) -> tuple[Headers, bytes]:
        """The request's headers and query with `key` in place of the client's credential: in the
        header the client used, else the protocol's usual one."""
        ...

    def stream_reader(self, facts: RequestFacts, *, status: int, content_type: bytes) -> ResponseReader | None:
        """A reader for a response to relay as it arrives, or None: the response is read whole."""
        ...

    def read_body(self, facts: RequestFacts, body: bytes) -> ResponseReading:
        """What a whole (non-streamed) response body says; an empty reading when it says nothing."""
        ...


def key_id(key: str | None) -> str | None:
    """First 16 hex characters of the SHA-256 of a key: how records name it; the key is never kept."""
    if not key:
        return None
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def header_key(headers: Headers, names: Iterable[bytes]) -> str | None:
    """The key in the first of `names` the request carries: `authorization` as a bearer token,
    any other header as its whole value."""
    wanted = tuple(names)
    found: dict[bytes, bytes] = {name: value for name, value in headers if name in wanted}
    for name in wanted:
        value = found.get(name)
        if value is None:
            continue
        text = value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = text.partition(" ")
            text = token.strip() if scheme.lower() == "bearer" else ""
        if text:
            return text
    return None


def with_header_key(headers: Headers, key: str, *, names: Iterable[bytes], usual: bytes) -> Headers:
    """`headers` with `key` in the first of `names` the client sent (a bearer token when that is
    `authorization`), or in `usual` when it sent none; the client's other credential headers go."""
    wanted = tuple(names)
    sent = next((name for name in wanted if any(own == name for own, _ in headers)), usual)
    kept = [(name, value) for name, value in headers if name not in wanted and name != usual]
    value = ("Bearer " + key if sent == b"authorization" else key).encode("latin-1")
    return [*kept, (sent, value)]


def count(value: object) -> int | None:
    """A token count from JSON: a non-negative integer, or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def first_count(*values: object) -> int | None:
    """The first of `values` that is a token count."""
    for value in values:
        found = count(value)
        if found is not None:
            return found
    return None


def text(value: object) -> str | None:
    """A non-empty string from JSON, or None."""
    return value if isinstance(value, str) and value else None


def reported_cost(value: object) -> Decimal | None:
    """A cost an upstream reported as a JSON number (USD), exactly as written, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return Decimal(str(value))
