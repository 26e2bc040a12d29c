"""The dashboard's sign-in, cookie and CSRF rules, its pages (the budgets page among them) and
languages, and the admin endpoints it added (top sessions and users, session search, each
session's provider mix), through the app in-process. The widget and its links are
tests/test_widget.py; what a browser makes of the pages is tests/test_browser*.py."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from conftest import ADMIN_TOKEN, admin_headers, proxy_client
from test_storage import NOW, record
from tokenmeter_proxy.access import SESSION_COOKIE, SESSION_SECONDS
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.budgets import SCOPES
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.dashboard.pages import STATIC, STRINGS, TEMPLATES, Pages, negotiate
from tokenmeter_proxy.openapi import admin_openapi
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.repository import Repository

pytestmark = pytest.mark.anyio
PAGES = ["/dashboard", "/dashboard/sessions", "/dashboard/sessions/s-1", "/dashboard/budgets"]
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


class MovableClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Dashboard:
    client: httpx.AsyncClient
    clock: MovableClock

    async def sign_in(self, token: str = ADMIN_TOKEN, **headers: str) -> httpx.Response:
        response = await self.client.post("/dashboard/login", data={"token": token, "next": "/dashboard"},
                                          headers={**SAME_ORIGIN, **headers})
        self.client.cookies.clear()  # every test says which cookie it sends
        return response

    async def cookie(self) -> str:
        response = await self.sign_in()
        assert response.status_code == 303, response.text
        return str(response.cookies[SESSION_COOKIE])

    async def link(self, session_id: str | None = None, **body: object) -> dict[str, str]:
        """A widget link for a session (or, with `user_id=`, for a user)."""
        asked = {"session_id": session_id} if session_id is not None else {}
        response = await self.client.post("/api/widget-links", json={**asked, **body}, headers=admin_headers())
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def signed_in(self, path: str, **headers: str) -> str:
        """A page as a signed-in browser gets it."""
        response = await self.client.get(path, headers={"cookie": f"{SESSION_COOKIE}={await self.cookie()}",
                                                        **headers})
        assert response.status_code == 200 and not is_signin_form(response), response.text
        return response.text


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Dashboard]:
    """The app on a clock the test moves, over a few known records: alice's s-1 (two requests,
    the newest activity) and chat/7 ü, bob's s-10, carol's s-old."""
    engine = engine_from_url(settings.database_url)
    Repository(engine).insert_records([
        record(1, hours_ago=1, session="s-1", user="alice", cost="0.25"),
        record(2, hours_ago=2, session="s-1", user="alice", model="gpt-4o-mini", cost="0.5"),
        record(3, hours_ago=3, session="s-10", user="bob", cost="2"),
        record(4, hours_ago=30, session="chat/7 ü", user="alice", cost=None),
        record(5, hours_ago=24 * 10, session="s-old", user="carol", cost="9"),
    ])
    engine.dispose()
    clock = MovableClock()
    async with proxy_client(create_app(settings, clock=clock)) as client:
        yield Dashboard(client, clock)


@pytest.fixture
async def dash(settings: Settings) -> AsyncIterator[Dashboard]:
    async with running(settings) as dashboard:
        yield dashboard


def is_signin_form(response: httpx.Response) -> bool:
    return 'type="password"' in response.text and 'action="/dashboard/login"' in response.text


@pytest.mark.parametrize("path", PAGES)
async def test_without_a_cookie_every_page_shows_the_sign_in_form(dash: Dashboard, path: str) -> None:
    response = await dash.client.get(path)
    assert response.status_code == 200 and is_signin_form(response)
    assert f'name="next" value="{path}"' in response.text
    assert response.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in response.headers[
        "content-security-policy"]


async def test_a_wrong_token_is_refused_and_counted(dash: Dashboard) -> None:
    response = await dash.sign_in("wrong")
    assert response.status_code == 401 and is_signin_form(response)
    assert "not the admin token" in response.text and SESSION_COOKIE not in response.headers.get("set-cookie", "")
    for _ in range(9):
        await dash.sign_in("wrong")
    locked = await dash.sign_in()  # the right token, too late: this address is locked out for the minute
    assert locked.status_code == 429 and "Too many" in locked.text
    api = await dash.client.get("/api/usage/stats", headers=admin_headers())
    assert api.status_code == 429  # one limiter for the form and the API


async def test_the_right_token_sets_an_httponly_strict_cookie_without_the_token(dash: Dashboard) -> None:
    response = await dash.sign_in()
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    header = response.headers["set-cookie"]
    assert header.startswith(f"{SESSION_COOKIE}=")
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict", f"Max-Age={SESSION_SECONDS}"):
        assert attribute in header
    assert ADMIN_TOKEN not in header and "Secure" not in header  # plain http here; https gets Secure


async def test_over_https_the_cookie_is_secure(settings: Settings) -> None:
    async with proxy_client(create_app(settings)) as client:
        response = await client.post("https://proxy.test/dashboard/login", data={"token": ADMIN_TOKEN},
                                     headers=SAME_ORIGIN)
    assert "Secure" in response.headers["set-cookie"]


@pytest.mark.parametrize("next_path", ["https://evil.example/", "//evil.example/x", "/api/usage/stats",
                                       "/dashboard\\@evil.example", ""])
async def test_sign_in_only_ever_leads_back_into_the_dashboard(dash: Dashboard, next_path: str) -> None:
    response = await dash.client.post("/dashboard/login", data={"token": ADMIN_TOKEN, "next": next_path},
                                      headers=SAME_ORIGIN)
    assert response.headers["location"] == "/dashboard"


async def test_sign_in_leads_back_to_the_page_asked_for(dash: Dashboard) -> None:
    response = await dash.client.post("/dashboard/login", data={"token": ADMIN_TOKEN,
                                                                "next": "/dashboard/sessions?q=s-1"},
                                      headers=SAME_ORIGIN)
    assert response.headers["location"] == "/dashboard/sessions?q=s-1"


@pytest.mark.parametrize("headers", [{"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"}])
async def test_sign_in_and_out_from_another_site_are_refused(dash: Dashboard, headers: dict[str, str]) -> None:
    for path in ("/dashboard/login", "/dashboard/logout"):
        response = await dash.client.post(path, data={"token": ADMIN_TOKEN}, headers=headers)
        assert response.status_code == 403 and "set-cookie" not in response.headers


@pytest.mark.parametrize("path", PAGES)
async def test_signed_in_pages_never_hold_the_token(dash: Dashboard, path: str) -> None:
    cookie = await dash.cookie()
    response = await dash.client.get(path, headers={"cookie": f"{SESSION_COOKIE}={cookie}"})
    assert response.status_code == 200 and not is_signin_form(response)
    assert ADMIN_TOKEN not in response.text and cookie not in response.text
    assert 'action="/dashboard/logout"' in response.text and ">Sign out<" in response.text
    config = json.loads(re.search(r'id="tm-config">(.*?)</script>', response.text).group(1))  # type: ignore[union-attr]
    assert config["rates"] == {"USD": "1", "EUR": "0.5"} and config["base_currency"] == "USD"


async def test_the_session_page_escapes_its_id(dash: Dashboard) -> None:
    cookie = await dash.cookie()
    response = await dash.client.get("/dashboard/sessions/<script>alert(1)</script>",
                                     headers={"cookie": f"{SESSION_COOKIE}={cookie}"})
    assert "<script>alert" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text and "\\u003cscript\\u003e" in response.text


async def test_the_cookie_opens_the_api_for_reads_from_the_same_origin(dash: Dashboard) -> None:
    cookie = {"cookie": f"{SESSION_COOKIE}={await dash.cookie()}"}
    stats = await dash.client.get("/api/usage/stats", headers={**cookie, **SAME_ORIGIN})
    assert stats.status_code == 200 and stats.json()["totals"]["requests"] == 4
    assert (await dash.client.get("/api/usage/stats", headers=cookie)).status_code == 200  # an old browser
    for site in ("cross-site", "same-site"):
        refused = await dash.client.get("/api/usage/stats", headers={**cookie, "sec-fetch-site": site})
        assert refused.status_code == 401 and "own origin" in refused.json()["error"]["message"]
    foreign = await dash.client.get("/api/usage/stats", headers={**cookie, "origin": "https://evil.example"})
    assert foreign.status_code == 401


async def test_changes_through_the_cookie_need_its_csrf_token(dash: Dashboard) -> None:
    cookie = await dash.cookie()
    other = await dash.cookie()
    page = await dash.client.get("/dashboard", headers={"cookie": f"{SESSION_COOKIE}={cookie}"})
    csrf = json.loads(re.search(r'id="tm-config">(.*?)</script>', page.text).group(1))["csrf"]  # type: ignore[union-attr]
    headers = {"cookie": f"{SESSION_COOKIE}={cookie}", **SAME_ORIGIN}
    body = {"session_id": "s-1"}
    missing = await dash.client.post("/api/widget-links", json=body, headers=headers)
    assert missing.status_code == 401 and "x-tokenmeter-csrf" in missing.json()["error"]["message"]
    wrong = await dash.client.post("/api/widget-links", json=body, headers={
        **headers, "x-tokenmeter-csrf": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")})
    assert wrong.status_code == 401
    of_another = await dash.client.post("/api/widget-links", json=body, headers={
        "cookie": f"{SESSION_COOKIE}={other}", **SAME_ORIGIN, "x-tokenmeter-csrf": csrf})
    assert of_another.status_code == 401
    right = await dash.client.post("/api/widget-links", json=body, headers={**headers, "x-tokenmeter-csrf": csrf})
    assert right.status_code == 200
    budget = {"scope": "session", "subject": "s-1", "period": "day", "max_cost": 1}
    assert (await dash.client.put("/api/budgets", json=budget, headers=headers)).status_code == 401


async def test_the_cookie_expires(dash: Dashboard) -> None:
    cookie = {"cookie": f"{SESSION_COOKIE}={await dash.cookie()}"}
    dash.clock.now += dt.timedelta(seconds=SESSION_SECONDS - 1)
    assert (await dash.client.get("/api/usage/stats", headers=cookie)).status_code == 200
    dash.clock.now += dt.timedelta(seconds=1)
    assert (await dash.client.get("/api/usage/stats", headers=cookie)).status_code == 401
    assert is_signin_form(await dash.client.get("/dashboard", headers=cookie))


async def test_sign_out_clears_the_cookie(dash: Dashboard) -> None:
    cookie = await dash.cookie()
    response = await dash.client.post("/dashboard/logout", headers={"cookie": f"{SESSION_COOKIE}={cookie}",
                                                                    **SAME_ORIGIN})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    header = response.headers["set-cookie"]
    assert header.startswith(f'{SESSION_COOKIE}="";') and "Max-Age=0" in header and "Path=/" in header


async def test_a_forged_cookie_opens_nothing(dash: Dashboard) -> None:
    forged = {"cookie": f"{SESSION_COOKIE}=4102444800.nonce.{'A' * 43}"}
    assert is_signin_form(await dash.client.get("/dashboard", headers=forged))
    assert (await dash.client.get("/api/usage/stats", headers=forged)).status_code == 401


async def test_without_an_admin_token_nobody_signs_in(settings: Settings) -> None:
    async with proxy_client(create_app(Settings(**{**settings.__dict__, "admin_token": None}))) as client:
        response = await client.post("/dashboard/login", data={"token": ""}, headers=SAME_ORIGIN)
        assert response.status_code == 401 and "TOKENMETER_ADMIN_TOKEN" in response.text
        widget = await client.get("/widget/session/s-1", params={"exp": "4102444800", "sig": "x"})
        assert widget.status_code == 403


@pytest.mark.parametrize(("accept", "language", "locale"), [
    (None, "en", "en"), ("de-DE,de;q=0.9,en;q=0.8", "de", "de-DE"), ("fr-FR, de-AT;q=0.5", "de", "de-AT"),
    ("en-GB,de;q=0.9", "en", "en-GB"), ("de;q=0.1, en;q=0.9", "en", "en"), ("*", "en", "en"),
    ("de;q=0, en-US", "en", "en-US"), ('x"><script>', "en", "en"), ("de;q=abc, en", "en", "en")])
def test_the_language_follows_accept_language(accept: str | None, language: str, locale: str) -> None:
    assert negotiate(accept) == (language, locale)


async def test_a_german_browser_gets_german_pages(dash: Dashboard) -> None:
    cookie = await dash.cookie()
    german = {"accept-language": "de-DE,de;q=0.9"}
    form = await dash.client.get("/dashboard", headers=german)
    assert "Anmelden" in form.text and '<html lang="de-DE">' in form.text
    page = await dash.client.get("/dashboard", headers={**german, "cookie": f"{SESSION_COOKIE}={cookie}"})
    for label in ("Übersicht", "Sitzungen", "Anfragen", "Kosten", "Abmelden"):
        assert label in page.text


async def test_the_overview_offers_a_provider_filter_and_a_provider_panel(dash: Dashboard) -> None:
    cookie = {"cookie": f"{SESSION_COOKIE}={await dash.cookie()}"}
    english = (await dash.client.get("/dashboard", headers=cookie)).text
    assert '<label for="provider">Provider</label>' in english
    assert '<select id="provider"><option value="">All providers</option></select>' in english
    assert "<h2>Cost by provider</h2>" in english and 'id="provider-chart"' in english
    assert 'id="provider-table"' in english and ">Show all providers</button>" in english
    assert english.index("Cost by model") < english.index("Cost by provider")  # the panels side by side
    german = (await dash.client.get("/dashboard", headers={**cookie, "accept-language": "de-DE"})).text
    for text in ('<label for="provider">Anbieter</label>', '<option value="">Alle Anbieter</option>',
                 "<h2>Kosten nach Anbieter</h2>", ">Alle Anbieter zeigen</button>"):
        assert text in german, text


async def test_the_provider_filter_narrows_what_the_overview_reads(dash: Dashboard, settings: Settings) -> None:
    engine = engine_from_url(settings.database_url)
    Repository(engine).insert_records([  # beside the fixture's OpenAI records
        dataclasses.replace(record(n, hours_ago=n, session="s-claude", user="dora", model="claude-sonnet-4-5",
                                   cost="0.75"), provider="anthropic", route="anthropic") for n in (6, 7)])
    engine.dispose()
    headers = {"cookie": f"{SESSION_COOKIE}={await dash.cookie()}", **SAME_ORIGIN}  # as the page asks

    async def read(path: str, **params: str) -> Any:
        response = await dash.client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    every = await read("/api/usage/stats", period="7d")  # the filter's options
    assert [(row["provider"], row["requests"], row["cost"]) for row in every["by_provider"]] == [
        ("openai", 4, 2.75), ("anthropic", 2, 1.5)]  # biggest cost first
    narrowed = await read("/api/usage/stats", period="7d", provider="anthropic")
    assert narrowed["totals"]["requests"] == 2 and narrowed["totals"]["cost"] == 1.5
    assert [row["provider"] for row in narrowed["by_provider"]] == ["anthropic"]
    assert [row["model"] for row in narrowed["by_model"]] == ["claude-sonnet-4-5"]
    for by, ident in (("session", "s-claude"), ("user", "dora"), ("model", "claude-sonnet-4-5")):
        top = await read("/api/usage/top", by=by, period="7d", provider="anthropic")
        assert [row["id"] for row in top["top"]] == [ident]
    session = await read("/api/usage/sessions/s-claude")  # what the session page's provider column shows
    assert [row["provider"] for row in session["records"]] == ["anthropic", "anthropic"]


def test_both_languages_have_every_string_the_templates_and_scripts_use() -> None:
    pages = Pages.load()
    assert set(pages.strings["en"]) == set(pages.strings["de"])
    used = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\{\{t\.([a-z0-9_]+)\}\}", path.read_text()))
    for path in STATIC.glob("*.js"):
        used |= set(re.findall(r'\bt\("([a-z0-9_]+)"', path.read_text()))
    assert used and used <= set(pages.strings["en"]), used - set(pages.strings["en"])
    assert {path.name for path in STRINGS.glob("*.json")} == {"en.json", "de.json"}


@pytest.mark.parametrize(("name", "kind"), [("style.css", "text/css"), ("overview.js", "javascript"),
                                            ("widget.js", "javascript"), ("icon.svg", "image/svg+xml")])
async def test_static_files_are_served_and_revalidated(dash: Dashboard, name: str, kind: str) -> None:
    response = await dash.client.get(f"/dashboard/static/{name}")
    assert response.status_code == 200 and kind in response.headers["content-type"]
    assert response.headers["cache-control"] == "no-cache"


async def test_static_files_answer_304_when_unchanged_and_404_when_unknown(dash: Dashboard) -> None:
    first = await dash.client.get("/dashboard/static/common.js")
    again = await dash.client.get("/dashboard/static/common.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert (await dash.client.get("/dashboard/static/nothing.js")).status_code == 404
    assert (await dash.client.get("/dashboard/static/../routes.py")).status_code == 404


async def test_pages_ask_for_every_module_their_script_imports_at_once(dash: Dashboard) -> None:
    cookie = {"cookie": f"{SESSION_COOKIE}={await dash.cookie()}"}
    page = (await dash.client.get("/dashboard", headers=cookie)).text
    preloaded = re.findall(r'<link rel="modulepreload" href="/dashboard/static/([a-z]+\.js)">', page)
    assert preloaded == ["breakdown.js", "budgetview.js", "charts.js", "common.js", "projection.js", "tagview.js"]
    assert '<script type="module" src="/dashboard/static/overview.js"></script>' in page
    budgets = (await dash.client.get("/dashboard/budgets", headers=cookie)).text
    assert re.findall(r'<link rel="modulepreload" href="/dashboard/static/([a-z]+\.js)">', budgets) == [
        "budgetview.js", "common.js"]


def test_the_scripts_load_nothing_from_elsewhere() -> None:
    for path in [*STATIC.iterdir(), *TEMPLATES.iterdir()]:
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert not re.search(r"""(fetch|import)[^;\n]*["'`](https?:)?//""", text), path
        assert "innerHTML" not in text, path  # data goes into pages as text only
        for module in re.findall(r'from "\./([a-z]+\.js)"', text):
            assert (STATIC / module).exists(), (path, module)


