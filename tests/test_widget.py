"""dashboard/widget.py: widget links for a session or a user, the widget pages and their signed
data endpoints (the current session, the trend, the recent sessions), through the app in-process.
The browser's view of them is tests/test_browser_sidebar.py."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import ADMIN_TOKEN, admin_headers, proxy_client
from test_dashboard import Dashboard, running
from test_storage import NOW
from tokenmeter_proxy.app import create_app
from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.identity import UserIds
from tokenmeter_proxy.openapi import admin_openapi

pytestmark = pytest.mark.anyio


@pytest.fixture
async def dash(settings: Settings) -> AsyncIterator[Dashboard]:
    async with running(settings) as dashboard:
        yield dashboard


def config_of(page: str) -> dict[str, Any]:
    return dict(json.loads(re.search(r'id="tm-config">(.*?)</script>', page).group(1)))  # type: ignore[union-attr]


async def figures(dash: Dashboard, link: dict[str, str]) -> dict[str, Any]:
    """What a link's page reads: its data endpoint, as the page names it."""
    page = await dash.client.get(link["path"])
    assert page.status_code == 200, page.text
    data = await dash.client.get(config_of(page.text)["data_url"])
    assert data.status_code == 200, data.text
    return dict(data.json())


def listed(found: dict[str, Any]) -> list[str]:
    return [item["session_id"] for item in found["sessions"]]


async def test_a_widget_link_defaults_to_an_hour(dash: Dashboard) -> None:
    link = await dash.link("s-1")
    assert link["expires_at"] == "2026-11-25T13:00:00Z"
    url = urlsplit(link["url"])
    assert url.scheme == "http" and url.netloc == "proxy.test" and url.path == "/widget/session/s-1"
    assert link["path"] == f"{url.path}?{url.query}"
    assert parse_qs(url.query)["exp"] == [str(int(NOW.timestamp()) + 3600)]
    assert ADMIN_TOKEN not in link["url"]


@pytest.mark.parametrize("body", [
    {}, {"session_id": ""}, {"session_id": 7}, {"session_id": "a\x00b"}, {"session_id": "s", "ttl_seconds": 0},
    {"session_id": "s", "ttl_seconds": -1}, {"session_id": "s", "ttl_seconds": 2_592_001},
    {"session_id": "s", "ttl_seconds": 1.5}, {"session_id": "s", "ttl_seconds": True},
    {"session_id": "s", "ttl_seconds": "60"}, [], "s-1", {"user_id": ""}, {"user_id": ["alice"]},
    {"user_id": "alice", "ttl_seconds": 0}, {"session_id": None, "user_id": None}])
async def test_bad_widget_link_requests_get_a_400(dash: Dashboard, body: object) -> None:
    response = await dash.client.post("/api/widget-links", json=body, headers=admin_headers())
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


async def test_a_link_for_a_session_and_a_user_at_once_is_a_400(dash: Dashboard) -> None:
    response = await dash.client.post("/api/widget-links", json={"session_id": "s-1", "user_id": "alice"},
                                      headers=admin_headers())
    error = response.json()["error"]
    assert response.status_code == 400 and "not both" in error["message"] and error["param"] == "user_id"


async def test_widget_links_need_the_admin_token(dash: Dashboard) -> None:
    for body in ({"session_id": "s-1"}, {"user_id": "alice"}):
        assert (await dash.client.post("/api/widget-links", json=body)).status_code == 401


