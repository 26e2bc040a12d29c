"""Settings: built once from flags and `TOKENMETER_*` variables, validated, then frozen.

This is the only module that reads the environment. Every flag of `tokenmeter-proxy serve`
has a variable of the same name with the `TOKENMETER_` prefix; a flag wins over its variable.
OpenAI's admin key keeps its own name, `OPENAI_ADMIN_KEY`, and is never shown (`repr=False`).
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
PACKAGED_PRICING = Path(__file__).with_name("default_pricing.yaml")
ENV_PREFIX = "TOKENMETER_"
# Read from variables of their own: tiktoken's (which tiktoken itself reads too, so both agree),
# and OpenAI's admin key under the name OpenAI's documentation gives it.
_NOT_FROM_PREFIX = frozenset({"tiktoken_cache_dir", "openai_admin_key"})


@dataclass(frozen=True)
class Settings:
    """Everything the proxy needs to know about its deployment."""

    upstream: str = DEFAULT_UPSTREAM
    database_url: str = DEFAULT_DATABASE_URL
    pricing: Path = DEFAULT_PRICING
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
        self.budget_defaults()

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
        """The pricing file in force: the configured one, else the copy shipped in the package."""
        if self.pricing == DEFAULT_PRICING and not self.pricing.exists() and PACKAGED_PRICING.exists():
            return PACKAGED_PRICING
        return self.pricing

    def to_environ(self) -> dict[str, str]:
        """These settings as `TOKENMETER_*` variables, for worker processes that rebuild them."""
        environ = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and field.name not in _NOT_FROM_PREFIX:
                environ[ENV_PREFIX + field.name.upper()] = str(value)
        return environ


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
        if kind == "Path":
            return Path(str(value))
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be a {kind}, got {value!r}") from None
    return str(value)
