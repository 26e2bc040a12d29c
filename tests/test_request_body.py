"""Reading requests: which endpoint, which model, streamed or not, and who asked."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from tokenmeter_proxy.request_body import (
    api_key_id,
    clean_identity,
    metered_endpoint,
    read_request,
    with_stream_usage,
)


@pytest.mark.parametrize(("method", "path", "endpoint"), [
    ("POST", "/v1/chat/completions", "chat/completions"),
    ("POST", "/v1/completions", "completions"),
    ("POST", "/v1/embeddings", "embeddings"),
    ("POST", "/v1/responses", "responses"),
    ("POST", "/openai/deployments/gpt4o/chat/completions", "chat/completions"),
    ("GET", "/v1/chat/completions", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/responses/resp_123/cancel", None),
    ("POST", "/v1/files", None),
])
def test_metered_endpoints_are_known_by_method_and_path(method: str, path: str, endpoint: str | None) -> None:
    assert metered_endpoint(method, path) == endpoint


def test_the_facts_metering_needs_are_read_from_the_body() -> None:
    facts = read_request("chat/completions", orjson.dumps({
        "model": "gpt-4o", "stream": True, "user": "u-9", "max_completion_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }))
    assert (facts.model, facts.stream, facts.user, facts.max_output_tokens) == ("gpt-4o", True, "u-9", 64)
    assert facts.needs_usage_injection


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'"text"', b"\xff\xfe", b'{"model": 5, "stream": "yes"}'])
def test_a_body_of_any_shape_never_raises(raw: bytes) -> None:
    facts = read_request("chat/completions", raw)
    assert facts.model is None and not facts.stream


def test_a_client_that_asks_for_usage_needs_no_injection() -> None:
    raw = orjson.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": True}})
    assert not read_request("chat/completions", raw).needs_usage_injection
    assert not read_request("responses", orjson.dumps({"model": "m", "stream": True})).needs_usage_injection
    assert not read_request("chat/completions", orjson.dumps({"model": "m"})).needs_usage_injection


def test_usage_is_asked_for_by_splicing_the_clients_bytes() -> None:
    raw = b'  {"model": "gpt-4o",\n "stream": true, "messages": []}'
    injected = with_stream_usage(raw, read_request("chat/completions", raw))
    assert injected.endswith(raw[raw.index(b"{") + 1 :])
    assert orjson.loads(injected) == {"stream_options": {"include_usage": True}, "model": "gpt-4o", "stream": True,
                                      "messages": []}


def test_existing_stream_options_are_kept_when_usage_is_asked_for() -> None:
    raw = orjson.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": False, "x": 1}})
    injected = orjson.loads(with_stream_usage(raw, read_request("chat/completions", raw)))
    assert injected["stream_options"] == {"include_usage": True, "x": 1}


def test_identities_are_cleaned_before_they_are_stored() -> None:
    assert clean_identity("session-42") == "session-42"
    assert clean_identity("a\x00b\nc") == "abc"
    assert clean_identity("x" * 10_000) == "x" * 256
    assert clean_identity("   ") is None


def test_the_api_key_id_is_a_hash_prefix_never_the_key() -> None:
    key = "sk-secret-123"
    assert api_key_id(f"Bearer {key}") == hashlib.sha256(key.encode()).hexdigest()[:16]
    assert api_key_id(None) is None
    assert api_key_id("Basic dXNlcjpwYXNz") is None
