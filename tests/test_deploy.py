"""The deployment files are valid for their tools and agree with the proxy's own settings: no
container runtime runs here, so the checks that can run, run on every test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import compose_spec
import kubernetes_validate
import pytest
import yaml

from tokenmeter_proxy.config import Settings
from tokenmeter_proxy.pricing import parse_pricing

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [document for path in MANIFESTS for document in yaml.safe_load_all(path.read_text()) if document]


def kind(name: str) -> dict[str, Any]:
    return next(document for document in documents() if document["kind"] == name)


@pytest.mark.parametrize("document", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_kubernetes_manifest_passes_strict_validation(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, "1.30.0", strict=True)


def test_the_deployment_drains_within_its_grace_period() -> None:
    deployment = kind("Deployment")["spec"]["template"]["spec"]
    [container] = deployment["containers"]
    env = {**kind("ConfigMap")["data"]}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = float(env["TOKENMETER_SHUTDOWN_GRACE_SECONDS"])
    assert deployment["terminationGracePeriodSeconds"] >= pre_stop + grace + 5
    assert container["readinessProbe"]["httpGet"]["path"].startswith("/readyz")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["securityContext"]["runAsNonRoot"] is True
    assert {source.get("secretRef", {}).get("name") for source in container["envFrom"]} >= {"tokenmeter-proxy"}


def test_the_configmap_holds_valid_settings_and_prices() -> None:
    maps = [document for document in documents() if document["kind"] == "ConfigMap"]
    settings = next(m["data"] for m in maps if "TOKENMETER_UPSTREAM" in m["data"])
    Settings.load(environ=settings)  # raises on any bad setting
    pricing = next(m["data"]["pricing.yaml"] for m in maps if "pricing.yaml" in m["data"])
    assert parse_pricing(pricing).resolve("gpt-4o-2024-08-06") == "gpt-4o"


def test_the_compose_file_is_valid_and_runs_two_replicas_on_postgres() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    compose_spec.PyCompose.from_json(json.dumps(yaml.safe_load(text))).validate()  # PyYAML resolves the << merges
    services = yaml.safe_load(text)["services"]
    replicas = [name for name, service in services.items() if service.get("command") == ["tokenmeter-proxy", "serve"]]
    assert len(replicas) == 2
    for name in replicas:
        assert services[name]["environment"]["TOKENMETER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert all(f"server {name}:8080;" in (DEPLOY / "nginx.conf").read_text() for name in replicas)