async def test_the_widget_opens_with_its_link_and_shows_that_session(dash: Dashboard) -> None:
    link = await dash.link("s-1", ttl_seconds=60)
    page = await dash.client.get(link["path"])
    assert page.status_code == 200 and "Token usage" in page.text and ADMIN_TOKEN not in page.text
    assert "frame-ancestors *" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer" and "x-frame-options" not in page.headers
    for heading in ("Current session", "Usage trend", "Recent sessions"):
        assert f">{heading}</h2>" in page.text
    found = await figures(dash, link)
    assert found["kind"] == "session" and found["session_id"] == "s-1" and found["currency"] == "USD"
    assert found["totals"]["requests"] == 2 and found["totals"]["cost"] == 0.75
    assert found["trend"]["of"] == "user" and len(found["trend"]["daily"]) == 31
    # alice's days: s-1 today and the unpriced chat/7 record 30 hours ago
    assert sum(day["requests"] for day in found["trend"]["daily"]) == 3
    assert "alice" not in json.dumps(found)  # her sessions, not her id


async def test_a_session_link_lists_its_users_sessions_newest_first_and_no_one_elses(dash: Dashboard) -> None:
    found = await figures(dash, await dash.link("s-1"))
    assert listed(found) == ["s-1", "chat/7 ü"]  # alice's; bob's s-10 and carol's s-old never
    first = found["sessions"][0]
    assert first == {"session_id": "s-1", "last_seen": "2026-11-25T11:00:00Z", "requests": 2, "input_tokens": 200,
                     "output_tokens": 20, "cost": 0.75}
    text = json.dumps(found)
    assert "s-10" not in text and "s-old" not in text and "bob" not in text and "carol" not in text


async def test_a_session_without_a_user_lists_only_itself(dash: Dashboard, settings: Settings) -> None:
    await dash.client.post("/api/usage/log", headers=admin_headers(), json={
        "session_id": "lonely", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100})
    found = await figures(dash, await dash.link("lonely"))
    assert listed(found) == ["lonely"] and found["trend"]["of"] == "session"
    assert sum(day["input_tokens"] for day in found["trend"]["daily"]) == 1000
    nothing = await figures(dash, await dash.link("not-yet"))
    assert listed(nothing) == ["not-yet"] and nothing["sessions"][0]["last_seen"] is None
    assert nothing["totals"]["requests"] == 0 and nothing["trend"]["of"] == "session"


async def test_a_user_link_shows_that_users_trend_and_sessions_only(dash: Dashboard) -> None:
    link = await dash.link(user_id="alice", ttl_seconds=60)
    assert urlsplit(link["url"]).path == "/widget/user/alice"
    page = await dash.client.get(link["path"])
    assert page.status_code == 200 and ">Current session</h2>" not in page.text
    assert ">Usage trend</h2>" in page.text and ">Recent sessions</h2>" in page.text
    config = config_of(page.text)
    assert config["kind"] == "user" and config["data_url"].startswith("/widget/api/user/alice?")
    found = await figures(dash, link)
    assert found["kind"] == "user" and found["trend"]["of"] == "user" and "totals" not in found
    assert listed(found) == ["s-1", "chat/7 ü"]
    assert sum(day["requests"] for day in found["trend"]["daily"]) == 3
    assert "s-10" not in json.dumps(found) and "s-old" not in json.dumps(found)
    nobody = await figures(dash, await dash.link(user_id="nobody"))
    assert nobody["sessions"] == [] and sum(day["requests"] for day in nobody["trend"]["daily"]) == 0


async def test_a_user_link_names_the_id_the_proxy_stores(settings: Settings) -> None:
    hashed = Settings(**{**settings.__dict__, "user_id_hash_secret": "pepper"})
    stored = UserIds(secret="pepper").stored("alice")
    assert stored is not None and stored != "alice"
    async with proxy_client(create_app(hashed)) as client:
        for session in ("h-1", "h-2"):
            logged = await client.post("/api/usage/log", headers=admin_headers(), json={
                "session_id": session, "user_id": "alice", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1})
            assert logged.status_code == 201
        link = (await client.post("/api/widget-links", json={"user_id": "alice"}, headers=admin_headers())).json()
        assert urlsplit(link["url"]).path == f"/widget/user/{stored}" and "alice" not in link["url"]
        config = config_of((await client.get(link["path"])).text)
        found = (await client.get(config["data_url"])).json()
    assert listed(found) == ["h-2", "h-1"] and config["subject"] == stored and "alice" not in config["data_url"]


