"""The budgets page, the overview's tags and month-end projection, and the sessions' provider mix,
in Debian's Chromium (tests/browsing.py) against a `tokenmeter-proxy serve` process: what the
page shows against what the API answers, every write through the budgets API with the page's
CSRF token, the API's own words for a refused save."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from browsing import (
    NOWHERE,
    Watched,
    cells,
    chromium,
    expect,
    has_signin_form,
    needs_chromium,
    no_horizontal_scroll,
    number,
    ready,
    same_money,
    shot,
    sign_in,
    watched_pages,
)
from processes import Proxy

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """Requests tagged by feature and team over two providers: s-1 OpenAI's alone, s-2 mostly
    Anthropic's; one untagged request."""
    running = Proxy(tmp_path_factory.mktemp("budgets-page"), NOWHERE)
    try:
        for i, (session, provider, model, tags) in enumerate([
                ("s-1", "openai", "gpt-4o", {"feature": "chat", "team": "search"}),
                ("s-1", "openai", "gpt-4o", {"feature": "chat", "team": "search"}),
                ("s-1", "openai", "gpt-4o-mini", {"feature": "summarize", "team": "ads"}),
                ("s-2", "anthropic", "claude-sonnet-4-5", {"feature": "summarize", "team": "search"}),
                ("s-2", "anthropic", "claude-sonnet-4-5", {"feature": "summarize"}),
                ("s-2", "openai", "gpt-4o-mini", {})]):
            running.admin("/api/usage/log", "POST", {
                "session_id": session, "user_id": "u-1", "provider": provider, "model": model,
                "input_tokens": 1000 + 100 * i, "output_tokens": 200, "tags": tags})
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


def budgets_of(proxy: Proxy, subject: str) -> list[dict[str, Any]]:
    return [b for b in proxy.admin("/api/budgets")["budgets"] if b["subject"] == subject]


def budgets_page(open_page: Callable[..., Any], proxy: Proxy, locale: str = "en-US", width: int = 1280) -> Any:
    page = open_page(locale, width=width)
    sign_in(page, proxy.url, path="/dashboard/budgets")
    ready(page)
    return page


def refusal(page: Any, param: str) -> str:
    """Save, and the message of the API's refusal, which must name `param`."""
    with page.expect_response(lambda r: r.request.method == "PUT") as answered:
        page.get_by_role("button", name="Save").click()
    assert answered.value.status == 400
    error = answered.value.json()["error"]
    assert error["param"] == param, error
    return str(error["message"])


