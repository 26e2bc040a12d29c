"""Routes: which upstream a path goes to, in which wire protocol, for which provider. Pure: the
routes file is parsed and checked here (line-precise), read and watched elsewhere.

    routes:
      anthropic:  {upstream: https://api.anthropic.com, protocol: anthropic}
      gemini:     {upstream: https://generativelanguage.googleapis.com, protocol: gemini, provider: google}
      openrouter: {upstream: https://openrouter.ai/api/v1, protocol: openai, provider: openrouter}

`/<name>/<rest>` goes to `{upstream}/<rest>`. The built-in route `openai` serves `/v1/<rest>` from
`TOKENMETER_UPSTREAM` and needs no file.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import yaml

from .config import is_base_url
from .errors import RoutesError
from .pricing import PROVIDER_NAME
from .providers import PROTOCOLS, WireProtocol
from .yaml_nodes import NodeChecker

RESERVED = frozenset({"openai", "v1", "api", "dashboard", "widget", "metrics", "healthz", "readyz"})
BUILTIN = "openai"
_NAME = re.compile(r"[a-z0-9-]{1,64}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = ("upstream", "protocol", "provider", "api_key_env", "inject_usage")
# Providers whose OpenAI-style streams report usage only when asked (stream_options.include_usage).
_INJECT_BY_DEFAULT = frozenset({"openai", "azure"})
_EXAMPLE = "anthropic: {upstream: https://api.anthropic.com, protocol: anthropic}"


@dataclass(frozen=True)
class Route:
    """One upstream behind a path prefix. `api_key` is the value of `api_key_env` when that names
    a variable that is set: it then replaces the client's credential upstream."""

    name: str
    prefix: bytes  # b"/v1" for the built-in route, else b"/" + name
    upstream: str  # base URL, with its version prefix where it has one
    protocol: WireProtocol
    provider: str
    inject_usage: bool
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)

    @functools.cached_property
    def origin(self) -> str:
        """`scheme://host[:port]` of the upstream: one connection pool each."""
        parts = urlsplit(self.upstream)
        return f"{parts.scheme}://{parts.netloc}"

    @functools.cached_property
    def base_path(self) -> bytes:
        """The upstream URL's path without its trailing slash: `/api/v1`, or empty."""
        return urlsplit(self.upstream).path.rstrip("/").encode()


@dataclass(frozen=True)
class RouteTable:
    """The routes of one routes file, by name. `warnings` are problems that do not refuse it
    (a variable `api_key_env` names that is not set); `version` hashes its text."""

    routes: Mapping[str, Route] = field(default_factory=dict)
    version: str = "none"
    warnings: tuple[str, ...] = ()


def builtin_route(upstream: str, *, api_key: str | None) -> Route:
    """The route `/v1` has without any file: `openai`, to `TOKENMETER_UPSTREAM`."""
    return Route(name=BUILTIN, prefix=b"/v1", upstream=upstream, protocol=PROTOCOLS["openai"], provider="openai",
                 inject_usage=True, api_key=api_key)


def parse_routes(text: str, *, source: str = "routes.yaml",
                 environment: Callable[[str], str | None] = lambda name: None) -> RouteTable:
    """Validate a routes file; raises `RoutesError` listing `source:line: problem` for each fault.
    `environment` looks up the variables that `api_key_env` names."""
    checker = _Checker(source, environment)
    routes = checker.file(checker.compose(text))
    if checker.problems:
        raise RoutesError(checker.problems)
    return RouteTable(routes=routes, version=hashlib.sha256(text.encode()).hexdigest()[:12],
                      warnings=tuple(checker.warnings))


