"""Reading configuration YAML with line numbers: every problem becomes `source:line: message`.

The files (pricing, routes) are composed into nodes rather than loaded into Python values,
because nodes keep the line they start on. A `NodeChecker` walks them, collects every
problem instead of stopping at the first, and returns a harmless stand-in for a bad value so
the walk can go on:

    checker = NodeChecker("routes.yaml")
    root = checker.compose(text)
    for name, key_node, value in checker.entries(root, "routes"):
        checker.matching(name, key_node, f"routes.{name}", pattern=NAME, rule="a name is a-z, 0-9 and -")
        fields = checker.mapping(value, f"routes.{name}", allowed={"upstream", "protocol"})
    if checker.problems:
        raise RoutesError(checker.problems)

Numbers are read from the YAML text as written, straight into `Decimal`: "2.50" never passes
through a float, and a quoted '1.5' is text, reported as a typo.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import yaml


class NodeChecker:
    """Collects `source:line: message` problems while reading composed YAML nodes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def compose(self, text: str) -> yaml.Node | None:
        """The document's root node; None (and a problem) when the text is not valid YAML,
        None (and no problem) when the document is empty."""
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            self.problems.append(f"{self.source}:{line}: not valid YAML: {exc.problem or exc}")
        except yaml.YAMLError as exc:
            self.problems.append(f"{self.source}: not valid YAML: {exc}")
        return None

    def fail(self, node: yaml.Node | None, message: str) -> None:
        """Record a problem at the line `node` starts on (line 1 without a node)."""
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(f"{self.source}:{line}: {message}")

    def entries(self, node: yaml.Node | None, what: str, *,
                allowed: set[str] | None = None) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """(key, key node, value node) of a mapping in file order, each key once. Reports a node
        that is not a mapping, a key given twice, and, with `allowed`, a key not in it. None
        (the key was absent) is an empty mapping."""
        if node is None:
            return []
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what}: must be a mapping of names to values")
            return []
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self.string(key_node, what)
            if key in seen:
                self.fail(key_node, f"{what}: {key!r} appears twice")
                continue
            seen.add(key)
            if allowed is not None and key not in allowed:
                self.fail(key_node, f"{what}: unknown key {key!r} (expected one of {', '.join(sorted(allowed))})")
            out.append((key, key_node, value_node))
        return out

    def mapping(self, node: yaml.Node | None, what: str, *, allowed: set[str] | None = None) -> dict[str, yaml.Node]:
        """A mapping's value nodes by key, checked as `entries` does."""
        return {key: value for key, _, value in self.entries(node, what, allowed=allowed)}

    def string(self, node: yaml.Node, what: str) -> str:
        """A non-empty scalar's text; "" (and a problem) otherwise."""
        if not isinstance(node, yaml.ScalarNode) or not node.value:
            self.fail(node, f"{what}: expected a name")
            return ""
        return str(node.value)

    def matching(self, text: str, node: yaml.Node, what: str, *, pattern: re.Pattern[str], rule: str) -> str:
        """`text` (read from `node`) when all of it matches `pattern`; reported with `rule`, which
        says in words what a valid one looks like, otherwise."""
        if text and not pattern.fullmatch(text):
            self.fail(node, f"{what}: {rule}; got {text!r}")
        return text

    def number(self, node: yaml.Node, what: str) -> Decimal | None:
        """A finite number as an exact `Decimal`; None (and a problem) otherwise."""
        # A quoted scalar is text, even when it spells a number: '1.5' is a typo to report.
        value = None
        if isinstance(node, yaml.ScalarNode) and node.style not in ("'", '"'):
            try:
                value = Decimal(node.value.replace("_", ""))
            except InvalidOperation:
                value = None
        if value is None or not value.is_finite():
            shown = node.value if isinstance(node, yaml.ScalarNode) else "a collection"
            self.fail(node, f"{what}: expected a number, got {shown!r}")
            return None
        return value

    def positive_int(self, node: yaml.Node, what: str) -> int:
        """A whole number greater than 0; 1 (and a problem) otherwise."""
        value = self.number(node, what)
        if value is None:
            return 1
        if value <= 0 or value != value.to_integral_value():
            self.fail(node, f"{what}: must be a whole number greater than 0")
            return 1
        return int(value)
