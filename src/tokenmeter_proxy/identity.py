"""Who a request is for, as stored: session and user ids cleaned of what a database or a log
should not hold, and user ids optionally pseudonymised. (Keys are hashed by `providers.base.key_id`.)"""

from __future__ import annotations

import hashlib
import hmac
import re

_MAX_IDENTITY_CHARS = 256
_PSEUDONYM = re.compile(r"u_[0-9a-f]{32}")


def clean_identity(value: str) -> str | None:
    """A session or user id fit to store: control characters dropped, at most 256 characters."""
    if value.isprintable() and len(value) <= _MAX_IDENTITY_CHARS:
        return value.strip() or None
    cleaned = "".join(ch for ch in value if ch.isprintable())[:_MAX_IDENTITY_CHARS].strip()
    return cleaned or None


def clean_model(value: str | None) -> str | None:
    """A model name fit to store: whatever a client or server sent, printable and at most 256
    characters, so no record is ever refused by the database for its model."""
    return None if value is None else clean_identity(value)


class UserIds:
    """How user ids are stored: as sent, or (GDPR) pseudonymised with a keyed hash, so the
    database never holds who the user is, while the same user still adds up."""

    def __init__(self, *, secret: str | None) -> None:
        self.secret = secret.encode() if secret else None

    def stored(self, user_id: str | None) -> str | None:
        """The id to store (and to query and budget by) for the id a client sent. An id already in
        the stored form is kept: what the API lists (a budget's subject, say) can be sent back."""
        if user_id is None or self.secret is None or _PSEUDONYM.fullmatch(user_id):
            return user_id
        return "u_" + hmac.new(self.secret, user_id.encode(), hashlib.sha256).hexdigest()[:32]
