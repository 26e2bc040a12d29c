"""Settings: built once from flags and `TOKENMETER_*` variables, validated, then frozen.

This is the only module that reads the environment. Every flag of `tokenmeter-proxy serve`
has a variable of the same name with the `TOKENMETER_` prefix; a flag wins over its variable.
OpenAI's admin key keeps its own name, `OPENAI_ADMIN_KEY`, and is never shown (`repr=False`);
the forward proxy's standard variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) keep theirs, and
the proxy URLs, which may hold a password, are never shown either.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .budgets import Budget, parse_budget
from .errors import BadRequest, ConfigError

DEFAULT_UPSTREAM = "https://api.openai.com/v1"
DEFAULT_OPENAI_API_BASE = "https://api.openai.com/v1"
DEFAULT_DATABASE_URL = "sqlite:///./tokenmeter.db"
DEFAULT_PRICING = Path("config/pricing.yaml")
DEFAULT_ROUTES = Path("config/routes.yaml")
# The files shipped with the package: in a wheel, beside this module (default_pricing.yaml...);
# in a source checkout and its editable install (`pip install -e`), in the checkout's config/.
_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT_CONFIG = _PACKAGE.parents[1] / "config"
ENV_PREFIX = "TOKENMETER_"
# Read from variables of their own: tiktoken's (which tiktoken itself reads too, so both agree),
# OpenAI's admin key under the name OpenAI's documentation gives it, and the forward proxy's
# standard variables, which every other program on the machine reads too.
_NOT_FROM_PREFIX = frozenset({"tiktoken_cache_dir", "openai_admin_key", "https_proxy", "http_proxy", "no_proxy"})
_PROXY_SHAPE = "http://[user:password@]host:port"


@dataclass(frozen=True)
class Settings:
    """Everything the proxy needs to know about its deployment."""

    upstream: str = DEFAULT_UPSTREAM
    database_url: str = DEFAULT_DATABASE_URL
    pricing: Path = DEFAULT_PRICING
    routes: Path = DEFAULT_ROUTES  # routes to further upstreams; the built-in /v1 needs none
    admin_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    session_header: str = "X-Session-Id"
    user_header: str = "X-User-Id"
    upstream_api_key: str | None = None
    max_body_bytes: int = 52_428_800
    shutdown_grace_seconds: float = 30.0
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 600.0
    upstream_write_timeout: float = 60.0
    upstream_total_timeout: float = 0.0  # the whole exchange, streams included; 0: no limit
    upstream_max_connections: int = 1000
    user_id_hash_secret: str | None = None  # set: user ids are stored as keyed hashes (pseudonymised)
    spool_dir: Path = Path("tokenmeter-spool")  # records wait here while the database is unreachable
    default_budgets: str = ""  # JSON list of budgets without a subject, e.g. [{"scope": "session", ...}]
    unpriced: str = "refuse"  # under a cost budget, a model without a price is refused, or "allow"ed
    budget_failure: str = "open"  # when budgets cannot be checked (database down): admit ("open") or refuse
    tiktoken_cache_dir: Path = Path(tempfile.gettempdir()) / "data-gym-cache"
    openai_api_base: str = DEFAULT_OPENAI_API_BASE  # where sync-openai reads the organization's usage
    # OPENAI_ADMIN_KEY: read only to call the usage API; never logged, stored, or shown in a repr
    openai_admin_key: str | None = dataclasses.field(default=None, repr=False)
    upstream_ca_bundle: Path | None = None  # PEM file of authorities to trust upstream, besides the system's
    # HTTPS_PROXY, HTTP_PROXY, NO_PROXY: the forward proxy on the way upstream (upstream.py picks
    # one per origin). Their URLs may hold a password, so they are never shown.
    https_proxy: str | None = dataclasses.field(default=None, repr=False)
    http_proxy: str | None = dataclasses.field(default=None, repr=False)
    no_proxy: str | None = None

    @classmethod
    def load(
        cls, overrides: Mapping[str, object | None] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from `environ` (default: the process environment), then `overrides` (flags).

        Keys are field names; `None` overrides are ignored, so unset flags fall through.
        Raises `ConfigError` naming the variable and what to do.
        """
        environ = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            if field.name in _NOT_FROM_PREFIX:
                continue
            variable = ENV_PREFIX + field.name.upper()
            if environ.get(variable, "") != "":
                raw[field.name] = environ[variable]
        for name, value in (overrides or {}).items():
            if value is not None:
                raw[name] = value
        if "tiktoken_cache_dir" not in raw:
            # tiktoken's own lookup order, so the files we prime are where it will look
            for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
                if environ.get(variable):
                    raw["tiktoken_cache_dir"] = environ[variable]
                    break
        if "openai_admin_key" not in raw and environ.get("OPENAI_ADMIN_KEY", "").strip():
            raw["openai_admin_key"] = environ["OPENAI_ADMIN_KEY"].strip()
        for name in ("https_proxy", "http_proxy", "no_proxy"):
            # the lowercase name wins, as for curl and urllib; set but empty, it means none
            value = environ.get(name, environ.get(name.upper(), "")).strip()
            if name not in raw and value:
                raw[name] = value
        values = {name: _convert(cls, name, value) for name, value in raw.items()}
        settings = cls(**values)  # type: ignore[arg-type]
        settings._validate()
        return settings

    def _validate(self) -> None:
        for name, example in (("upstream", DEFAULT_UPSTREAM), ("openai_api_base", DEFAULT_OPENAI_API_BASE)):
            if not is_base_url(getattr(self, name)):
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()} must be an http(s) URL with its version prefix, "
                    f"such as {example}; got {getattr(self, name)!r}"
                )
        if not self.database_url.startswith(("sqlite:///", "postgresql")):
            raise ConfigError(
                "TOKENMETER_DATABASE_URL must look like sqlite:///path.db or "
                f"postgresql+psycopg://user@host:port/db; got {self.database_url!r}"
            )
        for name in ("port", "workers", "max_body_bytes", "upstream_max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be at least 1")
        for name in ("session_header", "user_header"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must name an HTTP header")
        for name, choices in (("unpriced", ("refuse", "allow")), ("budget_failure", ("open", "closed"))):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be one of {', '.join(choices)}")
        self._validate_egress()
        self.budget_defaults()

    def _validate_egress(self) -> None:
        for name in ("https_proxy", "http_proxy"):
            url = getattr(self, name)
            if url is not None and (problem := _proxy_problem(url)):
                # never the URL itself: it may hold a password
                raise ConfigError(f"{name.upper()} (or {name}) must be {_PROXY_SHAPE}: {problem}")
        bundle = self.upstream_ca_bundle
        if bundle is not None:
            try:
                pem = bundle.read_bytes()
            except OSError as exc:
                raise ConfigError(f"TOKENMETER_UPSTREAM_CA_BUNDLE must name a readable PEM file of certificate "
                                  f"authorities: {exc.strerror}: {str(bundle)!r}") from None
            if b"-----BEGIN CERTIFICATE-----" not in pem:
                raise ConfigError(f"TOKENMETER_UPSTREAM_CA_BUNDLE names {str(bundle)!r}, which holds no PEM "
                                  "certificate (-----BEGIN CERTIFICATE-----)")

    def budget_defaults(self) -> list[Budget]:
        """The default budgets of `TOKENMETER_DEFAULT_BUDGETS`, which apply to every session, user
        or key without a budget of its own for that period."""
        if not self.default_budgets.strip():
            return []
        example = '[{"scope": "session", "period": "day", "max_cost": 1}]'
        try:
            listed = json.loads(self.default_budgets)
            if not isinstance(listed, list):
                raise ValueError("not a list")
            return [parse_budget(item, default=True) for item in listed]
        except (ValueError, BadRequest) as exc:
            raise ConfigError(f"TOKENMETER_DEFAULT_BUDGETS must be a JSON list such as {example}: {exc}") from None

    @property
    def pricing_path(self) -> Path:
        """The pricing file in force: the configured one, else the copy shipped with the package."""
        if self.pricing == DEFAULT_PRICING and not self.pricing.exists():
            return shipped_file("pricing.yaml") or self.pricing
        return self.pricing

    @property
    def routes_path(self) -> Path | None:
        """The routes file in force: the configured one, else the copy shipped with the package
        (None: there is none, and only the built-in /v1 route serves)."""
        if self.routes == DEFAULT_ROUTES and not self.routes.exists():
            return shipped_file("routes.yaml")
        return self.routes

    def to_environ(self) -> dict[str, str]:
        """These settings as `TOKENMETER_*` variables, for worker processes that rebuild them."""
        environ = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and field.name not in _NOT_FROM_PREFIX:
                environ[ENV_PREFIX + field.name.upper()] = str(value)
        return environ


def shipped_file(name: str) -> Path | None:
    """A configuration file shipped with the package (`pricing.yaml`, `routes.yaml`), wherever this
    install keeps it, or None."""
    for path in (_PACKAGE / f"default_{name}", _CHECKOUT_CONFIG / name):
        if path.is_file():
            return path
    return None


def environment_value(name: str) -> str | None:
    """The value of a variable a configuration file names (a route's `api_key_env`), or None."""
    value = os.environ.get(name, "").strip()
    return value or None


def _proxy_problem(url: str) -> str | None:
    """What is wrong with a forward proxy's URL (`host:port` alone means http://, as for curl),
    without repeating it."""
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        hostname, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"it is not a URL ({exc})"
    if parts.scheme != "http":
        return (f"{parts.scheme}:// proxies are not supported, only http:// ones (a tunnel to an https "
                "upstream through an http:// proxy is encrypted end to end all the same)")
    if not hostname or port is None:
        return "it names no host and port"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "it has a path, query or fragment"
    return None


def is_base_url(url: str) -> bool:
    """An http(s) URL naming a host, without credentials, query or fragment."""
    try:
        parts = urlsplit(url)
        hostname, username = parts.hostname, parts.username
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(hostname) and username is None
            and not parts.query and not parts.fragment)


def _convert(cls: type[Settings], name: str, value: object) -> object:
    field_types = {field.name: field.type for field in dataclasses.fields(cls)}
    if name not in field_types:
        raise ConfigError(f"unknown setting {name!r}")
    kind = field_types[name]
    try:
        if kind == "int":
            return int(str(value))
        if kind == "float":
            return float(str(value))
        if kind in ("Path", "Path | None"):
            return Path(str(value))
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be a {kind}, got {value!r}") from None
    return str(value)
