"""The HTTP/1.1 client against real servers: uvicorn for well-behaved ones, small asyncio
servers for the misbehaving ones (slow, silent, closing, cut short), and a TLS server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trustme

from conftest import free_port, serve_in_thread
from tokenmeter_proxy.errors import UpstreamError, UpstreamTimeout
from tokenmeter_proxy.http1 import Http1Upstream
from tokenmeter_proxy.http1_connection import PAUSE_ABOVE, Http1Response

pytestmark = pytest.mark.anyio
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=[("asyncio", {}), ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Each test on both loops: the proxy runs on uvloop, whose callbacks come in another order."""
    return request.param  # type: ignore[no-any-return]


class Server:
    """A raw ASGI app with a few routes; it notes what it saw from another thread."""

    def __init__(self) -> None:
        self.disconnected = threading.Event()
        self.sent_bytes = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/echo":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            answer = {"method": scope["method"], "client_port": scope["client"][1], "body": body.decode(),
                      "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]]}
            await _send(send, 200, json.dumps(answer).encode(), [(b"content-type", b"application/json")])
        elif path == "/count":  # the size of the body it received
            size = 0
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            await _send(send, 200, str(size).encode(), [])
        elif path == "/empty":
            await _send(send, 204, b"", [])
        elif path == "/stream":  # chunked: no content-length
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-kind", b"stream")]})
            watcher = asyncio.ensure_future(self._watch(receive))
            for number in range(1000):
                if watcher.done():
                    break
                await send({"type": "http.response.body", "body": b"chunk %d\n" % number, "more_body": True})
                await asyncio.sleep(0.05)
            watcher.cancel()
        elif path == "/big":  # 64 MB, as fast as the client takes it
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"67108864")]})
            piece = b"x" * 65536
            for _ in range(1024):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                self.sent_bytes += len(piece)
            await send({"type": "http.response.body", "body": b""})

    async def _watch(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())] if status != 204 else headers
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Server, str]]:
    app = Server()
    with serve_in_thread(app) as url:
        yield app, url


@pytest.fixture
async def upstream(server: tuple[Server, str]) -> AsyncIterator[Http1Upstream]:
    client = Http1Upstream(server[1], read_timeout=5)
    yield client
    await client.aclose()


async def read_all(response: Http1Response) -> bytes:
    body = b"".join([chunk async for chunk in response])
    await response.aclose()
    return body


