"""An incremental server-sent events decoder: feed it bytes as they arrive, get whole events.

Events may be split across network reads at any byte, including between the `\\r` and `\\n`
of a line ending. Lines end with `\\r\\n`, `\\r` or `\\n` (the SSE specification), and an empty
line ends an event. Each event keeps its raw bytes, so a relay can forward events unchanged
or leave one out without re-serialising anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event: its `event` field ("" when absent), its data lines joined by "\\n", its raw bytes."""

    event: str
    data: bytes
    raw: bytes


class SSEDecoder:
    """Turns a byte stream into `ServerSentEvent`s. Does no I/O; scans each byte once."""

    def __init__(self) -> None:
        self._buffer = b""  # bytes of the event in progress (and of lines not yet ended)
        self._scanned = 0  # how far into _buffer complete lines have been parsed
        self._tail: list[bytes] = []  # reads holding no line ending, not yet joined to _buffer
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events they complete, in order."""
        if b"\n" not in chunk and b"\r" not in chunk:
            # Nothing can end here: keep the read aside, so a long line arriving in many small
            # reads is joined and scanned once, not once per read.
            if chunk:
                self._tail.append(chunk)
            return []
        self._join_tail()
        self._buffer = self._buffer + chunk if self._buffer else chunk
        return self._parse(final=False)

    def flush(self) -> list[ServerSentEvent]:
        """At the end of the stream: events that a final "\r" completes. An event left without
        its closing empty line is dropped, as the specification says; `pending()` keeps its bytes."""
        self._join_tail()
        return self._parse(final=True)

    def pending(self) -> bytes:
        """Bytes received but not part of any completed event (forward them at the end)."""
        self._join_tail()
        return self._buffer

    def _join_tail(self) -> None:
        if self._tail:
            self._buffer = b"".join([self._buffer, *self._tail])
            self._tail = []

    def _parse(self, *, final: bool) -> list[ServerSentEvent]:
        buffer = self._buffer
        position = self._scanned
        events: list[ServerSentEvent] = []
        event_start = 0
        end = len(buffer)
        while position < end:
            newline = buffer.find(b"\n", position)
            carriage = buffer.find(b"\r", position, newline if newline >= 0 else end)
            if carriage >= 0:
                line_end = carriage
                if carriage + 1 < end:
                    next_line = carriage + 2 if buffer[carriage + 1] == 0x0A else carriage + 1
                elif final:
                    next_line = carriage + 1
                else:
                    break  # a trailing "\r": wait to learn whether "\n" follows
            elif newline >= 0:
                line_end, next_line = newline, newline + 1
            else:
                break  # the line is not finished yet
            if line_end == position:
                events.append(self._dispatch(buffer[event_start:next_line]))
                event_start = next_line
            else:
                self._field(buffer[position:line_end])
            position = next_line
        self._buffer = buffer[event_start:] if event_start else buffer
        self._scanned = position - event_start
        return events

    def _field(self, line: bytes) -> None:
        colon = line.find(b":")
        if colon == 0:
            return  # a comment, such as a keep-alive ": ping"
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")

    def _dispatch(self, raw: bytes) -> ServerSentEvent:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = ServerSentEvent(event=self._event, data=data, raw=raw)
        self._event = ""
        self._data = []
        return event
