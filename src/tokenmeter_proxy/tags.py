"""Tags: what a request's money was spent on, sent as `X-TokenMeter-Tags: feature=summarize,
team=search`. Pure: parsing and checking; records, stats and budgets carry the result.

At most 10 tags; names `[a-z0-9_.-]{1,64}`; values 1 to 128 printable characters without `,`;
whitespace around names and values is trimmed; a later duplicate name wins; invalid ones are
dropped (and said why), never refused; past 10, the first 10 valid ones are kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import BadRequest

HEADER = b"x-tokenmeter-tags"
MAX_TAGS = 10
MAX_VALUE_CHARS = 128
NAME = re.compile(r"[a-z0-9_.-]{1,64}")


def parse_tags(text: str) -> tuple[dict[str, str], list[str]]:
    """The valid tags of a header value, and why each other one was dropped."""
    tags: dict[str, str] = {}
    dropped: list[str] = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, equals, value = (part.strip() for part in item.partition("="))
        problem = tag_problem(name, value) if equals else "is not name=value"
        if problem is not None:
            dropped.append(f"{item.strip()[:80]!r} {problem}")
        elif name in tags or len(tags) < MAX_TAGS:
            tags[name] = value
        else:
            dropped.append(f"{name!r}: only the first {MAX_TAGS} tags are kept")
    return tags, dropped


def tag_problem(name: str, value: str) -> str | None:
    """What is wrong with a tag, or None."""
    if not NAME.fullmatch(name):
        return "has a name that is not 1-64 of a-z, 0-9, '_', '.', '-'"
    if not value or len(value) > MAX_VALUE_CHARS or not value.isprintable() or "," in value:
        return f"has a value that is not 1-{MAX_VALUE_CHARS} printable characters"
    return None


def checked_tags(value: object, *, param: str = "tags") -> dict[str, str]:
    """Tags given as a JSON object (`POST /api/usage/log`); `BadRequest` naming the first fault."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(item, str) for pair in value.items() for item in pair):
        raise BadRequest(f"{param} must be an object of names to text values", param=param)
    if len(value) > MAX_TAGS:
        raise BadRequest(f"{param}: at most {MAX_TAGS} tags", param=param)
    for name, text in value.items():
        problem = tag_problem(name, text.strip())
        if problem is not None:
            raise BadRequest(f"{param}: {name!r} {problem}", param=param)
    return {name: text.strip() for name, text in value.items()}


def tag_filter(text: str, *, param: str = "tag") -> tuple[str, str]:
    """`name:value` (stats' `tag=` and a tag budget's subject) as (name, value); `BadRequest` otherwise."""
    name, colon, value = text.partition(":")
    if not colon or tag_problem(name, value) is not None:
        raise BadRequest(f"{param} must be name:value, such as team:search; got {text!r}", param=param)
    return name, value


def tag_name(text: str, *, param: str = "by_tag") -> str:
    """A tag name (stats' `by_tag=`); `BadRequest` otherwise."""
    if not NAME.fullmatch(text):
        raise BadRequest(f"{param} must be a tag name (1-64 of a-z, 0-9, '_', '.', '-'); got {text!r}", param=param)
    return text
