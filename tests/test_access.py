"""access.py: the sign-in cookie, its CSRF token, widget link signatures (session and user links) and
the failure limiter, with every value tampered with, expired, or made under another admin token."""

from __future__ import annotations

import pytest

from tokenmeter_proxy.access import SESSION_SECONDS, FailureLimiter, Signer, same_origin

NOW = 1_800_000_000.0
SIGNER = Signer.from_admin_token("the-admin-token")


def flip(text: str, index: int) -> str:
    """`text` with the character at `index` changed (to another base64url character)."""
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1:]


def test_a_session_cookie_is_valid_until_it_expires() -> None:
    cookie = SIGNER.session_cookie(NOW)
    assert SIGNER.valid_session(cookie, NOW)
    assert SIGNER.valid_session(cookie, NOW + SESSION_SECONDS - 1)
    assert not SIGNER.valid_session(cookie, NOW + SESSION_SECONDS)


def test_a_session_cookie_holds_no_token_and_differs_at_every_sign_in() -> None:
    first, second = SIGNER.session_cookie(NOW), SIGNER.session_cookie(NOW)
    assert first != second
    assert "the-admin-token" not in first and first.count(".") == 2


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_cookie_tampered_with_anywhere_is_refused(part: int) -> None:
    cookie = SIGNER.session_cookie(NOW)
    pieces = cookie.split(".")
    pieces[part] = str(int(pieces[0]) + 3600) if part == 0 else flip(pieces[part], 0)
    assert not SIGNER.valid_session(".".join(pieces), NOW)


@pytest.mark.parametrize("value", [None, "", ".", "..", "1.2", "x.y.z", "9" * 300, "1900000000..abc"])
def test_garbage_cookies_are_refused(value: str | None) -> None:
    assert not SIGNER.valid_session(value, NOW)


def test_a_cookie_made_under_another_admin_token_is_refused() -> None:
    assert not Signer.from_admin_token("another-token").valid_session(SIGNER.session_cookie(NOW), NOW)


def test_the_csrf_token_is_bound_to_its_cookie() -> None:
    cookie, other = SIGNER.session_cookie(NOW), SIGNER.session_cookie(NOW)
    token = SIGNER.csrf_token(cookie)
    assert SIGNER.valid_csrf(cookie, token)
    assert not SIGNER.valid_csrf(other, token)
    assert not SIGNER.valid_csrf(cookie, None) and not SIGNER.valid_csrf(cookie, "")
    assert token != SIGNER.session_cookie(NOW).rpartition(".")[2]  # its own key: no cookie MAC passes for it


def test_a_widget_signature_opens_its_session_until_it_expires() -> None:
    expires = int(NOW) + 60
    signature = SIGNER.widget_signature("chat-42", expires)
    assert SIGNER.valid_widget("chat-42", str(expires), signature, NOW)
    assert SIGNER.valid_widget("chat-42", str(expires), signature, expires - 0.5)
    assert not SIGNER.valid_widget("chat-42", str(expires), signature, expires)


def test_a_widget_signature_is_refused_for_another_session_or_expiry() -> None:
    expires = int(NOW) + 60
    signature = SIGNER.widget_signature("chat-42", expires)
    assert not SIGNER.valid_widget("chat-43", str(expires), signature, NOW)
    assert not SIGNER.valid_widget("chat-4", str(expires), signature, NOW)
    assert not SIGNER.valid_widget("chat-42", str(expires + 3600), signature, NOW)
    # the length prefix: ("a:1", 2) and ("a", "1:2"-ish) never sign the same message
    assert SIGNER.widget_signature("a:1", 2) != SIGNER.widget_signature("a", 12)


@pytest.mark.parametrize("index", [0, 1, 21, 42])
def test_a_widget_signature_changed_in_any_character_is_refused(index: int) -> None:
    expires = int(NOW) + 60
    signature = SIGNER.widget_signature("chat-42", expires)
    assert len(signature) == 43
    assert not SIGNER.valid_widget("chat-42", str(expires), flip(signature, index), NOW)


@pytest.mark.parametrize(("expires", "signature"), [
    (None, "x"), ("", "x"), ("12a", "x"), ("-5", "x"), ("9" * 13, "x"), ("1900000000", None), ("1900000000", ""),
    ("1900000000", "é" * 43)])
def test_malformed_widget_parameters_are_refused(expires: str | None, signature: str | None) -> None:
    assert not SIGNER.valid_widget("chat-42", expires, signature, NOW)


def test_a_widget_link_of_another_admin_token_is_refused() -> None:
    expires = int(NOW) + 60
    signature = Signer.from_admin_token("another-token").widget_signature("chat-42", expires)
    assert not SIGNER.valid_widget("chat-42", str(expires), signature, NOW)


def test_the_token_is_compared_whole() -> None:
    assert SIGNER.token_matches("the-admin-token") and SIGNER.token_matches(b"the-admin-token")
    assert not SIGNER.token_matches("the-admin-toke") and not SIGNER.token_matches("the-admin-token ")
    assert "the-admin-token" not in repr(SIGNER)


def test_the_limiter_locks_an_address_after_its_failures() -> None:
    limiter = FailureLimiter(max_failures=3)
    for _ in range(3):
        assert not limiter.locked("10.0.0.1")
        limiter.failed("10.0.0.1")
    assert limiter.locked("10.0.0.1") and not limiter.locked("10.0.0.2")


@pytest.mark.parametrize(("headers", "same"), [
    ({}, True),
    ({"sec-fetch-site": "same-origin"}, True),
    ({"sec-fetch-site": "none"}, True),
    ({"sec-fetch-site": "same-site"}, False),
    ({"sec-fetch-site": "cross-site", "origin": "http://proxy.test", "host": "proxy.test"}, False),
    ({"origin": "http://proxy.test", "host": "proxy.test"}, True),
    ({"origin": "https://evil.example", "host": "proxy.test"}, False),
    ({"origin": "null", "host": "proxy.test"}, False),
])
def test_same_origin_follows_sec_fetch_site_then_origin(headers: dict[str, str], same: bool) -> None:
    assert same_origin(headers) is same


def test_a_user_widget_signature_opens_that_user_and_never_a_session_of_the_same_id() -> None:
    expires = int(NOW) + 60
    for_user = SIGNER.widget_signature("alice", expires, kind="user")
    for_session = SIGNER.widget_signature("alice", expires)
    assert for_user != for_session  # each kind has its own key
    assert SIGNER.valid_widget("alice", str(expires), for_user, NOW, kind="user")
    assert not SIGNER.valid_widget("alice", str(expires), for_user, NOW)  # replayed as a session link
    assert not SIGNER.valid_widget("alice", str(expires), for_session, NOW, kind="user")  # and the other way
    assert not SIGNER.valid_widget("bob", str(expires), for_user, NOW, kind="user")
    assert not SIGNER.valid_widget("alice", str(expires), for_user, expires, kind="user")  # expired
    assert not SIGNER.valid_widget("alice", str(expires + 1), for_user, NOW, kind="user")
    assert not Signer.from_admin_token("another-token").valid_widget("alice", str(expires), for_user, NOW,
                                                                     kind="user")


@pytest.mark.parametrize("index", [0, 21, 42])
def test_a_user_widget_signature_changed_in_any_character_is_refused(index: int) -> None:
    expires = int(NOW) + 60
    signature = SIGNER.widget_signature("alice", expires, kind="user")
    assert not SIGNER.valid_widget("alice", str(expires), flip(signature, index), NOW, kind="user")
