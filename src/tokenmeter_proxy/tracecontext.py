"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` a client sends, read,
and the one the proxy sends upstream, written. Pure: bytes in, values out."""

from __future__ import annotations

import re
from typing import NamedTuple

# version-traceid-parentid-flags; a later version may append fields after a dash
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)


class TraceParent(NamedTuple):
    """The caller's span: its trace, its own id, its flags (01: sampled, 02: random trace id)."""

    trace_id: int
    span_id: int
    flags: int


def parse_traceparent(value: bytes) -> TraceParent | None:
    """The span a `traceparent` header names, or None when it is not a valid one (the request then
    starts a trace of its own), as the specification's parsing rules say."""
    match = _TRACEPARENT.fullmatch(value.strip(b" \t"))
    if match is None:
        return None
    version, trace, span, flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return TraceParent(trace_id, span_id, int(flags, 16))


def format_traceparent(trace_id: int, span_id: int, flags: int) -> bytes:
    """The `traceparent` header (version 00) that names a span."""
    return b"00-%032x-%016x-%02x" % (trace_id, span_id, flags)
