"""What the browser tests share (tests/test_browser*.py): Debian's Chromium, headless, driven by
Playwright; pages opened in fresh contexts and watched for requests outside the proxy's origin
and for console errors; and small readers of what a page shows."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import ADMIN_TOKEN

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="the browser tests need Debian's Chromium at "
                                    "/usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need the playwright package "
                               "(the dev extra: pip install -e '.[dev]')")
expect = sync_api.expect
SHOTS = Path(__file__).resolve().parent / "screenshots"
NOWHERE = "http://127.0.0.1:9"  # no upstream: these tests never proxy a request


@dataclass
class Watched:
    """Pages opened by a test, and what went wrong on them."""

    origin: str
    outside: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # documents answered 401/403 on purpose
    failing: tuple[str, ...] = ()  # URL parts a test makes fail on purpose
    responses: list[Any] = field(default_factory=list)  # every response the pages got

    def problems(self) -> list[str]:
        return [*(f"request outside the origin: {url}" for url in sorted(self.outside)), *self.errors]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless (never a browser Playwright downloads)."""
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield launched
        launched.close()


@contextlib.contextmanager
def watched_pages(browser: Any, watched: Watched) -> Iterator[Callable[..., Any]]:
    """Open pages in fresh browser contexts (their own cookies), watched; checked clean at the end."""
    contexts = []

    def open_(locale: str = "en-US", width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(locale=locale, extra_http_headers={"Accept-Language": locale},
                                      viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.on("request", lambda request: _outside(watched, request.url))
        page.on("response", lambda response: response.request.resource_type == "document"
                and response.status in (401, 403) and watched.refused.add(response.url))
        page.on("response", lambda response: watched.responses.append(response))
        page.on("console", lambda message: message.type == "error" and _console_error(
            watched, message.text, (message.location or {}).get("url", "")))
        page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not watched.problems(), watched.problems()


def _outside(watched: Watched, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != watched.origin:
        watched.outside.add(url)


def _console_error(watched: Watched, text: str, url: str) -> None:
    # Chromium logs every 4xx/5xx as "Failed to load resource": not an error of the page when
    # the test asked for it (a refused sign-in, a bad widget link, an API made to fail)
    expected = url in watched.refused or any(part in url for part in watched.failing)
    if not (text.startswith("Failed to load resource") and expected):
        watched.errors.append(f"console error: {text} ({url})")


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, base: str, token: str = ADMIN_TOKEN, path: str = "/dashboard") -> None:
    page.goto(base + path)
    page.locator("input[name=token]").fill(token)
    page.locator("input[name=token]").press("Enter")
    page.wait_for_load_state()


def ready(page: Any) -> None:
    page.wait_for_selector("main[data-state=ready]")


def has_signin_form(page: Any) -> bool:
    return bool(page.locator("input[type=password]").count())


def number(text: str) -> int:
    return int(re.sub(r"[,.\u00a0\u202f ]", "", text))


def money(text: str) -> float:
    """An amount as the page writes it in English ("$1,234.50", "$0.0123")."""
    return float(re.sub(r"[^0-9.-]", "", text))


def same_money(text: str, amount: float) -> bool:
    """The page's rounding of an amount: 4 decimals under one unit, 2 from one on."""
    return abs(money(text) - amount) <= (0.00005 if abs(amount) < 1 else 0.005)


def cells(rows: Any, column: int) -> list[str]:
    return [row.locator("td").nth(column).inner_text() for row in rows.all()]


def no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth"))
