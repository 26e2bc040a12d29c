"""What ships: the wheel carries its migrations, default prices and the dashboard's files; the
Dockerfile passes hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_migrations_the_default_pricing_file_and_the_dashboard(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("tokenmeter_proxy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tokenmeter_proxy/migrations/env.py" in names
    assert "tokenmeter_proxy/migrations/versions/0001_usage_records.py" in names
    assert "tokenmeter_proxy/default_pricing.yaml" in names
    assert any(name.endswith("entry_points.txt") for name in names)
    dashboard = ROOT / "src" / "tokenmeter_proxy" / "dashboard"
    shipped = {str(path.relative_to(dashboard.parent.parent)) for path in dashboard.rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert {"tokenmeter_proxy/dashboard/static/overview.js", "tokenmeter_proxy/dashboard/static/style.css",
            "tokenmeter_proxy/dashboard/templates/layout.html", "tokenmeter_proxy/dashboard/i18n/de.json",
            "tokenmeter_proxy/dashboard/routes.py"} <= shipped
    assert shipped <= names, shipped - names


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: install the dev extra (pip install -e '.[dev]')")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_non_root_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001\n" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert "FROM python:3.11-slim" in dockerfile
