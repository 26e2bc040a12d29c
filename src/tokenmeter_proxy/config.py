"""Settings: built once from flags and `TOKENMETER_*` variables, validated, then frozen.

This is the only module that reads the environment. Every flag of `tokenmeter-proxy serve`
has a variable of the same name with the `TOKENMETER_` prefix; a flag wins over its variable.
OpenAI's admin key keeps its own name, `OPENAI_ADMIN_KEY`, and is never shown (`repr=False`);
the forward proxy's standard variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) keep theirs, and
the proxy URLs, which may hold a password, are never shown either.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
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
_NOT_FROM_PREFIX = frozenset({"tiktoken_cache_dir", "openai_admin_key", "https_proxy", "http_proxy", "no_proxy",
                              "telemetry"})
_PROXY_SHAPE = "http://[user:password@]host:port"


@dataclass(frozen=True)
class TelemetrySettings:
    """Which OpenTelemetry exports are on, from the standard `OTEL_*` variables: OTLP (http/protobuf)
    only where an endpoint is set, so nothing goes to the SDK's default localhost:4318. The SDK
    reads the rest of its variables itself (service name, resource, headers, intervals...)."""

    otlp_traces: bool = False  # OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    otlp_metrics: bool = False  # OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
    console_traces: bool = False  # OTEL_TRACES_EXPORTER=console: spans printed to stdout
    # OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta (or lowmemory): histograms as deltas
    delta_histograms: bool = False
    metric_interval: float = 60.0  # seconds between metric exports (OTEL_METRIC_EXPORT_INTERVAL, in ms)
    metric_timeout: float = 30.0  # seconds an export may take (OTEL_METRIC_EXPORT_TIMEOUT, in ms)
    span_delay: float = 5.0  # seconds between span exports at most (OTEL_BSP_SCHEDULE_DELAY, in ms)
    span_queue: int = 2048  # spans waiting for export at most; more are dropped (OTEL_BSP_MAX_QUEUE_SIZE)
    span_batch: int = 512  # spans per export at most, and how many start one early (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)

    @property
    def enabled(self) -> bool:
        return self.otlp_traces or self.otlp_metrics or self.console_traces

    @property
    def traces(self) -> bool:
        return self.otlp_traces or self.console_traces


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
    budget_lease_seconds: float = 30.0  # a process that dies holds its budget leases this long
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
    # OpenTelemetry: from the standard OTEL_* variables (see TelemetrySettings), off by default
    telemetry: TelemetrySettings = TelemetrySettings()
    # Alert webhooks: comma-separated http(s) URLs (a Slack or Teams URL is itself a secret, so
    # never shown), and the Standard Webhooks secret `whsec_<base64>` that signs every delivery.
    webhook_urls: str = dataclasses.field(default="", repr=False)
    webhook_secret: str | None = dataclasses.field(default=None, repr=False)

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
        values["telemetry"] = telemetry_settings(environ)
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
        if not 3 <= self.budget_lease_seconds <= 3600:
            raise ConfigError(f"{ENV_PREFIX}BUDGET_LEASE_SECONDS must be from 3 to 3600 seconds")
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
        self._validate_webhooks()
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

    def _validate_webhooks(self) -> None:
        for n, url in enumerate(self.webhook_url_list, 1):
            if not _is_webhook_url(url):  # never the URL itself: a Slack or Teams URL holds its token
                raise ConfigError(f"TOKENMETER_WEBHOOK_URLS must be comma-separated http(s) URLs; entry {n} is not")
        if self.webhook_secret is not None:
            webhook_secret_bytes(self.webhook_secret)
        elif self.webhook_url_list:
            raise ConfigError("TOKENMETER_WEBHOOK_SECRET must be set when TOKENMETER_WEBHOOK_URLS is: a secret "
                              "of the form whsec_<base64> (e.g. whsec_ followed by `openssl rand -base64 32`)")

    @property
    def webhook_url_list(self) -> list[str]:
        """The URLs alert webhooks go to (none: alerts are off)."""
        return [url.strip() for url in self.webhook_urls.split(",") if url.strip()]

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


def webhook_secret_bytes(secret: str) -> bytes:
    """The key of a Standard Webhooks secret `whsec_<base64>`; `ConfigError` naming the variable
    (but never the secret) when it is not one."""
    shape = "TOKENMETER_WEBHOOK_SECRET must be whsec_ followed by base64 (e.g. whsec_ and `openssl rand -base64 32`)"
    if not secret.startswith("whsec_"):
        raise ConfigError(f"{shape}; it does not start with whsec_")
    encoded = secret.removeprefix("whsec_").strip()
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{shape}; what follows whsec_ is not base64") from None
    if not key:
        raise ConfigError(f"{shape}; it is empty")
    return key


def telemetry_settings(environ: Mapping[str, str]) -> TelemetrySettings:
    """Which exports the standard OpenTelemetry variables turn on; `ConfigError` naming the variable
    for an exporter, protocol or interval this proxy cannot use (checked only when an export is on:
    the environment may hold other programs' settings)."""
    def given(name: str) -> str:
        return environ.get(name, "").strip()

    if given("OTEL_SDK_DISABLED").lower() == "true":
        return TelemetrySettings()
    traces = _otel_choice(given, "OTEL_TRACES_EXPORTER", ("otlp", "console", "none"))
    metrics = _otel_choice(given, "OTEL_METRICS_EXPORTER", ("otlp", "none"))
    endpoint = given("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
    settings = TelemetrySettings(
        otlp_traces="otlp" in traces and (endpoint or given("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""),
        otlp_metrics="otlp" in metrics and (endpoint or given("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""),
        console_traces="console" in traces,
    )
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):
        if settings.enabled and given(name) not in ("", "http/protobuf"):
            raise ConfigError(f"{name} must be http/protobuf (the only OTLP protocol this proxy exports with); "
                              f"got {given(name)!r}")
    if settings.otlp_traces:
        settings = dataclasses.replace(
            settings, span_delay=_otel_number(given, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
            span_queue=int(_otel_number(given, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, unit="spans")),
            span_batch=int(_otel_number(given, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, unit="spans")))
    if not settings.otlp_metrics:
        return settings
    temporality = given("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE").lower() or "cumulative"
    if temporality not in ("cumulative", "delta", "lowmemory"):
        raise ConfigError("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE must be cumulative, delta or lowmemory; "
                          f"got {temporality!r}")
    return dataclasses.replace(
        settings, delta_histograms=temporality != "cumulative",
        metric_interval=_otel_number(given, "OTEL_METRIC_EXPORT_INTERVAL", 60000) / 1000,
        metric_timeout=_otel_number(given, "OTEL_METRIC_EXPORT_TIMEOUT", 30000) / 1000)


def _otel_choice(given: Callable[[str], str], name: str, choices: tuple[str, ...]) -> set[str]:
    chosen = {part.strip() for part in (given(name) or "otlp").split(",") if part.strip()}
    if not chosen <= set(choices):
        raise ConfigError(f"{name} must be {', '.join(choices)} (comma-separated); got {given(name)!r}")
    return chosen


def _otel_number(given: Callable[[str], str], name: str, default: float, *, unit: str = "milliseconds"
                       ) -> float:
    try:
        value = float(given(name) or default)
    except ValueError:
        value = -1
    if not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a positive number of {unit}; got {given(name)!r}")
    return value


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


def _is_webhook_url(url: str) -> bool:
    """An http(s) URL naming a host (a query is allowed: Teams workflow URLs carry their signature there)."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(hostname) and not parts.fragment


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
