"""Spans as OTLP protobuf (`ExportTraceServiceRequest`), written straight to the wire.

The same message a collector gets from the SDK's generic encoder (opentelemetry-exporter-otlp-
proto-common), at a fraction of the cost: that one builds every span as a `ReadableSpan` first and
every attribute as two keyword-constructed messages, ~50 µs a span with our 13 attributes; here a
span is a join of byte strings, and the attributes a proxy repeats (operation, provider, models,
currency, session) are encoded once and kept in the caller's `Cache`. tests/test_otlp.py holds it
to the SDK's encoder. Pure: values in, bytes out."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from opentelemetry.util.types import AnyValue

Cache = dict[tuple[str] | tuple[str, str], bytes]  # (key, text) -> the attribute; (key,) -> the key's part
CLIENT = 3  # Span.SpanKind.SPAN_KIND_CLIENT
STATUS_UNSET, STATUS_ERROR = 0, 2
_HAS_IS_REMOTE = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK: whether the parent was remote is known
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano (7) and end_time_unix_nano (8), both fixed64
_FLAGS = struct.Struct("<HI")  # flags (16): a two-byte tag, then fixed32
_FLAGS_TAG = 0x0185  # the varint of (16 << 3) | 5, read little-endian
_DOUBLE = struct.Struct("<Bd")  # AnyValue.double_value (4): tag and fixed64
_STATUS_UNSET = b"\x7a\x00"  # an empty Status (15), as the SDK's encoder always writes one
_BYTES = tuple(bytes((n,)) for n in range(0x80))  # the one-byte varints
_KINDS = tuple(b"\x30" + bytes((kind,)) for kind in range(6))  # kind (6), a varint below 128


def span(*, trace_id: int, span_id: int, parent_id: int = 0, remote_parent: bool = False, trace_state: str = "",
         name: str, kind: int = CLIENT, start: int, end: int, attributes: bytes, status: int = STATUS_UNSET,
         description: str = "") -> bytes:
    """One `Span` message (without its field tag: `request` adds it). `parent_id` 0: a root span;
    `attributes`: what `attributes` (and `attribute`) write."""
    return b"".join((
        b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big"),
        _string(b"\x1a", trace_state) if trace_state else b"",
        b"\x22\x08" + parent_id.to_bytes(8, "big") if parent_id else b"",
        _string(b"\x2a", name), _KINDS[kind], _TIMES.pack(0x39, start, 0x41, end), attributes,
        _STATUS_UNSET if status == STATUS_UNSET else _field(b"\x7a", _string(b"\x12", description) + b"\x18"
                                                           + _varint(status)),
        _FLAGS.pack(_FLAGS_TAG, _HAS_IS_REMOTE | _IS_REMOTE if parent_id and remote_parent else _HAS_IS_REMOTE)))


def attributes(items: Mapping[str, AnyValue], cache: Cache, *, keep: bool = True) -> bytes:
    """A span's attributes (field 9). Strings are kept in `cache` (a proxy's spans repeat most of
    them) unless not `keep` (ids, which never repeat); the keys' parts always are."""
    out = []
    for key, value in items.items():
        found = cache.get((key, value)) if keep and value.__class__ is str else None
        out.append(found if found is not None else attribute(key, value, cache, keep=keep))
    return b"".join(out)


def attribute(key: str, value: AnyValue, cache: Cache, *, keep: bool = True) -> bytes:
    """One span attribute: a KeyValue."""
    if keep and isinstance(value, str):
        found = cache.get((key, value))
        if found is not None:
            return found
    head = cache.get((key,))
    if head is None:
        head = cache[(key,)] = _string(b"\x0a", key) + b"\x12"
    encoded = _field(b"\x4a", head + _length(_value(value)))
    if keep and isinstance(value, str):
        cache[(key, value)] = encoded
    return encoded


def resource(attributes: Mapping[str, AnyValue], schema_url: str = "") -> tuple[bytes, str]:
    """A `Resource` message, and the schema URL its `ResourceSpans` carries."""
    return _key_values(b"\x0a", attributes), schema_url


def scope(name: str, version: str = "", attributes: Mapping[str, AnyValue] | None = None,
          schema_url: str = "") -> tuple[bytes, str]:
    """An `InstrumentationScope` message, and the schema URL its `ScopeSpans` carries."""
    return _string(b"\x0a", name) + _string(b"\x12", version) + _key_values(b"\x1a", attributes or {}), schema_url


def request(of: tuple[bytes, str], by: tuple[bytes, str], spans: Sequence[bytes]) -> bytes:
    """The serialised `ExportTraceServiceRequest`: `spans` of one resource (`of`) and scope (`by`)."""
    scoped = b"".join([_field(b"\x0a", by[0]), *[_field(b"\x12", one) for one in spans], _string(b"\x1a", by[1])])
    return _field(b"\x0a", _field(b"\x0a", of[0]) + _field(b"\x12", scoped) + _string(b"\x1a", of[1]))


def _key_values(tag: bytes, attributes: Mapping[str, AnyValue]) -> bytes:
    """Repeated KeyValue fields."""
    return b"".join(_field(tag, _string(b"\x0a", key) + _field(b"\x12", _value(value)))
                    for key, value in attributes.items())


def _value(value: AnyValue) -> bytes:
    """An AnyValue's fields."""
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())  # even when empty: the oneof says it is a string
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: negatives as ten bytes
    if isinstance(value, float):
        return _DOUBLE.pack(0x21, value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Mapping):
        return _field(b"\x32", _key_values(b"\x0a", value))
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(item)) for item in value))
    return b""  # None: an empty AnyValue


def _string(tag: bytes, text: str) -> bytes:
    """A string field, left out when empty (proto3)."""
    return _field(tag, text.encode()) if text else b""


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _length(payload)


def _length(payload: bytes) -> bytes:
    """A length-delimited field's length and payload."""
    size = len(payload)
    return (_BYTES[size] if size < 0x80 else _varint(size)) + payload


def _varint(number: int) -> bytes:
    if number < 0x80:
        return _BYTES[number]
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
