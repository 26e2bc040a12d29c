"""The command line: pricing check, migrate and stats, run as a user would."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from test_storage import record
from tokenmeter_proxy.budgets import Budget
from tokenmeter_proxy.cli import main
from tokenmeter_proxy.pricing import load_pricing
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
    assert "2 provider section(s): anthropic (" in capsys.readouterr().out


def test_pricing_check_reports_problems_in_provider_sections(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "pricing.yaml"
    broken.write_text("models: {}\nproviders:\n  anthropic:\n    models:\n      claude-x: {input: -1}\n"
                      "  google:\n    prices: {}\n")
    assert main(["pricing", "check", str(broken)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{broken}:5: providers.anthropic.models.claude-x.input: a price cannot be negative",
        f"{broken}:7: providers.google: unknown key 'prices' (expected one of models)",
        f"{broken}:7: providers.google: missing 'models': list the models to price, e.g. models: "
        "{claude-sonnet-4-5: {input: 3.00, output: 15.00}}",
    ]


COMMENTED = """\
# our prices
currency: USD
models:
  gpt-4o: {input: 2.50, output: 10.00}   # negotiated
  claude-sonnet-4-5: {input: 99.00, output: 99.00}

exchange_rates:
  EUR: 0.9
"""


def test_pricing_import_for_a_provider_creates_its_section_and_keeps_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text(COMMENTED)
    assert main(["pricing", "import", "claude-sonnet-4-5", "claude-haiku-4-5", "--file", str(path),
                 "--provider", "anthropic"]) == 0
    text = path.read_text()
    assert text.startswith(COMMENTED)  # comments, order and the top-level claude entry untouched
    added = text[len(COMMENTED):]
    assert added.startswith("\nproviders:\n  anthropic:\n    models:\n"
                            "      claude-sonnet-4-5: {input: 3, cached_input: 0.3, cache_write: 3.75, output: 15}"
                            "  # from genai-prices (anthropic/claude-sonnet-4-5), ")
    assert "\n      claude-haiku-4-5: {input: 1, cached_input: 0.1, cache_write: 1.25, output: 5}" in added
    assert main(["pricing", "check", str(path)]) == 0

    # A second provider joins the providers: block; one already there is skipped.
    capsys.readouterr()
    assert main(["pricing", "import", "gemini-2.5-flash", "--file", str(path), "--provider", "google"]) == 0
    assert main(["pricing", "import", "claude-haiku-4-5", "--file", str(path), "--provider", "anthropic"]) == 1
    assert "skipped claude-haiku-4-5: already in the file" in capsys.readouterr().err
    text = path.read_text()
    assert "\n  google:\n    models:\n      gemini-2.5-flash: {input: 0.3, cached_input: 0.03, output: 2.5}" in text
    table = load_pricing(path)
    assert sorted(table.providers) == ["anthropic", "google"]
    assert table.resolve("claude-sonnet-4-5", provider="anthropic") == "claude-sonnet-4-5"
    assert table.models["claude-sonnet-4-5"].input == Decimal("99.00")


def test_pricing_import_adds_to_an_existing_provider_section_in_place(tmp_path: Path) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text("models: {}\nproviders:\n    anthropic:\n        models:\n"
                    "            claude-opus-4-5: {input: 5}  # ours\n\n    # Google next\n    google:\n"
                    "        models: {}\n")
    assert main(["pricing", "import", "claude-haiku-4-5", "--file", str(path), "--provider", "anthropic"]) == 0
    assert main(["pricing", "import", "gemini-2.5-flash", "--file", str(path), "--provider", "google"]) == 0
    lines = path.read_text().splitlines()
    assert lines[5].startswith("            claude-haiku-4-5: {input: 1,")     # under claude-opus-4-5, its indent
    assert lines[6:9] == ["", "    # Google next", "    google:"]
    assert lines[9:11] == ["        models:", lines[10]] and lines[10].startswith("          gemini-2.5-flash:")
    assert load_pricing(path).resolve("gemini-2.5-flash", provider="google") == "gemini-2.5-flash"


def test_pricing_import_for_azure_goes_to_the_top_level_models(tmp_path: Path) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text(COMMENTED)
    assert main(["pricing", "import", "gpt-4.1-mini", "--file", str(path), "--provider", "azure"]) == 0
    text = path.read_text()
    assert "providers" not in text
    assert text.index("gpt-4.1-mini: {input: 0.4") < text.index("exchange_rates")


def test_pricing_import_skips_a_model_the_catalog_lacks_for_that_provider(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text(COMMENTED)
    assert main(["pricing", "import", "llama3", "--file", str(path), "--provider", "ollama"]) == 1
    assert "skipped llama3: not in the catalog for provider ollama" in capsys.readouterr().err
    assert path.read_text() == COMMENTED
    assert main(["pricing", "import", "gpt-4o", "--file", str(path), "--provider", "Not A Name"]) == 2


def test_pricing_diff_compares_a_providers_section_with_its_catalog_prices(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pricing.yaml"
    path.write_text(COMMENTED + "providers:\n  anthropic:\n    models:\n"
                    "      claude-sonnet-4-5: {input: 3.00, cached_input: 0.30, cache_write: 3.75, output: 15.00}\n"
                    "      claude-opus-4-5: {input: 4.00, output: 25.00}\n      claude-next: {input: 1}\n")
    assert main(["pricing", "diff", str(path), "--provider", "anthropic"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("anthropic: prices per 1,000,000 tokens, USD")
    rows = {line.split()[0]: line for line in out.splitlines()[3:]}
    assert rows["claude-sonnet-4-5"].endswith("same")
    assert rows["claude-opus-4-5"].endswith("differs")
    assert rows["claude-next"].endswith("not in the catalog")
    assert "gpt-4o" not in out  # the top-level models are OpenAI's and Azure's

    assert main(["pricing", "diff", str(path)]) == 0  # openai, as before
    out = capsys.readouterr().out
    assert "gpt-4o" in out and "claude-opus-4-5" not in out
    assert main(["pricing", "diff", str(path), "--provider", "google"]) == 1
    assert "no prices for provider google" in capsys.readouterr().err


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
                              *out[2].split()[-3:-1], "-"]  # at the recent rate, not before the day ends
    assert out[3].split() == ["user", "u-9", "(total)", "0", "tokens", "0", "tokens", "5,000", "tokens", "5,000",
                              "tokens", "never", "-"]


def test_stats_by_provider(sqlite_url: str, pricing_file: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    engine = engine_from_url(sqlite_url)
    now = utc_now()
    Repository(engine).insert_records([
        replace(record(1, cost="0.25"), created_at=now),
        replace(record(2, model="claude-sonnet-4-5", cost="0.5", provider="anthropic"), created_at=now),
        replace(record(3, model="claude-haiku-4-5", cost="0.125", provider="anthropic"), created_at=now),
    ])
    engine.dispose()
    monkeypatch.setenv("TOKENMETER_PRICING", str(pricing_file))
    assert main(["stats", "--period", "24h", "--by", "provider", "--database-url", sqlite_url]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[3:] if line.strip()}
    assert rows["anthropic"][1] == "2" and rows["anthropic"][-1] == "0.625"
    assert rows["openai"][1] == "1" and rows["TOTAL"][-1] == "0.875"


def test_routes_check_exits_1_naming_each_fault_and_0_for_a_good_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("routes:\n  anthropic: {upstream: https://api.anthropic.com, protocol: anthropic}\n"
                    "  team: {upstream: https://api.anthropic.com, protocol: anthropic,\n"
                    "         api_key_env: NO_SUCH_VARIABLE}\n")
    assert main(["routes", "check", str(good)]) == 0
    out, err = capsys.readouterr()
    assert "OK, 2 route(s): /anthropic -> https://api.anthropic.com (anthropic, provider anthropic)" in out
    assert f"{good}:4: routes.team.api_key_env: NO_SUCH_VARIABLE is not set" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  api: {upstream: https://x.example, protocol: openai}\n"
                   "  b: {upstream: ftp://x.example, protocol: telepathy}\n")
    assert main(["routes", "check", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[0] for line in err] == [f"{bad}:2", f"{bad}:3", f"{bad}:3"]
    assert main(["routes", "check", str(tmp_path / "missing.yaml")]) == 1


def test_stats_by_a_tag(sqlite_url: str, pricing_file: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    engine = engine_from_url(sqlite_url)
    now = utc_now()
    Repository(engine).insert_records([
        replace(record(1, cost="0.25", tags={"feature": "summarize"}), created_at=now),
        replace(record(2, cost="0.5", tags={"feature": "translate"}), created_at=now),
        replace(record(3, cost="0.125"), created_at=now),
    ])
    engine.dispose()
    monkeypatch.setenv("TOKENMETER_PRICING", str(pricing_file))
    assert main(["stats", "--period", "24h", "--by", "tag:feature", "--database-url", sqlite_url]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[3:] if line.strip()}
    assert (rows["translate"][-1], rows["summarize"][-1], rows["-"][-1], rows["TOTAL"][-1]) == (
        "0.5", "0.25", "0.125", "0.875")
    with pytest.raises(SystemExit):
        main(["stats", "--by", "tag:Feature"])