async def test_top_sessions_and_users_by_cost_in_the_period(dash: Dashboard) -> None:
    headers = admin_headers()
    sessions = (await dash.client.get("/api/usage/top", params={"by": "session", "period": "24h"},
                                      headers=headers)).json()
    assert sessions["by"] == "session" and sessions["period"] == "24h" and sessions["currency"] == "USD"
    assert [(row["id"], row["requests"], row["cost"]) for row in sessions["top"]] == [("s-10", 1, 2), ("s-1", 2, 0.75)]
    users = (await dash.client.get("/api/usage/top", params={"by": "user", "period": "30d", "currency": "EUR"},
                                   headers=headers)).json()
    assert [(row["id"], row["requests"], row["cost"]) for row in users["top"]] == [
        ("carol", 1, 4.5), ("bob", 1, 1), ("alice", 3, 0.375)]
    limited = (await dash.client.get("/api/usage/top", params={"by": "user", "period": "30d", "limit": 1},
                                     headers=headers)).json()
    assert [row["id"] for row in limited["top"]] == ["carol"]


@pytest.mark.parametrize("params", [{"by": "day"}, {"period": "1y"}, {"limit": "0"}, {"limit": "101"},
                                    {"currency": "XYZ"}])
async def test_top_refuses_bad_parameters(dash: Dashboard, params: dict[str, str]) -> None:
    response = await dash.client.get("/api/usage/top", params=params, headers=admin_headers())
    assert response.status_code == 400


