"""Reading OpenAI's organization usage API, `GET {api_base}/organization/usage/completions`:
daily buckets grouped by model, every page followed, 429 and 5xx retried with exponential
backoff (Retry-After honoured), every failure a `ProviderError` that says what to do.

The admin key travels in one request header and nowhere else: never in a log line, an error
message, a repr or the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from . import __version__
from .errors import ProviderError
from .reconciliation import DayFigures, day_start, usage_page

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # a page of a year of buckets takes the API a while
PAGE_DAYS = 31  # the most daily buckets the API returns in one page
MAX_PAGES = 1000
RETRIED = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class UsageAPI:
    """The usage API at `api_base` with `admin_key`. `backoff_seconds` is the first retry's
    wait, doubled each time up to `max_delay`; `sleep` and `transport` are seams for tests."""

    api_base: str
    admin_key: str | None = field(repr=False)
    backoff_seconds: float = 1.0
    attempts: int = 5
    max_delay: float = 60.0
    transport: httpx.AsyncBaseTransport | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def daily_completions(self, start: dt.date, end: dt.date) -> list[DayFigures]:
        """Requests and tokens per UTC day and model (as OpenAI names it) for start..end."""
        if not self.admin_key:
            raise ProviderError(
                "OPENAI_ADMIN_KEY is not set: create an admin key (sk-admin-...) in the OpenAI "
                "organization settings and set it in the environment of tokenmeter-proxy",
                code="openai_admin_key_missing", status=400)
        if not (self.admin_key.isascii() and self.admin_key.isprintable()):
            raise ProviderError("OPENAI_ADMIN_KEY must be printable ASCII, as OpenAI's keys are",
                                code="openai_admin_key_invalid", status=400)
        url = self.api_base.rstrip("/") + "/organization/usage/completions"
        params: dict[str, Any] = {
            "start_time": int(day_start(start).timestamp()),
            "end_time": int(day_start(end + dt.timedelta(days=1)).timestamp()),  # exclusive
            "bucket_width": "1d", "group_by": "model", "limit": min((end - start).days + 1, PAGE_DAYS),
        }
        headers = {"authorization": f"Bearer {self.admin_key}", "user-agent": f"tokenmeter-proxy/{__version__}"}
        rows: list[DayFigures] = []
        async with httpx.AsyncClient(transport=self.transport, timeout=TIMEOUT, headers=headers) as client:
            page: str | None = None
            for _ in range(MAX_PAGES):
                payload = await self._get(client, url, params if page is None else {**params, "page": page})
                try:
                    found, following = usage_page(payload, start=start, end=end)
                except ValueError as exc:
                    raise ProviderError(f"the usage API at {url} answered with an unexpected page: {exc}",
                                        code="provider_bad_response") from None
                rows += found
                if following is None:
                    return rows
                if following == page:
                    raise ProviderError(f"the usage API at {url} gave the same next_page twice ({page!r})",
                                        code="provider_bad_response")
                page = following
        raise ProviderError(f"the usage API at {url} had more than {MAX_PAGES} pages", code="provider_bad_response")

    async def _get(self, client: httpx.AsyncClient, url: str, params: dict[str, Any]) -> object:
        """One page's JSON, retrying what may pass (429, 5xx, timeouts, dropped connections)."""
        for attempt in range(1, self.attempts + 1):
            wait: float | None = None
            timed_out = False
            try:
                response = await client.get(url, params=params)
            except httpx.ConnectError as exc:
                raise ProviderError(f"cannot reach the usage API at {url}: {self._scrub(str(exc))}",
                                    code="provider_unreachable") from None
            except httpx.TimeoutException as exc:
                failure, timed_out = f"no answer in time ({type(exc).__name__})", True
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            else:
                if response.status_code == 200:
                    return self._json(response, url)
                self._refuse(response, url)
                failure, wait = f"HTTP {response.status_code}", _retry_after(response)
            if attempt == self.attempts:
                raise ProviderError(
                    f"the usage API at {url} still failed after {self.attempts} attempts ({failure}); try again later",
                    code="provider_timeout" if timed_out else "provider_unavailable", status=504 if timed_out else 502)
            delay = min(self.max_delay, wait if wait is not None else self.backoff_seconds * 2 ** (attempt - 1))
            log.warning("usage API at %s: %s; retrying in %.1f s (attempt %d of %d)", url, failure, delay,
                        attempt + 1, self.attempts)
            await self.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _refuse(self, response: httpx.Response, url: str) -> None:
        """Raise for an answer that retrying will not change."""
        status = response.status_code
        if status in RETRIED:
            return
        if status in (401, 403):
            raise ProviderError(
                f"the usage API at {url} refused OPENAI_ADMIN_KEY (HTTP {status}): it must be an "
                "organization admin key (sk-admin-...) with read access to usage", code="provider_auth_failed")
        raise ProviderError(f"the usage API at {url} answered HTTP {status}: {self._detail(response)}",
                            code="provider_error")

    def _json(self, response: httpx.Response, url: str) -> object:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProviderError(f"the usage API at {url} answered with something other than JSON",
                                code="provider_bad_response") from None

    def _detail(self, response: httpx.Response) -> str:
        """The provider's own error message, without the key should it echo it, cut short."""
        try:
            body = orjson.loads(response.content)
            message = body["error"]["message"] if isinstance(body, dict) else body
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = response.text
        return self._scrub(str(message))[:300] or "(no message)"

    def _scrub(self, text: str) -> str:
        return text.replace(self.admin_key, "[admin key]") if self.admin_key else text


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), when there is one."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds())
