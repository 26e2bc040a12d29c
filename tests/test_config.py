"""Settings: flags over TOKENMETER_* variables over defaults, checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.errors import ConfigError


def test_defaults_match_the_contract() -> None:
    settings = Settings.load(environ={})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.upstream == "https://api.openai.com/v1"
    assert settings.database_url == "sqlite:///./tokenmeter.db"
    assert (settings.session_header, settings.user_header) == ("X-Session-Id", "X-User-Id")
    assert settings.max_body_bytes == 52_428_800 and settings.shutdown_grace_seconds == 30


def test_variables_set_and_flags_win() -> None:
    environ = {"TOKENMETER_PORT": "9000", "TOKENMETER_UPSTREAM": "http://localhost:11434/v1",
               "TOKENMETER_ADMIN_TOKEN": "from-env", "TOKENMETER_PRICING": "/etc/prices.yaml",
               "TOKENMETER_UPSTREAM_API_KEY": "sk-upstream"}
    settings = Settings.load({"port": 9100, "admin_token": None}, environ=environ)
    assert settings.port == 9100 and settings.admin_token == "from-env"
    assert settings.upstream == "http://localhost:11434/v1" and settings.pricing == Path("/etc/prices.yaml")
    assert settings.upstream_api_key == "sk-upstream"


def test_tiktokens_own_cache_variable_is_respected() -> None:
    assert Settings.load(environ={"TIKTOKEN_CACHE_DIR": "/cache"}).tiktoken_cache_dir == Path("/cache")


def test_settings_survive_the_trip_to_worker_processes() -> None:
    settings = Settings.load({"port": 9100, "admin_token": "t", "workers": 3}, environ={})
    assert Settings.load(environ=settings.to_environ()) == settings


@pytest.mark.parametrize(("environ", "named"), [
    ({"TOKENMETER_PORT": "eighty"}, "TOKENMETER_PORT"),
    ({"TOKENMETER_PORT": "0"}, "TOKENMETER_PORT"),
    ({"TOKENMETER_UPSTREAM": "api.openai.com"}, "TOKENMETER_UPSTREAM"),
    ({"TOKENMETER_DATABASE_URL": "mysql://x"}, "TOKENMETER_DATABASE_URL"),
    ({"TOKENMETER_MAX_BODY_BYTES": "-1"}, "TOKENMETER_MAX_BODY_BYTES"),
    ({"TOKENMETER_SESSION_HEADER": " "}, "TOKENMETER_SESSION_HEADER"),
])
def test_a_bad_setting_is_named_in_the_error(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.load(environ=environ)


@pytest.mark.parametrize("upstream", ["http://user:pw@api.example/v1", "http://api.example/v1?x=1",
                                      "http://api.example/v1#frag", "ftp://api.example/v1", "http:///v1"])
def test_an_upstream_url_is_a_plain_base_url(upstream: str) -> None:
    with pytest.raises(ConfigError, match="TOKENMETER_UPSTREAM"):
        Settings.load(environ={"TOKENMETER_UPSTREAM": upstream})


def test_the_forward_proxy_comes_from_the_standard_variables_lowercase_first() -> None:
    environ = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "HTTP_PROXY": "proxy:3128",
               "NO_PROXY": "localhost, .internal", "TOKENMETER_NO_PROXY": "ignored"}
    settings = Settings.load(environ=environ)
    assert (settings.https_proxy, settings.http_proxy, settings.no_proxy) == (
        "http://lower:2", "proxy:3128", "localhost, .internal")
    assert Settings.load(environ={"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}).https_proxy is None
    assert "HTTPS_PROXY" not in str(settings.to_environ())  # workers inherit the variables themselves


def test_a_proxy_password_is_never_shown() -> None:
    settings = Settings.load(environ={"HTTPS_PROXY": "http://alice:s3cret@proxy:3128"})
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"https_proxy": "https://alice:s3cret@proxy:3128"})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(("environ", "says"), [
    ({"HTTPS_PROXY": "https://proxy:3128"}, "HTTPS_PROXY .* https:// proxies are not supported, only http:// ones"),
    ({"http_proxy": "socks5://proxy:1080"}, "HTTP_PROXY .* socks5:// proxies are not supported"),
    ({"HTTPS_PROXY": "http://proxy"}, "HTTPS_PROXY .* names no host and port"),
    ({"HTTPS_PROXY": "http://proxy:99999"}, "HTTPS_PROXY .* not a URL"),
    ({"HTTPS_PROXY": "http://proxy:3128/path"}, "HTTPS_PROXY .* has a path"),
])
def test_a_proxy_url_must_be_an_http_proxy_with_a_port(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.load(environ=environ)


def test_the_ca_bundle_must_be_a_readable_pem_file(tmp_path: Path) -> None:
    for path, says in ((tmp_path / "missing.pem", "No such file"), (tmp_path, "Is a directory")):
        with pytest.raises(ConfigError, match=f"TOKENMETER_UPSTREAM_CA_BUNDLE must name a readable PEM file.*{says}"):
            Settings.load(environ={"TOKENMETER_UPSTREAM_CA_BUNDLE": str(path)})
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n...\n")
    with pytest.raises(ConfigError, match=r"TOKENMETER_UPSTREAM_CA_BUNDLE names .* which holds no PEM certificate"):
        Settings.load(environ={"TOKENMETER_UPSTREAM_CA_BUNDLE": str(tmp_path / "key.pem")})
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n...\n")
    settings = Settings.load(environ={"TOKENMETER_UPSTREAM_CA_BUNDLE": str(tmp_path / "ca.pem")})
    assert settings.upstream_ca_bundle == tmp_path / "ca.pem"
    assert Settings.load(environ=settings.to_environ()) == settings


def test_webhook_urls_need_a_standard_webhooks_secret_and_neither_is_shown() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    urls = "https://hooks.slack.com/services/T0/B0/token-in-the-path, http://127.0.0.1:9/hook?sig=abc"
    settings = Settings.load(environ={"TOKENMETER_WEBHOOK_URLS": urls, "TOKENMETER_WEBHOOK_SECRET": secret})
    assert settings.webhook_url_list == ["https://hooks.slack.com/services/T0/B0/token-in-the-path",
                                         "http://127.0.0.1:9/hook?sig=abc"]
    assert "token-in-the-path" not in repr(settings) and secret not in repr(settings)
    assert Settings.load(environ=settings.to_environ()) == settings  # worker processes get both
    assert Settings.load(environ={}).webhook_url_list == []
    for environ, says in (
        ({"TOKENMETER_WEBHOOK_URLS": urls}, "TOKENMETER_WEBHOOK_SECRET must be set when TOKENMETER_WEBHOOK_URLS"),
        ({"TOKENMETER_WEBHOOK_SECRET": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "does not start with whsec_"),
        ({"TOKENMETER_WEBHOOK_SECRET": "whsec_not base64!"}, "what follows whsec_ is not base64"),
        ({"TOKENMETER_WEBHOOK_SECRET": "whsec_"}, "it is empty"),
        ({"TOKENMETER_WEBHOOK_URLS": "https://ok.example/a,ftp://x/secret-token", "TOKENMETER_WEBHOOK_SECRET": secret},
         "TOKENMETER_WEBHOOK_URLS must be comma-separated http\\(s\\) URLs; entry 2 is not$"),
    ):
        with pytest.raises(ConfigError, match=says) as refused:
            Settings.load(environ=environ)
        assert "secret-token" not in str(refused.value) and "MfKQ9r8G" not in str(refused.value)