def test_a_budget_is_created_edited_refused_and_deleted_through_the_form(
        proxy: Proxy, open_page: Any, watched: Watched) -> None:
    page = budgets_page(open_page, proxy)
    csrf = page.evaluate("JSON.parse(document.getElementById('tm-config').textContent).csrf")
    assert [o.get_attribute("value") for o in page.get_by_label("Scope").locator("option").all()] == [
        "session", "user", "key", "global", "tag"]
    page.get_by_label("Scope").select_option("tag")
    page.get_by_label("Subject").fill("team:search")
    page.get_by_label("Period").select_option("day")
    page.get_by_label("Max cost (USD)").fill("12.34")
    assert page.get_by_label("Warn at").input_value() == "0.8"
    with page.expect_request(lambda r: r.method == "PUT") as sent:
        page.get_by_role("button", name="Save").click()
    assert sent.value.headers["x-tokenmeter-csrf"] == csrf and json.loads(sent.value.post_data) == {
        "scope": "tag", "subject": "team:search", "period": "day", "max_cost": "12.34", "max_tokens": None,
        "warn_at": "0.8"}
    row = page.get_by_role("row").filter(has_text="team:search")
    expect(row).to_have_count(1)
    [made] = budgets_of(proxy, "team:search")
    assert (made["scope"], made["period"], made["max_cost"], made["warn_at"]) == ("tag", "day", 12.34, 0.8)
    assert "$12.34" in row.inner_text() and "Day (UTC)" in row.inner_text()
    expect(page.locator("#form-status")).to_have_text("Saved: Tag team:search (Day (UTC)).")

    row.get_by_role("button", name="Edit budget: Tag team:search (Day (UTC))").click()
    assert page.get_by_label("Max cost (USD)").input_value() == "12.34"
    expect(page.locator("#form-title")).to_have_text("Edit budget: Tag team:search (Day (UTC))")
    page.get_by_label("Max cost (USD)").fill("56.78")
    page.get_by_label("Max tokens").fill("5000")
    page.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("$56.78")
    [edited] = budgets_of(proxy, "team:search")
    assert edited["id"] == made["id"] and (edited["max_cost"], edited["max_tokens"]) == (56.78, 5000)
    assert "$12.34" not in row.inner_text() and "5,000 Tokens" in row.inner_text()

    watched.failing = ("/api/budgets",)  # the refused save answers 400, which Chromium logs
    before = proxy.admin("/api/budgets")
    row.get_by_role("button", name="Edit", exact=False).click()
    page.get_by_label("Warn at").fill("1.5")
    error = page.locator("#e-warn_at")
    words = refusal(page, "warn_at")
    expect(error).to_have_text(words)  # the API's own words, beside the field it names
    assert page.get_by_label("Warn at").get_attribute("aria-invalid") == "true"
    expect(page.locator("#form-status")).to_have_text("Not saved: the API refused this budget.")
    page.get_by_label("Warn at").fill("0.8")
    page.get_by_label("Max cost (USD)").fill("")
    page.get_by_label("Max tokens").fill("")
    words = refusal(page, "max_cost")
    expect(page.locator("#e-max_cost")).to_have_text(words)
    assert words == "set max_cost and/or max_tokens"
    expect(error).to_be_hidden()
    assert proxy.admin("/api/budgets") == before  # nothing changed
    shot(page, "budgets-refused")

    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#e-max_cost")).to_be_hidden()
    dialogs: list[str] = []

    def decline(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    row.get_by_role("button", name="Delete budget: Tag team:search (Day (UTC))").click()
    page.wait_for_timeout(300)
    assert dialogs == ["Delete the budget Tag team:search (Day (UTC))? Requests are no longer limited by it."]
    assert budgets_of(proxy, "team:search") and row.count() == 1  # declined: still there
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete budget: Tag team:search (Day (UTC))").click()
    expect(row).to_have_count(0)
    assert budgets_of(proxy, "team:search") == []


def test_each_rows_bar_and_figures_match_the_budgets_api(proxy: Proxy, open_page: Any) -> None:
    proxy.admin("/api/budgets", "PUT", {"scope": "user", "subject": "u-1", "period": "month", "max_cost": 0.04,
                                        "max_tokens": 100_000, "warn_at": 0.5})
    proxy.admin("/api/budgets", "PUT", {"scope": "global", "subject": "*", "period": "total", "max_cost": 1000})
    page = budgets_page(open_page, proxy)
    for budget in proxy.admin("/api/budgets")["budgets"]:
        row = page.locator(f'tr[data-budget="{budget["id"]}"]')
        bars = row.get_by_role("progressbar")
        limits = [(budget["spent_cost"], budget["max_cost"]), (budget["spent_tokens"], budget["max_tokens"])]
        limits = [(spent, limit) for spent, limit in limits if limit is not None]
        expect(bars).to_have_count(len(limits))
        for bar, (spent, limit) in zip(bars.all(), limits, strict=True):
            now, most = float(bar.get_attribute("aria-valuenow")), float(bar.get_attribute("aria-valuemax"))
            assert (now, most) == (min(spent, limit), limit), budget
        state = "warn" if budget["spent_cost"] >= 0.5 * budget["max_cost"] else "ok"
        assert f"budget-row {state}" == row.get_attribute("class"), budget
        forecast = row.locator("td").nth(6).inner_text()
        assert (forecast != "not this period") == (budget["forecast_exhausted_at"] is not None), budget
    user_row = page.locator("tr.budget-row", has_text="u-1")
    assert "Warning: past 50%" in user_row.inner_text() and same_money(user_row.locator(".spend-text").first
                                                                       .inner_text().split(" (")[0],
                                                                       budgets_of(proxy, "u-1")[0]["spent_cost"])
    shot(page, "budgets")
    for budget in proxy.admin("/api/budgets")["budgets"]:
        proxy.admin(f"/api/budgets/{budget['id']}", "DELETE")


def test_the_budgets_page_speaks_german_and_fits_a_phone(proxy: Proxy, open_page: Any) -> None:
    proxy.admin("/api/budgets", "PUT", {"scope": "session", "subject": "s-2", "period": "day", "max_cost": 1})
    page = budgets_page(open_page, proxy, "de-DE", width=360)
    for label in ("Bereich", "Subjekt", "Zeitraum", "Max. Kosten (USD)", "Max. Tokens", "Warnen ab"):
        expect(page.get_by_label(label, exact=False)).to_have_count(1)
    assert page.get_by_role("button", name="Speichern").is_visible()
    row = page.get_by_role("row").filter(has_text="s-2")
    assert row.get_by_role("button", name="Bearbeiten: Budget Sitzung s-2 (Tag (UTC))").count() == 1
    assert row.get_by_role("button", name="Löschen: Budget Sitzung s-2 (Tag (UTC))").count() == 1
    assert no_horizontal_scroll(page)  # the wide table scrolls inside its panel
    shot(page, "budgets-de-phone")
    proxy.admin(f"/api/budgets/{budgets_of(proxy, 's-2')[0]['id']}", "DELETE")


def test_the_page_needs_a_sign_in_and_the_overview_links_to_it(proxy: Proxy, open_page: Any) -> None:
    page = open_page()
    page.goto(proxy.url + "/dashboard/budgets")
    assert has_signin_form(page)
    sign_in(page, proxy.url)
    ready(page)
    expect(page.locator("#budgets .note")).to_contain_text("No budgets are set.")
    page.locator("#budgets").get_by_role("link", name="Set one on the Budgets page.").click()
    page.wait_for_url("**/dashboard/budgets")
    ready(page)
    assert page.get_by_role("link", name="Budgets").get_attribute("aria-current") == "page"


def test_the_overview_breaks_cost_down_by_tag_and_filters_by_one(
        proxy: Proxy, open_page: Any, watched: Watched) -> None:
    page = open_page()
    sign_in(page, proxy.url)
    ready(page)
    select = page.get_by_label("Tag name")
    expect(select.locator("option")).to_have_text(["feature", "team"])
    select.select_option("team")
    by_tag = proxy.admin("/api/usage/stats", by_tag="team")["by_tag"]
    rows = page.locator("#tag-table tbody tr")
    expect(rows).to_have_count(len(by_tag))
    names = [row["value"] or "(without this tag)" for row in by_tag]
    assert cells(rows, 0) == names and [number(n) for n in cells(rows, 1)] == [row["requests"] for row in by_tag]
    for text, row in zip(cells(rows, 4), by_tag, strict=True):
        assert same_money(text, row["cost"]), (text, row)
    shot(page, "overview-tags")

    watched.failing = ("tag=",)
    page.get_by_label("Tag", exact=True).fill("team")  # no value: the API refuses it, nothing changes
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#tag-error")).to_be_visible()
    assert "name:value" in page.locator("#tag-error").inner_text() and page.locator("#tag-note").is_hidden()
    page.locator("#tag-table").get_by_role("button", name="search").click()  # a value narrows to it
    narrowed = proxy.admin("/api/usage/stats", tag="team:search")
    expect(page.locator("#total-requests")).to_have_attribute("data-value", str(narrowed["totals"]["requests"]))
    assert narrowed["totals"]["requests"] == 3 and page.locator("#tag-error").is_hidden()
    assert "Showing requests tagged team:search only" in page.locator("#tag-note").inner_text()
    page.reload()  # remembered
    ready(page)
    expect(page.locator("#total-requests")).to_have_attribute("data-value", "3")
    page.get_by_role("button", name="Show every request").click()
    expect(page.locator("#total-requests")).to_have_attribute("data-value", "6")


def test_the_month_end_projection_adds_the_recent_rate_to_the_months_spend(proxy: Proxy, open_page: Any) -> None:
    page = open_page()
    sign_in(page, proxy.url)
    ready(page)
    projected = page.locator("#projected")
    page.wait_for_selector("#projected[data-value]", state="attached")  # a string predicate would need eval: CSP
    daily = proxy.admin("/api/usage/stats", period="90d")["daily"]
    now = dt.datetime.now(dt.UTC)
    today = dt.date.fromisoformat(daily[-1]["date"])
    midnight = dt.datetime.combine(today, dt.time(), dt.UTC)
    spent = sum(day["cost"] for day in daily if day["date"].startswith(today.isoformat()[:7]))
    rate = sum(day["cost"] for day in daily[-8:]) / (7 + (now - midnight) / dt.timedelta(days=1))
    month_end = dt.datetime.combine((today.replace(day=28) + dt.timedelta(days=4)).replace(day=1), dt.time(), dt.UTC)
    expected = spent + rate * ((month_end - now) / dt.timedelta(days=1))
    shown = float(projected.get_attribute("data-value"))
    assert abs(shown - expected) <= 1e-3 * expected, (shown, expected)
    assert spent > 0 and shown >= spent
    assert page.locator("#projected-title").inner_text() == f"Projected for {today:%B %Y}"
    assert page.locator("#projected-sub").inner_text().endswith("a day over the last 7 days")


def test_the_sessions_page_shows_each_sessions_provider_mix(proxy: Proxy, open_page: Any) -> None:
    page = open_page()
    sign_in(page, proxy.url, path="/dashboard/sessions")
    ready(page)
    sessions = proxy.admin("/api/usage/sessions")["sessions"]
    assert page.locator("#sessions th").last.inner_text() == "Providers"
    rows = page.locator("#sessions tbody tr")
    for text, session in zip(cells(rows, 6), sessions, strict=True):
        cost = sum(row["cost"] for row in session["providers"])
        expected = [f"{row['provider']} {round(100 * row['cost'] / cost)}%" for row in session["providers"]]
        assert text == " · ".join(expected), (text, session)
    mixed = page.locator("#sessions tbody tr", has_text="s-2")
    assert mixed.locator(".mix-text").inner_text().startswith("anthropic ")
    assert mixed.locator(".mix-bar > span").count() == 2
    shot(page, "sessions-provider-mix")