class _Checker(NodeChecker):
    """Walks the composed YAML nodes, which keep their line numbers, collecting problems."""

    def __init__(self, source: str, environment: Callable[[str], str | None]) -> None:
        super().__init__(source)
        self.environment = environment
        self.warnings: list[str] = []

    def file(self, root: yaml.Node | None) -> dict[str, Route]:
        if self.problems:
            return {}  # not YAML
        if not isinstance(root, yaml.MappingNode):
            self.fail(root, f"the routes file must be a mapping with a 'routes' key, e.g. routes: {{{_EXAMPLE}}}")
            return {}
        top = self.mapping(root, "the file", allowed={"routes"})
        if "routes" not in top:
            self.fail(root, f"missing 'routes': list the routes, e.g. routes: {{{_EXAMPLE}}}")
            return {}
        if _is_null(top["routes"]):
            return {}  # `routes:` with nothing under it: no routes but the built-in one
        routes: dict[str, Route] = {}
        for name, key_node, value in self.entries(top["routes"], "routes"):
            self.matching(name, key_node, f"routes.{name}", pattern=_NAME,
                          rule="a route name is lowercase letters, digits and '-' (it becomes the path /<name>/)")
            if name in RESERVED:
                self.fail(key_node, f"routes.{name}: the name is reserved ({', '.join(sorted(RESERVED))}); "
                                    "choose another")
            route = self.route(name, value)
            if route is not None:
                routes[name] = route
        return routes

    def route(self, name: str, node: yaml.Node) -> Route | None:
        what = f"routes.{name}"
        fields = self.mapping(node, what, allowed=set(_KEYS))
        if not isinstance(node, yaml.MappingNode):
            return None
        upstream = self.text(fields.get("upstream"), node, f"{what}.upstream", required=True)
        if upstream is not None and not is_base_url(upstream):
            self.fail(fields["upstream"], f"{what}.upstream: {upstream!r} is not an http(s) URL such as "
                                          "https://api.anthropic.com or https://openrouter.ai/api/v1")
            upstream = None
        protocol_name = self.text(fields.get("protocol"), node, f"{what}.protocol", required=True)
        protocol = PROTOCOLS.get(protocol_name or "")
        if protocol_name is not None and protocol is None:
            self.fail(fields["protocol"], f"{what}.protocol: unknown protocol {protocol_name!r}; "
                                          f"use one of {', '.join(PROTOCOLS)}")
        provider = self.text(fields.get("provider"), node, f"{what}.provider") or name
        self.matching(provider, fields.get("provider", node), f"{what}.provider", pattern=PROVIDER_NAME,
                      rule="a provider name is lowercase letters, digits, '.', '_' and '-'")
        inject = self.flag(fields.get("inject_usage"), f"{what}.inject_usage")
        if inject is not None and protocol is not None and protocol.name != "openai":
            self.fail(fields["inject_usage"], f"{what}.inject_usage: applies to protocol openai only")
        variable, key = self.key_variable(fields.get("api_key_env"), what)
        if upstream is None or protocol is None:
            return None
        return Route(name=name, prefix=b"/" + name.encode(), upstream=upstream.rstrip("/"), protocol=protocol,
                     provider=provider, inject_usage=provider in _INJECT_BY_DEFAULT if inject is None else inject,
                     api_key_env=variable, api_key=key)

    def key_variable(self, node: yaml.Node | None, what: str) -> tuple[str | None, str | None]:
        """The variable `api_key_env` names and its value (a warning when it is not set)."""
        variable = self.text(node, node, f"{what}.api_key_env")
        if variable is None or node is None:
            return None, None
        if not _VARIABLE.fullmatch(variable):
            self.fail(node, f"{what}.api_key_env: {variable!r} is not an environment variable name")
            return None, None
        key = self.environment(variable)
        if key is None:
            self.warnings.append(f"{self.source}:{node.start_mark.line + 1}: {what}.api_key_env: {variable} is not "
                                 "set; clients' own credentials pass through until it is")
        return variable, key

    def text(self, node: yaml.Node | None, parent: yaml.Node | None, what: str, *,
             required: bool = False) -> str | None:
        """A text value; None when absent or null (a problem only when `required`)."""
        if node is None or _is_null(node):
            if required:
                self.fail(parent, f"{what}: missing; e.g. {_EXAMPLE}")
            return None
        if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
            self.fail(node, f"{what}: expected a text value")
            return None
        return str(node.value).strip()

    def flag(self, node: yaml.Node | None, what: str) -> bool | None:
        if node is None:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
            return str(node.value).lower() in ("true", "yes", "on")
        self.fail(node, f"{what}: expected true or false")
        return None


def _is_null(node: yaml.Node | None) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")
