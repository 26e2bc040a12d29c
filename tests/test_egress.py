"""Egress: the upstream client through a forward proxy (a CONNECT tunnel to an https origin,
absolute-form requests to an http one), NO_PROXY, and extra certificate authorities. First with
small in-test proxies, then through Debian's tinyproxy, then end to end: `tokenmeter-proxy serve`,
tinyproxy and a TLS fake upstream, driven by the official openai client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import openai
import pytest
import trustme
import uvicorn

from conftest import free_port, serve_in_thread
from fake_upstream import FakeUpstream
from processes import KEY, Proxy
from test_http1 import OK, raw_server, read_all, read_request
from tokenmeter_proxy.alerts import MODEL_UNPRICED, Alert
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.errors import UpstreamError, UpstreamTimeout
from tokenmeter_proxy.http1 import Http1Upstream
from tokenmeter_proxy.http1_tunnel import ForwardProxy
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.outbox import OutboxStore
from tokenmeter_proxy.types import utc_now
from tokenmeter_proxy.upstream import create_upstream, forward_proxy
from tokenmeter_proxy.webhooks import Webhooks
from webhook_receiver import SECRET, receiver

TINYPROXY = Path("/usr/bin/tinyproxy")
needs_tinyproxy = pytest.mark.skipif(not TINYPROXY.exists(), reason="the forward proxy tests need Debian's "
                                     "tinyproxy at /usr/bin/tinyproxy (apt-get install tinyproxy; .ci/run installs it)")
PROXY_USER, PROXY_PASSWORD = "alice", "s3cret"


@pytest.fixture(params=[("asyncio", {}), ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Each async test on both loops: the proxy runs on uvloop, whose socket calls differ."""
    return request.param  # type: ignore[no-any-return]


@dataclass
class Authority:
    """A private certificate authority, the certificate it issued for localhost, and those as files."""

    ca: trustme.CA
    server: ssl.SSLContext  # serves the certificate
    client: ssl.SSLContext  # trusts the authority
    ca_file: Path
    cert_file: Path  # the server's key and certificate chain


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    ca = trustme.CA()
    certificate = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    directory = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    certificate.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    return Authority(ca, server, client, directory / "ca.pem", directory / "server.pem")