@pytest.mark.parametrize(("q", "expected"), [
    ("s-1", ["s-1", "s-10"]), ("s-10", ["s-10"]), ("S-1", []), ("alice", ["s-1", "chat/7 ü"]),
    ("chat/", ["chat/7 ü"]), ("%", []), ("_", []), ("", ["s-1", "s-10", "chat/7 ü", "s-old"])])
async def test_sessions_search_by_id_prefix_or_user(dash: Dashboard, q: str, expected: list[str]) -> None:
    page = (await dash.client.get("/api/usage/sessions", params={"q": q}, headers=admin_headers())).json()
    assert [session["session_id"] for session in page["sessions"]] == expected and page["total"] == len(expected)


async def test_top_models_say_which_requests_have_no_price(dash: Dashboard) -> None:
    top = (await dash.client.get("/api/usage/top", params={"by": "model", "period": "7d"},
                                 headers=admin_headers())).json()
    assert [(row["id"], row["requests"], row["unpriced_requests"]) for row in top["top"]] == [
        ("gpt-4o", 3, 1), ("gpt-4o-mini", 1, 0)]


def test_the_openapi_description_lists_the_new_operations() -> None:
    paths = admin_openapi()["paths"]
    assert "post" in paths["/api/widget-links"] and "get" in paths["/api/usage/top"]
    assert "q" in {parameter["name"] for parameter in paths["/api/usage/sessions"]["get"]["parameters"]}


