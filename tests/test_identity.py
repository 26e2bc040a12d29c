"""Who a request is for, as stored: cleaned identities."""

from __future__ import annotations

from tokenmeter_proxy.identity import UserIds, clean_identity


def test_identities_are_cleaned_before_they_are_stored() -> None:
    assert clean_identity("session-42") == "session-42"
    assert clean_identity("a\x00b\nc") == "abc"
    assert clean_identity("x" * 10_000) == "x" * 256
    assert clean_identity("   ") is None


def test_user_ids_are_pseudonymised_once() -> None:
    hashed = UserIds(secret="pepper")
    alice = hashed.stored("alice@example.com")
    assert alice is not None and alice.startswith("u_") and len(alice) == 34
    assert hashed.stored("alice@example.com") == alice != UserIds(secret="salt").stored("alice@example.com")
    assert hashed.stored(alice) == alice  # a listed id sent back (a budget edited in the dashboard) stays itself
    assert UserIds(secret=None).stored("alice@example.com") == "alice@example.com"
