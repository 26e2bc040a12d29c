"""The sidebar widget in Debian's Chromium (tests/browsing.py) against a `tokenmeter-proxy serve`
process, for a session link and a user link: its three parts (current session, usage trend,
recent sessions) against the API, choosing a session, live refresh from the embedding page, no
other user's data anywhere, German, a 360 px and a 1280 px frame."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from browsing import (
    NOWHERE,
    Watched,
    chromium,
    expect,
    needs_chromium,
    no_horizontal_scroll,
    number,
    same_money,
    shot,
    watched_pages,
)
from conftest import ADMIN_TOKEN
from processes import Proxy

pytestmark = needs_chromium
HEADINGS = {"en": ["Current session", "Usage trend", "Recent sessions"],
            "de": ["Aktuelle Sitzung", "Verlauf", "Letzte Sitzungen"]}
KNOWN = ["w-s1", "w-s2", "w-s3", "w-s9", "w-s0", "w-u1", "w-u2"]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """w-u1's sessions w-s1, w-s2 (two requests) and w-s3, a second apart (newest last), w-u2's
    w-s9, and w-s0 with no user."""
    running = Proxy(tmp_path_factory.mktemp("sidebar"), NOWHERE)
    try:
        for i, (session, user, requests) in enumerate([
                ("w-s1", "w-u1", [(1000, 100)]), ("w-s2", "w-u1", [(2000, 200), (3000, 300)]),
                ("w-s3", "w-u1", [(4000, 400)]), ("w-s9", "w-u2", [(9000, 900)]), ("w-s0", None, [(500, 50)])]):
            if i:
                time.sleep(1.05)  # last activity a second apart: a fixed order
            for input_tokens, output_tokens in requests:
                running.admin("/api/usage/log", "POST", {
                    "session_id": session, "model": "gpt-4o", "input_tokens": input_tokens,
                    "output_tokens": output_tokens, **({"user_id": user} if user else {})})
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def watched(proxy: Proxy) -> Watched:
    return Watched(origin=urlsplit(proxy.url).netloc)


@pytest.fixture
def open_page(browser: Any, watched: Watched) -> Iterator[Callable[..., Any]]:
    with watched_pages(browser, watched) as open_:
        yield open_


def open_widget(proxy: Proxy, open_page: Callable[..., Any], locale: str = "en-US", width: int = 360,
                height: int = 740, **subject: str) -> Any:
    link = proxy.admin("/api/widget-links", "POST", subject)
    page = open_page(locale, width=width, height=height)
    assert page.goto(link["url"]).status == 200
    page.wait_for_selector("main[data-state=ready]")
    return page


def listed(page: Any) -> list[str]:
    return [button.get_attribute("data-session") for button in page.locator("button.wsession").all()]


def strangers(page: Any, watched: Watched, *mine: str) -> list[str]:
    """Sessions and users other than `mine` in the page or in any response it got."""
    seen = [page.content()]
    for response in watched.responses:
        with contextlib.suppress(Exception):  # a redirect's body, or one evicted
            seen.append(response.text())
    return [name for name in KNOWN if name not in mine and any(name in text for text in seen)]


@contextlib.contextmanager
def chat_page(widget_url: str) -> Iterator[str]:
    """A chat app's page (served from another port of this machine, like a real app beside the
    proxy) that frames the widget; its URL."""
    body = f'<!doctype html><title>chat</title><iframe src="{widget_url}" title="usage" width="380" height="760">' \
           "</iframe>".encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/chat"
    finally:
        server.shutdown()
        server.server_close()


def cost_of(proxy: Proxy, session: str) -> float:
    return float(proxy.admin(f"/api/usage/sessions/{session}")["totals"]["cost"])


def test_a_session_link_shows_the_three_parts_and_its_users_sessions_only(
        proxy: Proxy, open_page: Any, watched: Watched) -> None:
    page = open_widget(proxy, open_page, session_id="w-s2")
    for heading in HEADINGS["en"]:
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    totals = proxy.admin("/api/usage/sessions/w-s2")["totals"]
    assert page.locator("#w-session-id").inner_text() == "w-s2"
    assert number(page.locator("#w-tokens").inner_text()) == totals["total_tokens"] == 5500
    assert same_money(page.locator("#w-cost").inner_text(), totals["cost"])
    assert listed(page) == ["w-s3", "w-s2", "w-s1"]  # newest activity first
    for button in page.locator("button.wsession").all():
        session = button.get_attribute("data-session")
        assert same_money(button.locator(".wcost").inner_text(), cost_of(proxy, session)), session
        assert button.get_attribute("aria-current") == ("true" if session == "w-s2" else None)
    assert "this chat" in page.locator('button[data-session="w-s2"]').inner_text()
    assert not strangers(page, watched, "w-s1", "w-s2", "w-s3", "w-u1")
    shot(page, "sidebar-session")


def test_choosing_a_recent_session_opens_its_figures_in_place(proxy: Proxy, open_page: Any) -> None:
    page = open_widget(proxy, open_page, session_id="w-s2")
    button = page.get_by_role("button", name="w-s1")
    region = page.get_by_role("region", name="w-s1")
    expect(region).to_be_hidden()
    button.click()
    expect(region).to_be_visible()
    assert button.get_attribute("aria-expanded") == "true"
    detail = proxy.admin("/api/usage/sessions/w-s1")["totals"]
    figures = region.inner_text()
    assert "1,100 (in 1,000 · out 100)" in figures and "Requests\t1" in figures.replace("\n", "\t")
    assert same_money(region.locator("dd").nth(1).inner_text(), detail["cost"])
    assert page.url.startswith(proxy.url + "/widget/session/w-s2")  # nothing left the widget
    shot(page, "sidebar-chosen")
    button.click()
    expect(region).to_be_hidden()


def test_the_trend_shows_cost_per_day_over_7_or_30_days_and_tokens_as_its_other_view(
        proxy: Proxy, open_page: Any) -> None:
    page = open_widget(proxy, open_page, session_id="w-s1")
    today = proxy.admin("/api/usage/stats", period="7d", user_id="w-u1")["daily"][-1]
    chart = page.locator("#w-chart svg")
    assert chart.get_attribute("data-points") == "7" and "Cost (USD)" in page.locator("#w-chart").inner_text()
    last = page.locator("#w-table tbody tr").last.locator("td")
    assert same_money(last.nth(1).text_content(), today["cost"])  # the table behind the chart
    assert number(last.nth(2).text_content()) == today["input_tokens"] + today["output_tokens"] == 11000
    assert "Your usage, 7 days:" in page.locator("#w-trend-of").inner_text()
    cost_bars = chart.inner_html()
    page.get_by_role("button", name="30 days").click()
    expect(chart).to_have_attribute("data-points", "30")
    page.get_by_role("button", name="7 days").click()
    page.get_by_role("button", name="Tokens", exact=True).click()
    expect(page.locator("#w-chart .legend")).to_have_text("Tokens")
    assert chart.inner_html() != cost_bars and page.get_by_role("button", name="Tokens").get_attribute(
        "aria-pressed") == "true"
    shot(page, "sidebar-tokens")


def test_a_user_link_shows_that_users_trend_and_sessions_and_no_current_session(
        proxy: Proxy, open_page: Any, watched: Watched) -> None:
    page = open_widget(proxy, open_page, user_id="w-u2")
    expect(page.get_by_role("heading", name="Current session")).to_have_count(0)
    for heading in HEADINGS["en"][1:]:
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    assert listed(page) == ["w-s9"] and page.locator("button.wsession[aria-current]").count() == 0
    today = proxy.admin("/api/usage/stats", period="7d", user_id="w-u2")["daily"][-1]
    assert same_money(page.locator("#w-table tbody tr").last.locator("td").nth(1).text_content(), today["cost"])
    assert not strangers(page, watched, "w-s9", "w-u2")
    shot(page, "sidebar-user")


def test_a_session_without_a_user_lists_only_itself(proxy: Proxy, open_page: Any, watched: Watched) -> None:
    page = open_widget(proxy, open_page, session_id="w-s0")
    assert listed(page) == ["w-s0"]
    assert "This session, 7 days:" in page.locator("#w-trend-of").inner_text()
    assert not strangers(page, watched, "w-s0")


def test_the_embedding_page_refreshes_the_widget_after_a_reply(
        proxy: Proxy, open_page: Any, watched: Watched) -> None:
    link = proxy.admin("/api/widget-links", "POST", {"session_id": "w-s3"})
    page = open_page(width=420, height=800)
    with chat_page(link["url"]) as chat:
        page.goto(chat)
        watched.outside.discard(chat)  # the chat app's own page, of another origin on purpose
        frame = page.frame_locator("iframe")
        expect(frame.locator("#w-requests")).to_have_text("1")
        time.sleep(2.1)  # past the widget endpoint's two-second cache
        proxy.admin("/api/usage/log", "POST", {"session_id": "w-s3", "user_id": "w-u1", "model": "gpt-4o",
                                               "input_tokens": 10, "output_tokens": 1})
        page.evaluate("document.querySelector('iframe').contentWindow.postMessage({type: 'tokenmeter:refresh'}, '*')")
        expect(frame.locator("#w-requests")).to_have_text("2", timeout=3000)  # now, not at the next 10 s tick


def test_the_widget_speaks_german(proxy: Proxy, open_page: Any) -> None:
    page = open_widget(proxy, open_page, "de-DE", session_id="w-s2")
    for heading in HEADINGS["de"]:
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    for name in ("7 Tage", "30 Tage", "Kosten", "Tokens"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
    assert "dieser Chat" in page.locator('button[data-session="w-s2"]').inner_text()
    assert page.locator("#w-cost").inner_text().endswith("$")  # "0,0150 $"
    shot(page, "sidebar-de")


@pytest.mark.parametrize(("width", "height"), [(360, 740), (1280, 800)])
def test_the_widget_fits_a_narrow_and_a_wide_frame(proxy: Proxy, open_page: Any, width: int, height: int) -> None:
    page = open_widget(proxy, open_page, width=width, height=height, session_id="w-s2")
    assert no_horizontal_scroll(page)
    for heading in HEADINGS["en"]:
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    assert page.locator("#w-chart svg").bounding_box()["width"] <= width
    shot(page, f"sidebar-{width}")


def test_a_link_works_until_it_expires_or_is_tampered_with(proxy: Proxy, open_page: Any) -> None:
    link = proxy.admin("/api/widget-links", "POST", {"session_id": "w-s1", "ttl_seconds": 4})
    totals = proxy.admin("/api/usage/sessions/w-s1")["totals"]
    page = open_page(width=360, height=640)
    page.goto(link["url"])
    expect(page.locator("#w-requests")).to_have_text(str(totals["requests"]))
    assert number(page.locator("#w-tokens").inner_text()) == totals["total_tokens"]
    assert number(page.locator("#w-input").inner_text()) == totals["input_tokens"]
    assert ADMIN_TOKEN not in page.content() and not page.context.cookies()
    signature = link["url"].rsplit("sig=", 1)[1]
    other = open_page(width=360, height=640)
    tampered = link["url"].replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    assert other.goto(tampered).status == 403 and "not valid or has expired" in other.inner_text("body")
    assert other.goto(link["url"].replace("/w-s1?", "/w-s2?")).status == 403
    assert other.goto(link["url"].replace("/widget/session/", "/widget/user/")).status == 403
    expires = dt.datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    assert other.goto(link["url"]).status == 403
    shot(other, "sidebar-expired")
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # what a tab switch does: refresh
    page.wait_for_selector("#status.error")  # the open widget says its link expired
    assert "expired" in page.locator("#status").inner_text()
