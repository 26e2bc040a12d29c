"""Hot reload of the pricing file: new prices within a poll, broken files refused."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from conftest import PRICING
from tokenmeter_proxy.errors import PricingError
from tokenmeter_proxy.watched import PriceBook


def test_a_changed_file_takes_effect(pricing_file: Path) -> None:
    book = PriceBook.open(pricing_file)
    pricing_file.write_text(PRICING.replace("input: 2.50", "input: 5.00"))
    assert book.reload_if_changed()
    assert str(book.current.models["gpt-4o"].input) == "5.00"


def test_a_broken_file_is_refused_and_the_old_prices_stay(pricing_file: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook.open(pricing_file)
    before = book.current
    pricing_file.write_text(PRICING.replace("input: 2.50", "input: lots"))
    with caplog.at_level(logging.ERROR):
        assert not book.reload_if_changed()
    assert book.current is before
    assert f"{pricing_file}:7: models.gpt-4o.input: expected a number, got 'lots'" in caplog.text


def test_a_vanished_file_keeps_the_prices_in_force(pricing_file: Path) -> None:
    book = PriceBook.open(pricing_file)
    pricing_file.unlink()
    assert not book.reload_if_changed()
    assert book.current.resolve("gpt-4o") == "gpt-4o"


def test_an_unchanged_file_is_not_read_again(pricing_file: Path) -> None:
    book = PriceBook.open(pricing_file)
    assert not book.reload_if_changed()


def test_a_broken_file_at_startup_stops_it_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text("models:\n  a: {input: x}\n")
    with pytest.raises(PricingError, match=r"pricing.yaml:2: models.a.input"):
        PriceBook.open(path)


@pytest.mark.anyio
async def test_the_watcher_picks_up_a_change_within_two_seconds(pricing_file: Path) -> None:
    book = PriceBook.open(pricing_file)
    watcher = asyncio.create_task(book.watch(interval=0.05))
    try:
        pricing_file.write_text(PRICING.replace("output: 10.00", "output: 20.00"))
        for _ in range(40):
            await asyncio.sleep(0.05)
            if str(book.current.models["gpt-4o"].output) == "20.00":
                break
        assert str(book.current.models["gpt-4o"].output) == "20.00"
    finally:
        watcher.cancel()


def test_a_refused_file_is_told_with_its_problems(pricing_file: Path) -> None:
    book = PriceBook.open(pricing_file)
    told: list[tuple[Path, list[str]]] = []
    pricing_file.write_text(PRICING.replace("input: 2.50", "input: lots"))
    assert not book.reload_if_changed(on_refused=lambda path, problems: told.append((path, problems)))
    assert told == [(pricing_file, [f"{pricing_file}:7: models.gpt-4o.input: expected a number, got 'lots'"])]
    pricing_file.write_text(PRICING)
    assert book.reload_if_changed(on_refused=lambda path, problems: told.append((path, problems))) is False
    assert len(told) == 1  # a good file is not a refusal
