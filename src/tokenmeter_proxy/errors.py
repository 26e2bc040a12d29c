"""Our exceptions, and the OpenAI-shaped error bodies clients understand.

    TokenMeterError
    ├── ConfigError        a setting is missing or malformed (fail fast at startup)
    ├── FileRefused        a configuration file is unusable; carries line-precise messages
    │   ├── PricingError       the pricing file
    │   └── RoutesError        the routes file
    ├── BadRequest         an admin API parameter is invalid (becomes a 4xx JSON error)
    ├── UpstreamError      the upstream could not be reached, or broke off (502)
    │   └── UpstreamTimeout    it did not answer in time (504)
    └── ProviderError      a provider's usage API could not be read (sync-openai; 4xx/502/504)
"""

from __future__ import annotations

from typing import Any


class TokenMeterError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(TokenMeterError):
    """A setting is missing or malformed; the message names it and says what to do."""


class FileRefused(TokenMeterError):
    """A configuration file was refused. `problems` lists each one as `file:line: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class PricingError(FileRefused):
    """The pricing file was refused."""


class RoutesError(FileRefused):
    """The routes file was refused."""


class BadRequest(TokenMeterError):
    """An admin API parameter is invalid; `param` names it."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


class UpstreamError(TokenMeterError):
    """The upstream could not be reached, refused the connection, or broke off mid-response."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or answer within its timeout."""


class ProviderError(TokenMeterError):
    """A provider's usage API could not be read: no key configured, key refused, unreachable,
    or still failing after retries. `status` is what the admin API answers, `code` says which.
    The message never holds the key."""

    def __init__(self, message: str, *, code: str, status: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def openai_error(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The error body OpenAI's API returns, which every OpenAI client knows how to raise."""
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def body_too_large(limit: int) -> dict[str, Any]:
    """The 413 body for a request larger than `limit` bytes."""
    return openai_error(f"Request body too large: the limit is {limit} bytes.",
                        type="invalid_request_error", code="request_too_large")