class FakeProxy:
    """A small forward proxy. It relays CONNECT tunnels to 127.0.0.1 whatever host they name (so a
    test sees that the client did not look the origin up itself), answers absolute-form requests
    itself, or refuses everything with `refuse` (`b"403 Forbidden"`). `heads` keeps what it was sent."""

    def __init__(self, refuse: bytes | None = None, silent: bool = False) -> None:
        self.refuse = refuse
        self.silent = silent
        self.heads: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await read_request(reader):
            self.heads.append(head)
            if self.silent:
                await asyncio.sleep(5)
            elif self.refuse is not None:
                writer.write(b"HTTP/1.1 " + self.refuse + b"\r\ncontent-length: 4\r\n\r\nnope")
                return
            elif head.startswith(b"CONNECT "):
                await self._tunnel(int(head.split(b" ")[1].rsplit(b":", 1)[1]), reader, writer)
                return
            else:
                writer.write(OK)

    async def _tunnel(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        origin_reader, origin_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(_pipe(reader, origin_writer), _pipe(origin_reader, writer))
        finally:
            origin_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def tls_origin(authority: Authority) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TLS origin answering `ok` to every request; yields its port and the request heads."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await read_request(reader):
            heads.append(head)
            writer.write(OK)

    async with raw_server(handle, tls=authority.server) as origin:
        yield int(origin.rsplit(":", 1)[1]), heads


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# Through a proxy, in-process

@pytest.mark.anyio
async def test_an_https_origin_is_reached_through_one_connect_tunnel(authority: Authority) -> None:
    proxy = FakeProxy()
    async with tls_origin(authority) as (port, origin_heads), raw_server(proxy) as proxy_url:
        upstream = Http1Upstream(f"https://localhost:{port}", ssl_context=authority.client,
                                 proxy=ForwardProxy("127.0.0.1", port_of(proxy_url), "HTTPS_PROXY"))
        for _ in range(2):
            assert await read_all(await upstream.send("GET", b"/v1/models", [], b"")) == b"ok"
        assert proxy.heads == [b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (port, port)]
        assert all(head.startswith(b"GET /v1/models HTTP/1.1\r\nhost: localhost:%d\r\n" % port)
                   for head in origin_heads) and len(origin_heads) == 2  # TLS inside, origin-form, one tunnel
        await upstream.aclose()


@pytest.mark.anyio
async def test_proxy_credentials_go_in_proxy_authorization_and_nowhere_else(authority: Authority) -> None:
    proxy = FakeProxy()
    async with tls_origin(authority) as (port, origin_heads), raw_server(proxy) as proxy_url:
        forward = ForwardProxy.from_url(f"http://{PROXY_USER}:p%40ss@127.0.0.1:{port_of(proxy_url)}",
                                        variable="HTTPS_PROXY")
        upstream = Http1Upstream(f"https://localhost:{port}", ssl_context=authority.client, proxy=forward)
        assert await read_all(await upstream.send("GET", b"/", [], b"")) == b"ok"
        await upstream.aclose()
    credentials = base64.b64encode(b"alice:p@ss")  # percent-decoded, as curl does
    assert b"\r\nProxy-Authorization: Basic " + credentials + b"\r\n" in proxy.heads[0]
    assert b"proxy-authorization" not in origin_heads[0].lower()  # the origin never sees them
    assert "p@ss" not in repr(forward) and "p%40ss" not in repr(forward) and credentials.decode() not in repr(forward)


@pytest.mark.anyio
async def test_an_http_origin_is_asked_in_absolute_form_on_a_connection_to_the_proxy() -> None:
    proxy = FakeProxy()
    async with raw_server(proxy) as proxy_url:
        forward = ForwardProxy.from_url(f"http://bob:pw@{proxy_url.removeprefix('http://')}", variable="HTTP_PROXY")
        upstream = Http1Upstream("http://llm.internal:8080", proxy=forward)
        for _ in range(2):
            response = await upstream.send("POST", b"/v1/chat/completions", [(b"x-session-id", b"s")], b"{}")
            assert await read_all(response) == b"ok"
        assert upstream.open == 1
        await upstream.aclose()
    assert proxy.heads == [
        b"POST http://llm.internal:8080/v1/chat/completions HTTP/1.1\r\nhost: llm.internal:8080\r\n"
        b"proxy-authorization: Basic Ym9iOnB3\r\nx-session-id: s\r\ncontent-length: 2\r\n\r\n"] * 2


@pytest.mark.anyio
@pytest.mark.parametrize(("refusal", "hint"), [
    (b"403 Forbidden", "its rules forbid this destination or port; ask its operator to allow CONNECT to localhost:443"),
    (b"407 Proxy Authentication Required", "check the user and password in HTTPS_PROXY"),
    (b"502 Bad Gateway", "it could not reach localhost:443 itself"),
])
async def test_a_refused_connect_says_why_and_what_to_do(refusal: bytes, hint: str) -> None:
    async with raw_server(FakeProxy(refuse=refusal)) as proxy_url:
        forward = ForwardProxy.from_url(f"http://alice:{PROXY_PASSWORD}@{proxy_url.removeprefix('http://')}",
                                        variable="HTTPS_PROXY")
        upstream = Http1Upstream("https://localhost", proxy=forward)
        with pytest.raises(UpstreamError) as caught:
            await upstream.send("GET", b"/", [], b"")
        assert upstream.open == 0
    message = str(caught.value)
    assert message.startswith(f"the forward proxy 127.0.0.1:{port_of(proxy_url)} (HTTPS_PROXY) refused to open a "
                              f"tunnel to localhost:443: {refusal.decode()}; {hint}"), message
    assert PROXY_PASSWORD not in message


@pytest.mark.anyio
@pytest.mark.parametrize("origin", ["https://localhost", "http://localhost"])
async def test_an_unreachable_proxy_is_named(origin: str) -> None:
    port = free_port()
    variable = "HTTPS_PROXY" if origin.startswith("https") else "HTTP_PROXY"
    upstream = Http1Upstream(origin, proxy=ForwardProxy.from_url(f"http://u:{PROXY_PASSWORD}@127.0.0.1:{port}",
                                                                 variable=variable))
    with pytest.raises(UpstreamError, match=rf"cannot reach the forward proxy 127\.0\.0\.1:{port} \({variable}\): "
                       r"ConnectionRefusedError.*check that it runs there, or correct") as caught:
        await upstream.send("GET", b"/", [], b"")
    assert PROXY_PASSWORD not in str(caught.value) and upstream.open == 0


@pytest.mark.anyio
async def test_the_connect_timeout_covers_the_proxys_handshake() -> None:
    async with raw_server(FakeProxy(silent=True)) as proxy_url:
        upstream = Http1Upstream("https://localhost", connect_timeout=0.2,
                                 proxy=ForwardProxy("127.0.0.1", port_of(proxy_url), "HTTPS_PROXY"))
        with pytest.raises(UpstreamTimeout, match=r"no connection to https://localhost through the forward proxy "
                           rf"127\.0\.0\.1:{port_of(proxy_url)} \(HTTPS_PROXY\) within 0\.2 s"):
            await upstream.send("GET", b"/", [], b"")
        assert upstream.open == 0


@pytest.mark.anyio
@pytest.mark.parametrize("proxied", [True, False], ids=["tunnel", "direct"])
async def test_an_unknown_authority_is_explained_and_the_ca_bundle_fixes_it(authority: Authority,
                                                                            proxied: bool) -> None:
    async with tls_origin(authority) as (port, _), raw_server(FakeProxy()) as proxy_url:
        settings = Settings(https_proxy=proxy_url if proxied else None)
        origin = f"https://localhost:{port}"
        stranger = create_upstream(settings, origin)  # the system's authorities only
        with pytest.raises(UpstreamError, match=r"the certificate of https://localhost:\d+ could not be verified "
                           r"\(unable to get local issuer certificate, CERTIFICATE_VERIFY_FAILED\): if a private "
                           r"certificate authority signed it .* name that authority's PEM file in "
                           r"TOKENMETER_UPSTREAM_CA_BUNDLE"):
            await stranger.send("GET", b"/", [], b"")
        trusting = create_upstream(replace(settings, upstream_ca_bundle=authority.ca_file), origin)
        response = await trusting.send("GET", b"/", [], b"")
        assert [chunk async for chunk in response] == [b"ok"]
        await response.aclose()
        for client in (stranger, trusting):
            await client.aclose()


@pytest.mark.anyio
async def test_a_certificate_for_another_name_is_explained(authority: Authority) -> None:
    async with tls_origin(authority) as (port, _), raw_server(FakeProxy()) as proxy_url:
        # the fake proxy takes elsewhere.test to 127.0.0.1, where the certificate is for localhost
        upstream = Http1Upstream(f"https://elsewhere.test:{port}", ssl_context=authority.client,
                                 proxy=ForwardProxy("127.0.0.1", port_of(proxy_url), "HTTPS_PROXY"))
        with pytest.raises(UpstreamError, match=r"the certificate of https://elsewhere\.test:\d+ could not be "
                           r"verified \(Hostname mismatch.*\): it was issued for another name: check the host"):
            await upstream.send("GET", b"/", [], b"")
        assert upstream.open == 0


# Which proxy, if any

def test_the_proxy_follows_the_scheme_and_no_proxy_bypasses_it() -> None:
    settings = Settings(https_proxy=f"http://u:{PROXY_PASSWORD}@secure-proxy:3128", http_proxy="plain-proxy:8080",
                        no_proxy="localhost, .corp.example,10.0.0.1:8443")
    https = forward_proxy(settings, "https://api.openai.com")
    assert https is not None and (https.address, https.variable) == ("secure-proxy:3128", "HTTPS_PROXY")
    plain = forward_proxy(settings, "http://ollama:11434")
    assert plain is not None and (plain.address, plain.variable, plain.authorization) == (
        "plain-proxy:8080", "HTTP_PROXY", None)
    for origin in ("https://localhost:8443", "http://LOCALHOST", "https://llm.corp.example", "https://corp.example",
                   "https://10.0.0.1:8443"):
        assert forward_proxy(settings, origin) is None, origin
    for origin in ("https://10.0.0.1", "https://notcorp.example", "https://localhost.example"):
        assert forward_proxy(settings, origin) is not None, origin
    assert forward_proxy(replace(settings, no_proxy="*"), "https://api.openai.com") is None
    assert forward_proxy(Settings(), "https://api.openai.com") is None
    assert PROXY_PASSWORD not in repr(settings)


def test_create_upstream_gives_the_pool_its_proxy() -> None:
    settings = Settings(https_proxy="http://proxy.example:3128", no_proxy="internal")
    tunnelled = create_upstream(settings, "https://api.openai.com")
    assert isinstance(tunnelled, Http1Upstream) and tunnelled.tunnel and tunnelled.proxy is not None
    direct = create_upstream(settings, "https://llm.internal:8443")
    assert isinstance(direct, Http1Upstream) and direct.proxy is None and direct.ssl_context is not None


# Through Debian's tinyproxy

@dataclass
class Tinyproxy:
    """A tinyproxy process of our own; `url` holds its credentials."""

    url: str
    address: str
    log: Path

    def logged(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def serve_tls_in_thread(app: Any, cert_file: Path) -> Iterator[int]:
    """A real uvicorn server for `app` over TLS on a free port of 127.0.0.1, in a thread; yields the port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           ssl_certfile=str(cert_file)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def tls_upstream(authority: Authority) -> Iterator[tuple[FakeUpstream, int]]:
    """The fake OpenAI upstream over TLS, its certificate issued by the private authority."""
    fake = FakeUpstream()
    with serve_tls_in_thread(fake.app, authority.cert_file) as port:
        yield fake, port


@pytest.fixture(scope="module")
def plain_upstream() -> Iterator[int]:
    with serve_in_thread(FakeUpstream().app) as url:
        yield port_of(url)


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory: pytest.TempPathFactory, tls_upstream: tuple[FakeUpstream, int]) -> Iterator[Tinyproxy]:
    """tinyproxy in the foreground on a free port, wanting a password, allowing CONNECT to the TLS
    upstream's port only. Never the system's service."""
    if not TINYPROXY.exists():
        pytest.skip(needs_tinyproxy.kwargs["reason"])
    directory = tmp_path_factory.mktemp("tinyproxy")
    port = free_port()
    as_root = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""  # it refuses to stay root
    (directory / "tinyproxy.conf").write_text(
        f"{as_root}Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nLogLevel Connect\n"
        f"Allow 127.0.0.1\nConnectPort {tls_upstream[1]}\nBasicAuth {PROXY_USER} {PROXY_PASSWORD}\n")
    log = directory / "tinyproxy.log"
    with open(log, "wb") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen([str(TINYPROXY), "-d", "-c", str(directory / "tinyproxy.conf")],
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        yield Tinyproxy(f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}", f"127.0.0.1:{port}", log)
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


@needs_tinyproxy
@pytest.mark.anyio
async def test_a_tunnel_through_tinyproxy(tinyproxy: Tinyproxy, tls_upstream: tuple[FakeUpstream, int],
                                          authority: Authority) -> None:
    port = tls_upstream[1]
    upstream = Http1Upstream(f"https://localhost:{port}", ssl_context=authority.client,
                             proxy=ForwardProxy.from_url(tinyproxy.url, variable="HTTPS_PROXY"))
    for _ in range(2):
        response = await upstream.send("GET", b"/v1/models", [], b"")
        assert response.status == 200 and json.loads(await read_all(response))["data"][0]["id"] == "gpt-4o"
    await upstream.aclose()
    assert f"CONNECT localhost:{port} HTTP/1.1" in tinyproxy.logged()


@needs_tinyproxy
@pytest.mark.anyio
async def test_absolute_form_through_tinyproxy(tinyproxy: Tinyproxy, plain_upstream: int) -> None:
    upstream = Http1Upstream(f"http://localhost:{plain_upstream}",
                             proxy=ForwardProxy.from_url(tinyproxy.url, variable="HTTP_PROXY"))
    response = await upstream.send("GET", b"/v1/models?via=tinyproxy", [], b"")
    assert response.status == 200 and json.loads(await read_all(response))["data"][0]["id"] == "gpt-4o"
    await upstream.aclose()
    assert f"GET http://localhost:{plain_upstream}/v1/models?via=tinyproxy HTTP/1.1" in tinyproxy.logged()


@needs_tinyproxy
@pytest.mark.anyio
async def test_tinyproxys_refusals_are_explained(tinyproxy: Tinyproxy, tls_upstream: tuple[FakeUpstream, int]) -> None:
    anonymous = Http1Upstream(f"https://localhost:{tls_upstream[1]}",
                              proxy=ForwardProxy.from_url(tinyproxy.address, variable="HTTPS_PROXY"))
    with pytest.raises(UpstreamError, match=r"407 Proxy Authentication Required; it wants credentials: put them in "
                       r"HTTPS_PROXY as http://user:password@host:port"):
        await anonymous.send("GET", b"/v1/models", [], b"")
    elsewhere = Http1Upstream(f"https://localhost:{free_port()}",  # not a port its ConnectPort allows
                              proxy=ForwardProxy.from_url(tinyproxy.url, variable="HTTPS_PROXY"))
    with pytest.raises(UpstreamError, match=r"refused to open a tunnel to localhost:\d+: 403 Access violation; its "
                       "rules forbid") as caught:
        await elsewhere.send("GET", b"/v1/models", [], b"")
    assert PROXY_PASSWORD not in str(caught.value)


# End to end: tokenmeter-proxy serve -> tinyproxy -> the TLS upstream

def egress_environ(tinyproxy: Tinyproxy, ca_bundle: Path | None) -> dict[str, str]:
    """The proxy process's environment: both spellings, since the lowercase one wins and the
    machine running the tests may have its own."""
    environ = {"HTTPS_PROXY": tinyproxy.url, "https_proxy": tinyproxy.url, "NO_PROXY": "", "no_proxy": ""}
    if ca_bundle is not None:
        environ["TOKENMETER_UPSTREAM_CA_BUNDLE"] = str(ca_bundle)
    return environ


@needs_tinyproxy
def test_a_chat_completion_crosses_the_tunnel_and_is_metered(
        tinyproxy: Tinyproxy, tls_upstream: tuple[FakeUpstream, int], authority: Authority, tmp_path: Path) -> None:
    fake, port = tls_upstream
    logged_before = len(tinyproxy.logged())
    proxy = Proxy(tmp_path, f"https://localhost:{port}", environ=egress_environ(tinyproxy, authority.ca_file))
    try:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0)
        completion = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Session-Id": "egress-1", "x-fake-prompt-tokens": "120",
                           "x-fake-completion-tokens": "30"})
        assert completion.choices[0].message.content == "hello from fake"
        record = proxy.session("egress-1")["records"][0]
        assert (record["input_tokens"], record["output_tokens"], record["usage_source"]) == (120, 30, "upstream")
        assert fake.seen[-1]["headers"]["authorization"] == f"Bearer {KEY}"  # the client's key, inside TLS
    finally:
        assert proxy.stop() == 0
    assert f"CONNECT localhost:{port} HTTP/1.1" in tinyproxy.logged()[logged_before:]
    assert PROXY_PASSWORD not in proxy.log.read_text()


@needs_tinyproxy
def test_without_the_ca_bundle_the_client_gets_a_502_that_says_what_to_do(
        tinyproxy: Tinyproxy, tls_upstream: tuple[FakeUpstream, int], tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, f"https://localhost:{tls_upstream[1]}", environ=egress_environ(tinyproxy, None))
    try:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    finally:
        assert proxy.stop() == 0
    assert caught.value.status_code == 502
    message = caught.value.response.json()["error"]["message"]
    assert "could not be verified" in message and "TOKENMETER_UPSTREAM_CA_BUNDLE" in message, message
    assert PROXY_PASSWORD not in message and PROXY_PASSWORD not in proxy.log.read_text()


@needs_tinyproxy
@pytest.mark.anyio
async def test_alert_webhooks_go_through_the_same_forward_proxy(
        tinyproxy: Tinyproxy, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    engine = engine_from_url(sqlite_url)
    with receiver() as hooks:
        url = hooks.base + "/ok/proxied"
        sender = Webhooks([url], SECRET, OutboxStore(engine), clock=utc_now, host="test-host")
        task = asyncio.create_task(sender.run())
        try:
            await asyncio.sleep(0)
            sender.emit(Alert(MODEL_UNPRICED, {"model": "acme-1", "provider": "openai"}, key="unpriced acme-1"))
            [delivery] = await asyncio.to_thread(hooks.wait, "/ok/proxied", MODEL_UNPRICED)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            engine.dispose()
    assert "tinyproxy" in delivery["headers"]["via"]
    assert f"POST {url} HTTP/1.1" in tinyproxy.logged()
