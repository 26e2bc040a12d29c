"""Who a request is for, as stored: cleaned identities."""

from __future__ import annotations

from tokenmeter_proxy.identity import clean_identity


def test_identities_are_cleaned_before_they_are_stored() -> None:
    assert clean_identity("session-42") == "session-42"
    assert clean_identity("a\x00b\nc") == "abc"
    assert clean_identity("x" * 10_000) == "x" * 256
    assert clean_identity("   ") is None