def page_config(page: str) -> dict[str, Any]:
    return dict(json.loads(re.search(r'id="tm-config">(.*?)</script>', page).group(1)))  # type: ignore[union-attr]


async def test_the_budgets_page_labels_its_form_and_offers_every_scope(dash: Dashboard) -> None:
    page = await dash.signed_in("/dashboard/budgets")
    for field, label in (("b-scope", "Scope"), ("b-subject", "Subject"), ("b-period", "Period"),
                         ("b-max-cost", "Max cost (USD)"), ("b-max-tokens", "Max tokens"),
                         ("b-warn-at", "Warn at (fraction of the limit, 0 to 1)")):
        assert f'<label for="{field}">{label}</label>' in page, label
    assert '<button type="submit" class="primary">Save</button>' in page
    assert '<a href="/dashboard/budgets" aria-current="page">Budgets</a>' in page
    config = page_config(page)
    assert config["scopes"] == list(SCOPES) == ["session", "user", "key", "global", "tag"]
    assert config["periods"] == ["day", "month", "total"] and config["default_warn_at"] == "0.8"
    assert config["csrf"] and '<script type="module" src="/dashboard/static/budgets.js"></script>' in page


async def test_the_budgets_page_speaks_german(dash: Dashboard) -> None:
    page = await dash.signed_in("/dashboard/budgets", **{"accept-language": "de-DE"})
    for field, label in (("b-scope", "Bereich"), ("b-subject", "Subjekt"), ("b-period", "Zeitraum"),
                         ("b-max-cost", "Max. Kosten (USD)"), ("b-max-tokens", "Max. Tokens"),
                         ("b-warn-at", "Warnen ab (Anteil am Limit, 0 bis 1)")):
        assert f'<label for="{field}">{label}</label>' in page, label
    strings = page_config(page)["strings"]
    assert (strings["save"], strings["edit"], strings["delete"]) == ("Speichern", "Bearbeiten", "Löschen")
    assert strings["scope_tag"] and strings["budget_period_total"].startswith("Insgesamt")