def tampered(path: str) -> str:
    signature = parse_qs(urlsplit(path).query)["sig"][0]
    return path.replace(signature, ("B" if signature[0] == "A" else "A") + signature[1:])


@pytest.mark.parametrize("change", ["tampered", "other_session", "expired", "no_signature", "longer_expiry",
                                    "as_user"])
async def test_a_session_link_tampered_with_expired_or_moved_answers_403(dash: Dashboard, change: str) -> None:
    link = await dash.link("s-1", ttl_seconds=60)
    path = link["path"]
    query = urlsplit(path).query
    if change == "tampered":
        path = tampered(path)
    elif change == "other_session":
        path = path.replace("/s-1?", "/s-10?")
    elif change == "expired":
        dash.clock.now += dt.timedelta(seconds=60)
    elif change == "no_signature":
        path = path.split("&sig=")[0]
    elif change == "as_user":  # the same id and signature, replayed as a link for a user of that id
        path = path.replace("/widget/session/", "/widget/user/")
    else:
        exp = parse_qs(query)["exp"][0]
        path = path.replace(f"exp={exp}", f"exp={int(exp) + 3600}")
    page = await dash.client.get(path)
    assert page.status_code == 403 and "not valid or has expired" in page.text
    data = await dash.client.get(re.sub(r"^/widget/(session|user)/", r"/widget/api/\1/", path))
    assert data.status_code == 403 and data.json()["error"]["code"] == "invalid_widget_link"


@pytest.mark.parametrize("change", ["tampered", "other_user", "expired", "as_session"])
async def test_a_user_link_tampered_with_expired_or_moved_answers_403(dash: Dashboard, change: str) -> None:
    link = await dash.link(user_id="alice", ttl_seconds=60)
    path = link["path"]
    if change == "tampered":
        path = tampered(path)
    elif change == "other_user":
        path = path.replace("/alice?", "/bob?")
    elif change == "expired":
        dash.clock.now += dt.timedelta(seconds=60)
    else:  # a user link replayed as a link for a session of that id
        path = path.replace("/widget/user/", "/widget/session/")
    page = await dash.client.get(path)
    assert page.status_code == 403 and "not valid or has expired" in page.text
    data = await dash.client.get(re.sub(r"^/widget/(session|user)/", r"/widget/api/\1/", path))
    assert data.status_code == 403 and "alice" not in data.text


async def test_the_widget_speaks_german_too(dash: Dashboard) -> None:
    for link, current in ((await dash.link("s-1"), True), (await dash.link(user_id="alice"), False)):
        page = await dash.client.get(link["path"], headers={"accept-language": "de"})
        assert "Token-Nutzung" in page.text and ">Verlauf</h2>" in page.text and ">Letzte Sitzungen</h2>" in page.text
        assert (">Aktuelle Sitzung</h2>" in page.text) is current


async def test_a_widget_link_for_an_odd_session_id_round_trips(dash: Dashboard) -> None:
    link = await dash.link("chat/7 ü")
    assert "/widget/session/chat%2F7%20%C3%BC?" in link["url"]
    found = await figures(dash, link)
    assert found["session_id"] == "chat/7 ü" and found["totals"]["unpriced_requests"] == 1
    assert listed(found) == ["s-1", "chat/7 ü"]


async def test_a_widget_link_for_a_session_without_records_shows_zeros(dash: Dashboard) -> None:
    found = await figures(dash, await dash.link("not-yet"))
    assert found["totals"]["requests"] == 0 and found["trend"]["of"] == "session"


def test_the_openapi_description_takes_a_session_or_a_user() -> None:
    body = admin_openapi()["paths"]["/api/widget-links"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"session_id", "user_id", "ttl_seconds"}
    assert [choice["required"] for choice in schema["oneOf"]] == [["session_id"], ["user_id"]]
