"""Tags: what a request's money went to, parsed from X-TokenMeter-Tags; invalid ones dropped with
a reason, never refused; at most ten."""

from __future__ import annotations

import pytest

from tokenmeter_proxy.errors import BadRequest
from tokenmeter_proxy.tags import checked_tags, parse_tags, tag_filter, tag_name


def test_tags_are_name_value_pairs_trimmed() -> None:
    assert parse_tags(" feature = summarize ,team=search") == ({"feature": "summarize", "team": "search"}, [])


def test_invalid_tags_are_dropped_with_a_reason_and_the_valid_ones_kept() -> None:
    tags, dropped = parse_tags(f"Feature=upper, team=ads, bad name=x, novalue, empty=, x.y_z-9=ok, {'a' * 65}=long, "
                               f"long={'x' * 129}")
    assert tags == {"team": "ads", "x.y_z-9": "ok"}
    assert len(dropped) == 6 and "'novalue' is not name=value" in dropped


def test_a_later_duplicate_wins_and_past_ten_the_first_ten_are_kept() -> None:
    assert parse_tags("a=1, b=2, a=3")[0] == {"a": "3", "b": "2"}
    tags, dropped = parse_tags(", ".join(f"t{n}=v{n}" for n in range(12)) + ", t0=again")
    assert tags == {**{f"t{n}": f"v{n}" for n in range(10)}, "t0": "again"}
    assert [reason.split(":")[0] for reason in dropped] == ["'t10'", "'t11'"]


def test_tags_given_as_json_are_checked_field_by_field() -> None:
    assert checked_tags({"team": " search "}) == {"team": "search"} and checked_tags(None) == {}
    for bad in ([1], {"Team": "x"}, {"team": 3}, {"team": "a,b"}, {f"t{n}": "v" for n in range(11)}):
        with pytest.raises(BadRequest):
            checked_tags(bad)


def test_a_tag_filter_is_name_colon_value() -> None:
    assert tag_filter("team:search") == ("team", "search")
    assert tag_filter("url:https://x") == ("url", "https://x")
    assert tag_name("feature") == "feature"
    for bad in ("team", ":search", "Team:search", "team:"):
        with pytest.raises(BadRequest):
            tag_filter(bad)
    with pytest.raises(BadRequest):
        tag_name("Feature")
