"""W3C Trace Context: which `traceparent` values name a caller's span (the specification's rules)."""

from __future__ import annotations

import pytest

from tokenmeter_proxy.tracecontext import TraceParent, format_traceparent, parse_traceparent

TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.mark.parametrize(("header", "expected"), [
    (f"00-{TRACE}-{SPAN}-01", TraceParent(int(TRACE, 16), int(SPAN, 16), 1)),
    (f"00-{TRACE}-{SPAN}-00", TraceParent(int(TRACE, 16), int(SPAN, 16), 0)),
    (f" 00-{TRACE}-{SPAN}-03\t", TraceParent(int(TRACE, 16), int(SPAN, 16), 3)),  # optional whitespace
    (f"01-{TRACE}-{SPAN}-01-what-the-future-adds", TraceParent(int(TRACE, 16), int(SPAN, 16), 1)),
    (f"00-{TRACE}-{SPAN}-01-more", None),  # version 00 has exactly four fields
    (f"ff-{TRACE}-{SPAN}-01", None),  # an invalid version
    (f"00-{'0' * 32}-{SPAN}-01", None),  # all-zero ids are invalid
    (f"00-{TRACE}-{'0' * 16}-01", None),
    (f"00-{TRACE.upper()}-{SPAN}-01", None),  # lowercase hex only
    (f"00-{TRACE}-{SPAN}-1", None),
    (f"00-{TRACE[:-1]}-{SPAN}-01", None),
    (f"00-{TRACE}-{SPAN[:-2]}_1-01", None),
    ("", None),
    ("garbage", None),
])
def test_parse(header: str, expected: TraceParent | None) -> None:
    assert parse_traceparent(header.encode()) == expected


def test_format_names_the_span() -> None:
    assert format_traceparent(int(TRACE, 16), 1, 1) == f"00-{TRACE}-0000000000000001-01".encode()
    assert parse_traceparent(format_traceparent(5, 7, 3)) == TraceParent(5, 7, 3)
