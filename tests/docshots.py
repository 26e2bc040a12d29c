"""The README's pictures (docs/*.png), made by tests/test_browser.py from 100,000 demo records
when TOKENMETER_DOCS_SCREENSHOTS=1: the overview, its cost by tag, the budgets page and the
sidebar of a session link at a sidebar's width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browsing import ready
from processes import Proxy

DOCS = Path(__file__).resolve().parents[1] / "docs"


def docs_screenshots(page: Any, demo: Proxy) -> None:
    """Budgets that read well (one past its warning level), then each picture."""
    DOCS.mkdir(exist_ok=True)
    heaviest = demo.admin("/api/usage/top", by="user", period="30d", limit=1)["top"][0]["id"]
    budget = {"scope": "user", "subject": heaviest, "period": "month", "max_cost": 1000}
    spent = demo.admin("/api/budgets", "PUT", budget)["spent_cost"]
    demo.admin("/api/budgets", "PUT", {**budget, "max_cost": round(spent / 0.88, 2)})  # past its warning level
    demo.admin("/api/budgets", "PUT", {"scope": "global", "subject": "*", "period": "month", "max_cost": 500})
    demo.admin("/api/budgets", "PUT", {"scope": "tag", "subject": "team:search", "period": "day", "max_cost": 5,
                                       "max_tokens": 2_000_000, "warn_at": 0.9})
    demo.admin("/api/budgets", "PUT", {"scope": "session", "subject": "demo-1-0000001", "period": "total",
                                       "max_tokens": 500_000})
    page.set_viewport_size({"width": 1200, "height": 900})
    page.reload()
    ready(page)
    page.wait_for_selector("#tag-table tbody tr")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(DOCS / "overview.png"), full_page=True)
    page.locator("section.panel", has=page.locator("#tag-chart")).screenshot(path=str(DOCS / "tags.png"))
    page.goto(demo.url + "/dashboard/budgets")
    ready(page)
    page.wait_for_load_state("networkidle")
    page.get_by_role("row").filter(has_text="team:search").get_by_role("button", name="Edit").click()
    page.screenshot(path=str(DOCS / "budgets.png"), full_page=True)
    _sidebar(page, demo)


def _sidebar(page: Any, demo: Proxy) -> None:
    """A session link of a busy user of the last day, one of its other sessions opened."""
    user = demo.admin("/api/usage/top", by="user", period="24h", limit=1)["top"][0]["id"]
    sessions = demo.admin("/api/usage/sessions", q=user, limit=5)["sessions"]
    link = demo.admin("/api/widget-links", "POST", {"session_id": sessions[0]["session_id"]})
    widget = page.context.new_page()
    widget.set_viewport_size({"width": 360, "height": 760})
    widget.goto(link["url"])
    widget.wait_for_selector("#w-chart svg")
    widget.wait_for_selector("button.wsession")
    if len(sessions) > 1:
        widget.locator(f'button.wsession[data-session="{sessions[1]["session_id"]}"]').click()
    widget.screenshot(path=str(DOCS / "sidebar.png"), full_page=True)
    widget.close()
