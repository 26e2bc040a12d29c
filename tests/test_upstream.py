"""Upstream rules: which paths may be forwarded, which headers cross, how failures read."""

from __future__ import annotations

import httpx
import pytest

from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.errors import UpstreamError, UpstreamTimeout
from tokenmeter_proxy.http1 import Http1Upstream
from tokenmeter_proxy.upstream import (
    HttpxUpstream,
    create_upstream,
    error_response,
    path_below,
    request_headers,
    response_headers,
)


@pytest.mark.parametrize(("raw_path", "rest"), [
    (b"/v1/chat/completions", b"/chat/completions"),
    (b"/v1", b""),
    (b"/v1/files/file-abc/content", b"/files/file-abc/content"),
    (b"/v1/files/a%2Fb", b"/files/a%2Fb"),          # an encoded slash stays inside its segment
    (b"/v1/models/ft:gpt-4o:org::v1.2", b"/models/ft:gpt-4o:org::v1.2"),
    (b"/v1%2F@evil.example/steal", None),            # would have become userinfo of another host
    (b"/v1@evil.example/steal", None),
    (b"/v10/models", None),
    (b"/v1/../../admin", None),
    (b"/v1/%2e%2e/%2E%2E/admin", None),
    (b"/v1/models/..%2F..%2Fadmin", None),
    (b"/v1/./models", None),
    (b"/v1/..\\admin", None),
])
def test_only_paths_below_the_prefix_without_dot_segments_are_forwarded(raw_path: bytes,
                                                                        rest: bytes | None) -> None:
    assert path_below(raw_path, b"/v1") == rest


def test_hop_by_hop_headers_and_those_connection_names_stay_behind() -> None:
    headers = [(b"host", b"proxy"), (b"connection", b"keep-alive, x-private"), (b"x-private", b"1"),
               (b"keep-alive", b"timeout=5"), (b"transfer-encoding", b"chunked"), (b"content-length", b"9"),
               (b"authorization", b"Bearer sk-client"), (b"x-session-id", b"s")]
    assert request_headers(headers) == [(b"authorization", b"Bearer sk-client"), (b"x-session-id", b"s")]
    assert response_headers([(b"Connection", b"close"), (b"content-type", b"text/event-stream")]) == [
        (b"content-type", b"text/event-stream")]


def test_failures_before_the_first_byte_read_like_openai_errors() -> None:
    assert error_response(UpstreamTimeout("slow"))[0] == 504
    status, body = error_response(UpstreamError("refused"))
    assert status == 502 and body["error"]["code"] == "upstream_unreachable" and "refused" in body["error"]["message"]


def test_each_origin_gets_its_own_client() -> None:
    faked = create_upstream(Settings(), "http://llm.internal:8000", httpx.MockTransport(lambda _: httpx.Response(200)))
    assert isinstance(faked, HttpxUpstream) and faked.origin == "http://llm.internal:8000"
    real = create_upstream(Settings(upstream="https://api.openai.com/v1"), "http://llm.internal:8000")
    assert isinstance(real, Http1Upstream) and real.origin == "http://llm.internal:8000" and real.ssl_context is None
