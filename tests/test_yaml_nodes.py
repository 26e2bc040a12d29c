"""Reading configuration YAML with line numbers: the checks the pricing and routes files share."""

from __future__ import annotations

import re
from decimal import Decimal

from tokenmeter_proxy.yaml_nodes import NodeChecker

TEXT = """\
name: proxy
limits:
  tokens: 1_000
  price: 2.50
  quoted: '1.5'
  zero: 0
  tokens: 2
"""


def test_values_are_read_with_the_line_of_each_problem() -> None:
    checker = NodeChecker("app.yaml")
    top = checker.mapping(checker.compose(TEXT), "the file", allowed={"name", "limits"})
    limits = checker.mapping(top["limits"], "limits")
    assert checker.string(top["name"], "name") == "proxy"
    assert checker.positive_int(limits["tokens"], "limits.tokens") == 1000
    assert checker.number(limits["price"], "limits.price") == Decimal("2.50")
    assert checker.number(limits["quoted"], "limits.quoted") is None  # quoted: text, not a number
    assert checker.positive_int(limits["zero"], "limits.zero") == 1  # a harmless stand-in, and a problem
    assert checker.problems == [
        "app.yaml:7: limits: 'tokens' appears twice",
        "app.yaml:5: limits.quoted: expected a number, got '1.5'",
        "app.yaml:6: limits.zero: must be a whole number greater than 0",
    ]


def test_entries_keep_the_key_nodes_for_problems_with_names() -> None:
    checker = NodeChecker("routes.yaml")
    root = checker.compose("routes:\n  good-one: {}\n  Bad_One: {}\n  extra: 1\n")
    routes = checker.mapping(root, "the file", allowed={"routes"})
    names = [name for name, key_node, _ in checker.entries(routes["routes"], "routes")
             if checker.matching(name, key_node, f"routes.{name}", pattern=re.compile(r"[a-z0-9-]+"),
                                 rule="a name is a-z, 0-9 and -") == name]
    assert names == ["good-one", "Bad_One", "extra"]
    assert checker.problems == ["routes.yaml:3: routes.Bad_One: a name is a-z, 0-9 and -; got 'Bad_One'"]


def test_unknown_keys_and_non_mappings_are_reported() -> None:
    checker = NodeChecker("x.yaml")
    root = checker.compose("a: 1\nb: [1, 2]\n")
    fields = checker.mapping(root, "the file", allowed={"a"})
    assert checker.mapping(fields["b"], "b") == {}
    assert checker.problems == ["x.yaml:2: the file: unknown key 'b' (expected one of a)",
                                "x.yaml:2: b: must be a mapping of names to values"]


def test_text_that_is_not_yaml_is_reported_at_its_line() -> None:
    checker = NodeChecker("x.yaml")
    assert checker.compose("a: 1\nb: [unclosed\n") is None
    assert checker.problems[0].startswith("x.yaml:3: not valid YAML")
    empty = NodeChecker("x.yaml")
    assert empty.compose("") is None and empty.problems == []
