"""The SSE decoder: whole events out, whatever the byte boundaries of what goes in."""

from __future__ import annotations

import itertools

import pytest

from tokenmeter_proxy.sse import ServerSentEvent, SSEDecoder

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"id":"1","choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b"event: response.output_text.delta\r\n"
    b'data: {"delta":"lo \xc3\xa9"}\r\n\r\n'
    b"data: first line\rdata: second line\r\r"
    b"id: 7\nretry: 100\ndata:no-space\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    (b"", ""),
    (b'{"id":"1","choices":[{"delta":{"content":"Hel"}}]}', ""),
    (b'{"delta":"lo \xc3\xa9"}', "response.output_text.delta"),
    (b"first line\nsecond line", ""),
    (b"no-space", ""),
    (b"[DONE]", ""),
]


def decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.flush()


def test_a_whole_stream_decodes_into_its_events() -> None:
    events = decode([STREAM])
    assert [(event.data, event.event) for event in events] == EXPECTED
    assert b"".join(event.raw for event in events) == STREAM


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_a_stream_cut_at_any_byte_gives_the_same_events(cut: int) -> None:
    events = decode([STREAM[:cut], STREAM[cut:]])
    assert [(event.data, event.event) for event in events] == EXPECTED
    assert b"".join(event.raw for event in events) == STREAM


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    events = decode([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert [(event.data, event.event) for event in events] == EXPECTED


def test_a_stream_cut_at_every_pair_of_bytes_gives_the_same_events() -> None:
    sample = STREAM[:140]
    whole = [(event.data, event.event) for event in decode([sample])]
    for first, second in itertools.combinations(range(1, len(sample)), 2):
        events = decode([sample[:first], sample[first:second], sample[second:]])
        assert [(event.data, event.event) for event in events] == whole, (first, second)


def test_a_carriage_return_at_the_end_of_a_read_waits_for_the_next_byte() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # "\r\n" is one line ending, not two
    [event] = decoder.feed(b"\r\n")
    assert event.data == b"a"


def test_an_unfinished_event_at_the_end_is_dropped_but_its_bytes_are_kept() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: cut off") != []
    assert decoder.flush() == []
    assert decoder.pending() == b"data: cut off"


def test_a_final_carriage_return_completes_the_last_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == []
    [event] = decoder.flush()
    assert event.data == b"x"
