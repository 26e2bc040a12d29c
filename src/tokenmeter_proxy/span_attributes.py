"""A metered request's span attributes, by the OpenTelemetry GenAI semantic conventions (and
ours under `tokenmeter.`). Pure: a span's facts and its record in, attributes out. Split in two
for the exporter: what many spans have alike (kept encoded, by `shared_key`) and what is the
request's own. Never a prompt, a completion or a key: counts, names, ids and cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from opentelemetry.util.types import AttributeValue

from .types import UsageRecord

Attributes = dict[str, AttributeValue]
# gen_ai.operation.name of each record endpoint
OPERATIONS: Mapping[str, str] = {
    "chat/completions": "chat", "responses": "chat", "messages": "chat", "completions": "text_completion",
    "embeddings": "embeddings", "generate_content": "generate_content",
}
REFUSED = object()  # in place of a record: the proxy refused the request


class SpanFacts(Protocol):
    """What a span knows of its request before the record (a trace is one)."""

    @property
    def endpoint(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def request_id(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def extra(self) -> Attributes | None: ...  # a sampler's attributes


def attributes(trace: SpanFacts, record: Any, *, status: int | None, named: bool) -> Attributes:
    """The span's attributes, as the contract lists them."""
    return {**shared_attributes(trace, record, status=status, named=named), **own_attributes(trace, record)}


def shared_attributes(trace: SpanFacts, record: Any, *, status: int | None, named: bool) -> Attributes:
    """The attributes many spans have alike: what was asked of whom, for which session, how it went."""
    found: Attributes = {"gen_ai.operation.name": OPERATIONS.get(trace.endpoint, trace.endpoint),
                         "gen_ai.provider.name": trace.provider}
    if trace.model:
        found["gen_ai.request.model"] = trace.model
    if trace.session_id is not None:
        found["tokenmeter.session_id"] = trace.session_id
    if trace.extra:
        found.update(trace.extra)
    if status is not None and status >= 400:
        found["error.type"] = str(status)
    if record is REFUSED:
        found["gen_ai.usage.input_tokens"] = found["gen_ai.usage.output_tokens"] = 0
    elif isinstance(record, UsageRecord):
        if named and record.model:
            found["gen_ai.response.model"] = record.model
        found["tokenmeter.currency"] = record.currency
    return found


def shared_key(trace: SpanFacts, record: Any, *, status: int | None, named: bool) -> tuple[Any, ...] | None:
    """What `shared_attributes` depends on (None: a sampler's attributes, not kept)."""
    if trace.extra:
        return None
    error = status if status is not None and status >= 400 else None
    if isinstance(record, UsageRecord):
        return (trace.endpoint, trace.provider, trace.model, trace.session_id, error,
                record.model if named else None, record.currency)
    return (trace.endpoint, trace.provider, trace.model, trace.session_id, error, record is REFUSED)


def own_attributes(trace: SpanFacts, record: Any) -> Attributes:
    """The attributes of this request alone: its id, its counts and its cost."""
    found: Attributes = {"tokenmeter.request_id": trace.request_id}
    if isinstance(record, UsageRecord):
        usage = record.usage
        found["gen_ai.usage.input_tokens"] = usage.input_tokens
        found["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cached_input_tokens:
            found["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
        if usage.cache_write_tokens:
            found["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
        if record.cost is not None:
            found["tokenmeter.cost"] = float(record.cost)
    return found
