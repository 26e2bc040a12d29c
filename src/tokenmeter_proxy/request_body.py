"""What metering needs from a request: which endpoint, which model, streamed or not, who asked.

Parsing is read-only: a body is re-written only to ask the upstream for stream usage, and then
by splicing bytes where possible. A body that is not JSON is forwarded as it is, unread.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from .types import Endpoint

# Longest first: "/chat/completions" also ends with "/completions".
_ENDPOINTS: tuple[tuple[str, Endpoint], ...] = (
    ("/chat/completions", "chat/completions"),
    ("/completions", "completions"),
    ("/embeddings", "embeddings"),
    ("/responses", "responses"),
)
# Endpoints whose streams report usage only when asked with stream_options.include_usage.
_USAGE_ON_REQUEST: frozenset[str] = frozenset({"chat/completions", "completions"})
_MAX_IDENTITY_CHARS = 256


def metered_endpoint(method: str, path: str) -> Endpoint | None:
    """The metered endpoint a request goes to (by the end of its path), or None."""
    if method != "POST":
        return None
    for suffix, endpoint in _ENDPOINTS:
        if path.endswith(suffix):
            return endpoint
    return None


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """The parts of a request body metering uses. `body` is None when it is not a JSON object."""

    endpoint: Endpoint
    body: dict[str, Any] | None
    model: str | None = None
    stream: bool = False
    client_wants_usage: bool = False
    user: str | None = None
    max_output_tokens: int | None = None

    @property
    def needs_usage_injection(self) -> bool:
        """A stream whose usage the upstream reports only if asked, and the client did not ask."""
        return self.stream and self.endpoint in _USAGE_ON_REQUEST and not self.client_wants_usage


def read_request(endpoint: Endpoint, raw: bytes) -> RequestFacts:
    """Facts from a raw request body; never raises, whatever the body holds."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return RequestFacts(endpoint=endpoint, body=None)
    options = body.get("stream_options")
    max_tokens = next(
        (
            value
            for key in ("max_completion_tokens", "max_output_tokens", "max_tokens")
            if isinstance(value := body.get(key), int) and not isinstance(value, bool) and value >= 0
        ),
        None,
    )
    return RequestFacts(
        endpoint=endpoint,
        body=body,
        model=body["model"] if isinstance(body.get("model"), str) else None,
        stream=body.get("stream") is True,
        client_wants_usage=isinstance(options, dict) and options.get("include_usage") is True,
        user=clean_identity(body["user"]) if isinstance(body.get("user"), str) else None,
        max_output_tokens=max_tokens,
    )


def with_stream_usage(raw: bytes, facts: RequestFacts) -> bytes:
    """The body, asking the upstream to report usage at the end of the stream."""
    assert facts.body is not None
    if "stream_options" not in facts.body:
        # Splice rather than re-serialise: the client's bytes stay exactly as sent.
        start = raw.index(b"{") + 1
        return raw[:start] + b'"stream_options":{"include_usage":true},' + raw[start:]
    options = facts.body["stream_options"]
    body = dict(facts.body, stream_options={**(options if isinstance(options, dict) else {}), "include_usage": True})
    return orjson.dumps(body)


def clean_identity(value: str) -> str | None:
    """A session or user id fit to store: control characters dropped, at most 256 characters."""
    if value.isprintable() and len(value) <= _MAX_IDENTITY_CHARS:
        return value.strip() or None
    cleaned = "".join(ch for ch in value if ch.isprintable())[:_MAX_IDENTITY_CHARS].strip()
    return cleaned or None


def clean_model(value: str | None) -> str | None:
    """A model name fit to store: whatever a client or server sent, printable and at most 256
    characters, so no record is ever refused by the database for its model."""
    return None if value is None else clean_identity(value)


class UserIds:
    """How user ids are stored: as sent, or (GDPR) pseudonymised with a keyed hash, so the
    database never holds who the user is, while the same user still adds up."""

    def __init__(self, *, secret: str | None) -> None:
        self.secret = secret.encode() if secret else None

    def stored(self, user_id: str | None) -> str | None:
        """The id to store (and to query and budget by) for the id a client sent."""
        if user_id is None or self.secret is None:
            return user_id
        return "u_" + hmac.new(self.secret, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def api_key_id(authorization: str | None) -> str | None:
    """First 16 hex characters of the SHA-256 of the bearer key; the key itself is never kept."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return hashlib.sha256(key.strip().encode()).hexdigest()[:16]