async def echo(upstream: Http1Upstream, body: bytes | AsyncIterator[bytes] = b"", method: str = "POST",
               headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    response = await upstream.send(method, b"/echo", headers or [], body)
    assert response.status == 200
    answer: dict[str, Any] = json.loads(await read_all(response))
    return answer


@contextlib.asynccontextmanager
async def raw_server(handle: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A plain asyncio server running `handle` for each connection; yields its origin."""
    handlers: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handle(reader, writer)
        except asyncio.CancelledError:
            pass  # the test is over
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head (and its content-length body, discarded); b"" at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


# Connections and framing

async def test_sequential_requests_share_one_keep_alive_connection(upstream: Http1Upstream) -> None:
    first = await echo(upstream, b'{"n": 1}')
    second = await echo(upstream, b'{"n": 2}')
    assert first["client_port"] == second["client_port"]
    assert second["body"] == '{"n": 2}' and upstream.open == 1


async def test_host_and_content_length_are_set_by_the_client(upstream: Http1Upstream,
                                                             server: tuple[Server, str]) -> None:
    answer = await echo(upstream, b"12345", headers=[(b"host", b"elsewhere"), (b"content-length", b"99"),
                                                     (b"x-one", b"1"), (b"X-Two", b"2")])
    assert answer["headers"] == [["host", server[1].removeprefix("http://")], ["x-one", "1"], ["x-two", "2"],
                                 ["content-length", "5"]]


async def test_a_chunked_stream_arrives_chunk_by_chunk_before_it_ends(upstream: Http1Upstream,
                                                                     server: tuple[Server, str]) -> None:
    response = await upstream.send("GET", b"/stream", [], b"")
    assert response.status == 200 and (b"transfer-encoding", b"chunked") in response.headers
    loop = asyncio.get_running_loop()
    arrivals = []
    async for chunk in response:
        arrivals.append((chunk, loop.time()))
        if len(arrivals) == 3:
            break
    assert [chunk for chunk, _ in arrivals] == [b"chunk 0\n", b"chunk 1\n", b"chunk 2\n"]
    assert arrivals[2][1] - arrivals[0][1] > 0.08  # each came as it was sent, 50 ms apart
    await response.aclose()


async def test_closing_a_stream_early_disconnects_so_the_server_stops(upstream: Http1Upstream,
                                                                      server: tuple[Server, str]) -> None:
    server[0].disconnected.clear()
    response = await upstream.send("GET", b"/stream", [], b"")
    await response.__anext__()
    await response.aclose()
    assert await asyncio.to_thread(server[0].disconnected.wait, 5)
    assert upstream.open == 0


async def test_a_cancelled_read_leaves_nothing_open_or_pooled(upstream: Http1Upstream,
                                                              server: tuple[Server, str]) -> None:
    server[0].disconnected.clear()
    response = await upstream.send("GET", b"/stream", [], b"")
    reader = asyncio.ensure_future(read_all(response))
    await asyncio.sleep(0.2)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert upstream.open == 0 and not upstream.idle
    assert await asyncio.to_thread(server[0].disconnected.wait, 5)


async def test_a_slow_reader_of_a_large_body_holds_it_back_at_the_server(upstream: Http1Upstream,
                                                                         server: tuple[Server, str]) -> None:
    server[0].sent_bytes = 0
    response = await upstream.send("GET", b"/big", [], b"")
    received = len(await response.__anext__())
    await asyncio.sleep(0.5)
    assert server[0].sent_bytes < 32 * 2**20  # the rest waits in the server, not in our memory
    assert response._buffered <= PAUSE_ABOVE + 256 * 1024
    async for chunk in response:
        received += len(chunk)
    assert received == 64 * 2**20
    await response.aclose()
    assert upstream.idle  # read to the end: reusable


async def test_a_body_that_ends_when_the_connection_does() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Dup: a\r\nSet-Cookie: 1\r\nx-dup: b\r\n\r\nuntil ")
        await writer.drain()
        writer.write(b"the end")
        writer.close()

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        response = await upstream.send("GET", b"/", [], b"")
        assert response.headers == [(b"X-Dup", b"a"), (b"Set-Cookie", b"1"), (b"x-dup", b"b")]  # as sent
        assert await read_all(response) == b"until the end"
        assert upstream.open == 0
        await upstream.aclose()


async def test_head_and_204_have_no_body(upstream: Http1Upstream) -> None:
    head = await upstream.send("HEAD", b"/echo", [], b"")
    assert head.status == 200 and await read_all(head) == b""
    assert upstream.open == 0  # not reused after a HEAD, to be safe
    empty = await upstream.send("DELETE", b"/empty", [], b"")
    assert empty.status == 204 and await read_all(empty) == b""
    assert len(upstream.idle) == 1


async def test_an_early_hint_is_skipped_for_the_real_response() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK)
        await read_request(reader)

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        response = await upstream.send("GET", b"/", [], b"")
        assert (response.status, response.headers) == (200, [(b"content-length", b"2")])
        assert await read_all(response) == b"ok"
        await upstream.aclose()


# Streamed uploads

async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def test_a_streamed_body_goes_chunked_without_a_length(upstream: Http1Upstream) -> None:
    answer = await echo(upstream, chunks(b"one ", b"", b"two"))
    assert answer["body"] == "one two" and ["transfer-encoding", "chunked"] in answer["headers"]


async def test_a_streamed_body_keeps_the_length_it_was_given(upstream: Http1Upstream) -> None:
    answer = await echo(upstream, chunks(b"one ", b"two"), headers=[(b"content-length", b"7")])
    assert answer["body"] == "one two" and ["content-length", "7"] in answer["headers"]
    assert not any(name == "transfer-encoding" for name, _ in answer["headers"])


async def test_a_large_upload_is_written_as_the_server_takes_it(upstream: Http1Upstream) -> None:
    piece = b"x" * 65536

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(256):
            yield piece

    for body in (piece * 256, pieces()):
        response = await upstream.send("POST", b"/count", [], body)
        assert await read_all(response) == b"16777216"


async def test_a_streamed_body_longer_than_its_length_is_not_sent_on(upstream: Http1Upstream) -> None:
    with pytest.raises(UpstreamError, match="longer than its content-length"):
        await echo(upstream, chunks(b"one ", b"two"), headers=[(b"content-length", b"5")])
    assert upstream.open == 0


# Failures

async def test_a_refused_connection_is_an_upstream_error() -> None:
    upstream = Http1Upstream(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamError, match=r"cannot connect to http://127\.0\.0\.1:\d+: ConnectionRefusedError"):
        await upstream.send("GET", b"/", [], b"")
    assert upstream.open == 0


async def test_silence_longer_than_the_read_timeout_is_a_timeout() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        if b"/half" in head:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await asyncio.sleep(5)

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin, read_timeout=0.2)
        with pytest.raises(UpstreamTimeout, match=r"no response for 0\.2 s"):
            await upstream.send("GET", b"/", [], b"")
        response = await upstream.send("GET", b"/half", [], b"")
        assert await response.__anext__() == b"hi"
        with pytest.raises(UpstreamTimeout, match="nothing more of its response"):
            await response.__anext__()
        assert upstream.open == 0
        await upstream.aclose()


async def test_a_body_cut_short_is_an_upstream_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        writer.close()

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        response = await upstream.send("GET", b"/", [], b"")
        with pytest.raises(UpstreamError, match="closed the connection mid-response"):
            await read_all(response)
        await upstream.aclose()


async def test_a_cancelled_send_leaves_nothing_open() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        sending = asyncio.ensure_future(upstream.send("POST", b"/", [], b"{}"))
        await asyncio.sleep(0.1)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert upstream.open == 0 and not upstream.idle


async def test_a_connection_the_server_says_it_will_close_is_not_reused() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok")
        await asyncio.sleep(1)

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        assert await read_all(await upstream.send("GET", b"/", [], b"")) == b"ok"
        assert upstream.open == 0
        await upstream.aclose()


async def test_requests_beyond_the_connection_cap_wait_their_turn() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await asyncio.sleep(0.1)
            writer.write(OK)

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin, max_connections=1, connect_timeout=5)
        bodies = await asyncio.gather(*(upstream.send("GET", b"/", [], b"") for _ in range(3)))
        assert [await read_all(body) for body in bodies] == [b"ok"] * 3
        assert upstream.open == 1
        impatient = Http1Upstream(origin, max_connections=1, connect_timeout=0.05)
        first = asyncio.ensure_future(impatient.send("GET", b"/", [], b""))
        await asyncio.sleep(0.02)  # the first has the one connection
        with pytest.raises(UpstreamTimeout, match=r"all 1 connections .* stayed busy for 0\.05 s"):
            await impatient.send("GET", b"/", [], b"")
        await read_all(await first)
        for client in (upstream, impatient):
            await client.aclose()


# Idle connections the server closes

async def test_an_idle_connection_the_server_closed_is_dropped() -> None:
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await read_request(reader)
        writer.write(OK)
        await asyncio.sleep(0.05)
        writer.close()  # the server's keep-alive timeout, shorter than ours

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        assert await read_all(await upstream.send("GET", b"/", [], b"")) == b"ok"
        await asyncio.sleep(0.2)
        assert upstream.open == 0 and not upstream.idle
        assert await read_all(await upstream.send("GET", b"/", [], b"")) == b"ok"
        assert len(connections) == 2
        await upstream.aclose()


async def test_a_request_meeting_a_closing_connection_is_sent_again_on_a_new_one() -> None:
    requests = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(OK)
        requests.append(await read_request(reader))
        writer.close()  # closes as the second request arrives: the race a keep-alive timeout makes

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        for _ in range(2):
            assert await read_all(await upstream.send("POST", b"/", [], b"{}")) == b"ok"
        assert len(requests) == 3  # the first, the second (lost), the second again
        await upstream.aclose()


async def test_a_streamed_body_is_never_sent_twice() -> None:
    posts = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            if request.startswith(b"POST"):
                posts.append(request)
                writer.close()  # dropped without an answer
                return
            writer.write(OK)

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        await read_all(await upstream.send("GET", b"/", [], b""))  # a pooled connection a retry could use
        with pytest.raises(UpstreamError, match="closed the connection before responding"):
            await upstream.send("POST", b"/", [(b"content-length", b"2")], chunks(b"{}"))
        assert len(posts) == 1
        await upstream.aclose()


async def test_a_request_the_upstream_worked_on_before_dropping_it_is_not_sent_again() -> None:
    posts = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            if request.startswith(b"POST"):
                posts.append(request)
                await asyncio.sleep(0.5)  # generating...
                writer.close()  # ...then the upstream dies
                return
            writer.write(OK)

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin)
        await read_all(await upstream.send("GET", b"/", [], b""))
        with pytest.raises(UpstreamError):
            await upstream.send("POST", b"/", [(b"content-length", b"2")], b"{}")
        assert len(posts) == 1  # sending it again would have billed it twice
        await upstream.aclose()


async def test_idle_connections_expire() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(OK)

    async with raw_server(handle) as origin:
        upstream = Http1Upstream(origin, keepalive_expiry=0.1)
        await read_all(await upstream.send("GET", b"/", [], b""))
        assert upstream.open == 1
        await asyncio.sleep(0.3)
        assert upstream.open == 0 and not upstream.idle
        await upstream.aclose()


# TLS

async def test_https_with_a_verified_certificate() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await read_request(reader):
            assert head.startswith(b"GET /secure HTTP/1.1\r\nhost: 127.0.0.1:")
            writer.write(OK)
        writer.close()

    async with raw_server(handle, tls=server_context) as origin:
        upstream = Http1Upstream(origin, ssl_context=client_context)
        for _ in range(2):
            assert await read_all(await upstream.send("GET", b"/secure", [], b"")) == b"ok"
        assert upstream.open == 1
        await upstream.aclose()
        stranger = Http1Upstream(origin)  # the system's trust store does not know this CA
        with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.send("GET", b"/secure", [], b"")