async def test_the_overview_links_the_budgets_page_and_has_tags_and_a_projection(dash: Dashboard) -> None:
    page = await dash.signed_in("/dashboard")
    assert '<a href="/dashboard/budgets">Manage budgets</a>' in page
    assert "PUT /api/budgets" not in page and "PUT /api/budgets" not in page_config(page)["strings"]["no_budgets"]
    assert '<label for="tag">Tag</label>' in page and 'id="tag-filter"' in page
    assert ">Show every request</button>" in page
    assert "<h2 id=\"tag-heading\">Cost by tag</h2>" in page and '<select id="by-tag"></select>' in page
    assert 'id="projected"' in page and "Projected this month" in page


async def test_the_sessions_list_carries_each_sessions_provider_mix(dash: Dashboard, settings: Settings) -> None:
    engine = engine_from_url(settings.database_url)
    Repository(engine).insert_records([
        record(6, hours_ago=0.5, session="s-1", user="alice", model="claude-like", cost="0.75", provider="anthropic"),
        record(7, hours_ago=0.4, session="s-1", user="alice", model="claude-like", cost="0.5", provider="anthropic")])
    engine.dispose()
    page = (await dash.client.get("/api/usage/sessions", headers=admin_headers())).json()
    mix = {session["session_id"]: session["providers"] for session in page["sessions"]}
    assert mix["s-1"] == [{"provider": "anthropic", "requests": 2, "cost": 1.25},
                          {"provider": "openai", "requests": 2, "cost": 0.75}]  # biggest cost first
    assert mix["s-10"] == [{"provider": "openai", "requests": 1, "cost": 2}]
    assert mix["chat/7 ü"] == [{"provider": "openai", "requests": 1, "cost": 0}]  # unpriced: no cost
    found = (await dash.client.get("/api/usage/sessions", params={"q": "bob"}, headers=admin_headers())).json()
    assert [session["providers"] for session in found["sessions"]] == [[{"provider": "openai", "requests": 1,
                                                                         "cost": 2}]]


def test_the_provider_mix_sums_the_session_rollup_on_both_databases(database_url: str) -> None:
    engine = engine_from_url(database_url)
    try:
        repository = Repository(engine)
        repository.insert_records([
            record(1, session="m-1", cost="0.25"), record(2, session="m-1", cost="0.5", provider="google"),
            record(3, session="m-1", hours_ago=30, cost="0.5", provider="google"),  # another day: summed
            record(4, session="m-2", cost=None, provider="anthropic"), record(5, session="other", cost="9")])
        mix = repository.provider_mix(["m-1", "m-2", "none"])
        assert repository.provider_mix([]) == {}
    finally:
        engine.dispose()
    assert {session: [(provider, totals.requests, totals.cost) for provider, totals in rows]
            for session, rows in mix.items()} == {"m-1": [("google", 2, Decimal(1)), ("openai", 1, Decimal("0.25"))],
                                                  "m-2": [("anthropic", 1, Decimal(0))]}
