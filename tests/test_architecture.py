"""Dependencies point one way: pure logic imports no I/O library, and web modules do not
import each other (../STYLE.md). Checked by reading the imports, not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tokenmeter_proxy"
PURE = ["types", "errors", "config", "pricing", "tokens", "sse", "identity", "routes", "budgets", "catalog", "alerts",
        "reconciliation", "access", "yaml_nodes", "providers", "providers.base", "providers.openai",
        "providers.anthropic", "providers.gemini", "tracecontext", "histograms", "otlp", "tags"]
IO_LIBRARIES = {"starlette", "httpx", "sqlmodel", "sqlalchemy", "psycopg", "uvicorn", "anyio", "aiohttp", "alembic"}
WEB = ["middleware", "proxy", "api", "budgets_api", "ops", "reconciliation_api", "auth", "dashboard.routes",
       "webhooks_api"]


def imports(module: str) -> set[str]:
    """Top-level names a module imports: libraries by name, our modules as '.dotted.name' (relative
    imports resolved from the module's own package; a package is its __init__)."""
    parts = module.split(".")
    source = PACKAGE / f"{module.replace('.', '/')}.py"
    if not source.exists():
        source, parts = PACKAGE / module.replace(".", "/") / "__init__.py", [*parts, "__init__"]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level]
            if node.module:
                found.add("." + ".".join([*base, *node.module.split(".")]))
            else:  # `from .. import tokens`
                found.update("." + ".".join([*base, alias.name]) for alias in node.names)
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    assert not imports(module) & IO_LIBRARIES


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_depend_only_on_pure_modules(module: str) -> None:
    ours = {name[1:] for name in imports(module) if name.startswith(".")}
    assert ours <= set(PURE), ours - set(PURE)


@pytest.mark.parametrize("module", WEB)
def test_web_modules_do_not_import_each_other(module: str) -> None:
    ours = {name[1:] for name in imports(module) if name.startswith(".")}
    assert not ours & (set(WEB) - {module})


def test_no_function_level_imports_and_no_globals() -> None:
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Global), f"{path}: global statement"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                nested = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
                assert not nested, f"{path}:{node.lineno}: import inside {node.name}()"
