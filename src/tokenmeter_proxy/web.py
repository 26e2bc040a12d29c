"""What every admin endpoint module shares: JSON responses with exact decimals, and parameter
parsing that turns any bad value into a 4xx naming the parameter."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import BadRequest
from .pricing import money_text


class JSONResponse(Response):
    """JSON with exact decimals (written as numbers, never through a float) and UTC times."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_encode, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(money_text(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")


def int_param(request: Request, name: str, *, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {text!r}", param=name) from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadRequest(f"{name} must be {bounds}, got {value}", param=name)
    return value


def text_param(request: Request, name: str) -> str | None:
    """A text parameter, None when absent or empty."""
    text = request.query_params.get(name)
    return checked_text(text, name) if text else None


def checked_text(text: str, name: str) -> str:
    if "\x00" in text or len(text) > 1024:
        raise BadRequest(f"{name} must be printable text of at most 1024 characters", param=name)
    return text


def time_param(request: Request, name: str) -> dt.datetime | None:
    text = text_param(request, name)
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        moment = moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{name} must be an ISO 8601 date or time, such as 2026-11-25 or 2026-11-25T14:00:00Z; got {text!r}",
            param=name,
        ) from None
    return moment


def json_object(raw: bytes, expected: str) -> dict[str, Any]:
    """A request body that must be a JSON object; else a 400 saying `expected`."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object{expected}")
    return body
