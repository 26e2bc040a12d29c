"""The command line: pricing check, migrate and stats, run as a user would."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from test_storage import record
from tokenmeter_proxy.budgets import Budget
from tokenmeter_proxy.cli import main
from tokenmeter_proxy.storage.budget_store import BudgetStore
from tokenmeter_proxy.storage.engine import engine_from_url
from tokenmeter_proxy.storage.migrate import head_revision
from tokenmeter_proxy.storage.repository import Repository
from tokenmeter_proxy.types import utc_now


def test_pricing_check_accepts_a_good_file(pricing_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pricing", "check", str(pricing_file)]) == 0
    assert "OK, 4 models priced in USD" in capsys.readouterr().out


def test_pricing_check_prints_each_problem_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "pricing.yaml"
    broken.write_text("currency: USD\nmodels:\n  a: {input: free}\n  b: {output: 1}\n")
    assert main(["pricing", "check", str(broken)]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"{broken}:3: models.a.input: expected a number, got 'free'",
                      f"{broken}:4: models.b: missing 'input' (price per unit_tokens input tokens)"]


def test_the_shipped_pricing_file_passes_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pricing", "check", str(Path(__file__).parents[1] / "config" / "pricing.yaml")]) == 0


def test_migrate_creates_the_schema_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert main(["migrate", "--database-url", url]) == 0
    assert "(was empty)" in capsys.readouterr().out
    assert main(["migrate", "--database-url", url]) == 0
    assert capsys.readouterr().out.strip() == f"database schema at revision {head_revision()}"


def test_stats_prints_the_same_totals_as_the_api(sqlite_url: str, pricing_file: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    engine = engine_from_url(sqlite_url)
    now = utc_now()
    Repository(engine).insert_records([
        replace(record(1, cost="0.25", input_tokens=1200), created_at=now),
        replace(record(2, model="gpt-4o-mini", cost="0.5"), created_at=now),
        replace(record(3, model="mystery", cost=None), created_at=now),
    ])
    engine.dispose()
    monkeypatch.setenv("TOKENMETER_PRICING", str(pricing_file))
    assert main(["stats", "--period", "24h", "--by", "model", "--database-url", sqlite_url]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Usage over the last 24h, by model"
    total = next(line for line in lines if line.startswith("TOTAL")).split()
    assert total == ["TOTAL", "3", "1,400", "15", "30", "1,430", "0.75"]
    assert "1 request(s) used models without a price" in out


def test_a_bad_setting_exits_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--database-url", "mysql://nope"]) == 2
    assert "TOKENMETER_DATABASE_URL must look like" in capsys.readouterr().err



def test_stats_shows_where_each_budget_stands(sqlite_url: str, pricing_file: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    engine = engine_from_url(sqlite_url)
    now = utc_now()
    Repository(engine).insert_records([replace(record(1, session="s-1", cost="0.25"), created_at=now)])
    store = BudgetStore(engine)
    store.put(Budget("session", "s-1", "day", max_cost=Decimal(1)), now=now)
    store.put(Budget("user", "u-9", "total", max_tokens=5000), now=now)
    engine.dispose()
    monkeypatch.setenv("TOKENMETER_PRICING", str(pricing_file))
    assert main(["stats", "--database-url", sqlite_url]) == 0
    out = capsys.readouterr().out.split("Budgets\n")[1].splitlines()
    assert out[2].split() == ["session", "s-1", "(day)", "0.25", "USD", "0", "USD", "1", "USD", "0.75", "USD",
                              *out[2].split()[-2:]]
    assert out[3].split() == ["user", "u-9", "(total)", "0", "tokens", "0", "tokens", "5,000", "tokens", "5,000",
                              "tokens", "never"]
