"""The routes file: which upstream a path goes to, in which protocol, for which provider; refused
line by line when it is wrong; shipped with the package and found in every kind of install."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tokenmeter_proxy.config import Settings, shipped_file
from tokenmeter_proxy.errors import RoutesError
from tokenmeter_proxy.routes import parse_routes
from tokenmeter_proxy.watched import RouteBook

ROOT = Path(__file__).resolve().parents[1]
GOOD = """\
routes:
  anthropic:  {upstream: https://api.anthropic.com, protocol: anthropic}
  gemini:     {upstream: https://generativelanguage.googleapis.com, protocol: gemini, provider: google}
  openrouter: {upstream: https://openrouter.ai/api/v1/, protocol: openai, provider: openrouter}
  azure:      {upstream: https://my-resource.openai.azure.com, protocol: openai, provider: azure}
  team:       {upstream: https://api.anthropic.com, protocol: anthropic, provider: anthropic, api_key_env: TEAM_KEY}
  local:      {upstream: http://127.0.0.1:11434/v1, protocol: openai, provider: ollama, api_key_env: null,
               inject_usage: true}
"""


def test_each_route_names_its_upstream_protocol_and_provider() -> None:
    table = parse_routes(GOOD, environment={"TEAM_KEY": "sk-team"}.get)
    anthropic, gemini, openrouter = table.routes["anthropic"], table.routes["gemini"], table.routes["openrouter"]
    assert (anthropic.prefix, anthropic.protocol.name, anthropic.provider) == (b"/anthropic", "anthropic", "anthropic")
    assert (gemini.provider, gemini.origin, gemini.base_path) == ("google", "https://generativelanguage.googleapis.com",
                                                                 b"")
    assert (openrouter.origin, openrouter.base_path) == ("https://openrouter.ai", b"/api/v1")
    assert table.routes["team"].api_key == "sk-team" and "sk-team" not in repr(table.routes["team"])
    assert table.routes["local"].api_key is None and not table.warnings


def test_usage_is_asked_for_by_default_only_where_the_provider_needs_it() -> None:
    routes = parse_routes(GOOD).routes
    assert routes["azure"].inject_usage and routes["local"].inject_usage  # Azure's default; local says so
    assert not routes["openrouter"].inject_usage  # OpenRouter reports usage unasked


def test_a_variable_that_is_not_set_is_a_warning_not_a_refusal() -> None:
    table = parse_routes(GOOD, source="r.yaml")
    assert table.routes["team"].api_key is None
    assert table.warnings == ("r.yaml:6: routes.team.api_key_env: TEAM_KEY is not set; clients' own credentials "
                              "pass through until it is",)


@pytest.mark.parametrize(("text", "line", "words"), [
    ("routes:\n  a: {upstream: https://x.example, protocol: carrier-pigeon}\n", 2, "unknown protocol"),
    ("routes:\n  api: {upstream: https://x.example/v1, protocol: openai}\n", 2, "reserved"),
    ("routes:\n  v1: {upstream: https://x.example/v1, protocol: openai}\n", 2, "reserved"),
    ("routes:\n  Open_Router: {upstream: https://x.example, protocol: openai}\n", 2, "route name"),
    ("routes:\n  a: {upstream: https://x.example, protocol: openai}\n  a: {upstream: https://y.example, "
     "protocol: openai}\n", 3, "appears twice"),
    ("routes:\n  a:\n    upstream: localhost-11434\n    protocol: openai\n", 3, "not an http(s) URL"),
    ("routes:\n  a: {protocol: openai}\n", 2, "upstream: missing"),
    ("routes:\n  a: {upstream: https://x.example, protocol: anthropic, inject_usage: true}\n", 2, "openai only"),
    ("routes:\n  a: {upstream: https://x.example, protocol: openai, colour: blue}\n", 2, "unknown key 'colour'"),
    ("routes:\n  a: {upstream: https://x.example, protocol: openai, provider: Big Co}\n", 2, "provider name"),
    ("routes:\n  a: {upstream: https://x.example, protocol: openai, api_key_env: 9lives}\n", 2, "variable name"),
    ("routes: [a, b]\n", 1, "mapping"),
    ("models: {}\n", 1, "unknown key"),
    ("routes:\n  a: {upstream: [\n", 3, "not valid YAML"),
])
def test_a_broken_file_is_refused_naming_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(RoutesError) as refused:
        parse_routes(text, source="routes.yaml")
    problems = refused.value.problems
    assert any(problem.startswith(f"routes.yaml:{line}: ") and words in problem for problem in problems), problems


def test_an_empty_routes_key_means_only_the_built_in_route() -> None:
    assert parse_routes("routes:\n").routes == {}


def test_the_route_book_takes_valid_edits_and_keeps_its_routes_through_broken_ones(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  a: {upstream: https://a.example, protocol: openai}\n")
    book = RouteBook.open(path)
    path.write_text("routes:\n  b: {upstream: https://b.example, protocol: anthropic}\n")
    assert book.reload_if_changed() and set(book.current.routes) == {"b"}
    path.write_text("routes:\n  b: {upstream: https://b.example, protocol: anthropic}\n  c: {upstream: nowhere}\n")
    with caplog.at_level(logging.ERROR):
        assert not book.reload_if_changed()
    assert set(book.current.routes) == {"b"} and f"{path}:3: routes.c.upstream" in caplog.text


def test_without_a_routes_file_only_the_built_in_route_serves_until_one_appears(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    book = RouteBook.open(None)
    assert book.current.routes == {} and not book.reload_if_changed()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "routes.yaml").write_text("routes:\n  a: {upstream: https://a.example, protocol: openai}\n")
    assert book.reload_if_changed() and set(book.current.routes) == {"a"}


def test_the_shipped_routes_file_is_valid_and_routes_to_the_real_providers() -> None:
    shipped = shipped_file("routes.yaml")
    assert shipped == ROOT / "config" / "routes.yaml"  # this checkout's, as an editable install finds it
    routes = parse_routes(shipped.read_text()).routes
    assert {name: route.upstream for name, route in routes.items()} == {
        "anthropic": "https://api.anthropic.com", "gemini": "https://generativelanguage.googleapis.com",
        "openrouter": "https://openrouter.ai/api/v1"}


def test_an_editable_install_finds_the_shipped_files_from_any_directory(tmp_path: Path) -> None:
    """`make run` installs with `pip install -e`: `serve` outside the checkout must still find the
    pricing and routes files, which exist there only in the checkout's config/."""
    script = ("from tokenmeter_proxy.config import Settings; s = Settings.load(environ={}); "
              "print(s.pricing_path); print(s.routes_path)")
    found = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert found.stdout.split() == [str(ROOT / "config" / "pricing.yaml"), str(ROOT / "config" / "routes.yaml")]
    assert Settings(routes=tmp_path / "mine.yaml").routes_path == tmp_path / "mine.yaml"  # a file of one's own wins


def test_a_wheel_install_finds_the_shipped_files_from_any_directory(tmp_path: Path) -> None:
    """Installed from a wheel, the files live in the package: check it carries them, and that a
    copy of the package with nothing around it finds them."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("tokenmeter_proxy-*.whl")
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "tokenmeter_proxy" / "default_routes.yaml").read_text() == (ROOT / "config/routes.yaml").read_text()
    script = ("import tokenmeter_proxy.config as c; s = c.Settings.load(environ={}); "
              "print(c.__file__); print(s.pricing_path); print(s.routes_path)")
    found = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True,
                           env={"PYTHONPATH": str(site), "PATH": shutil.os.environ["PATH"]})
    module, pricing, routes = found.stdout.split()
    assert module.startswith(str(site))
    assert (pricing, routes) == (str(site / "tokenmeter_proxy/default_pricing.yaml"),
                                 str(site / "tokenmeter_proxy/default_routes.yaml"))
