"""The compose file and deploy/ are validated here (no Docker engine on the dev machines)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from pipeline.adapters.metrics import ChargingMetrics

REPO = Path(__file__).resolve().parents[2]


def test_compose_services_and_mounts_are_consistent() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "prometheus", "grafana", "charging"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert "appendfsync" in " ".join(services["redis"]["command"])


def test_prometheus_scrapes_the_worker_and_alerts_use_real_metrics() -> None:
    prom = yaml.safe_load((REPO / "deploy/prometheus.yml").read_text())
    target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
    assert target.split(":")[0] in yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    known = {m.name for m in ChargingMetrics(CollectorRegistry()).registry.collect()}
    rules = yaml.safe_load((REPO / "deploy/alerts.yml").read_text())["groups"][0]["rules"]
    dashboard = json.loads((REPO / "deploy/grafana/callcharge.json").read_text())
    exprs = [r["expr"] for r in rules] + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        for metric in re.findall(r"callcharge_[a-z_]+", expr):
            base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
            assert base in known, f"{metric} is not exported"


def test_k8s_manifest_parses() -> None:
    doc = yaml.safe_load((REPO / "deploy/k8s/charging.yaml").read_text())
    assert doc["kind"] == "Deployment"
    assert doc["spec"]["template"]["spec"]["containers"][0]["args"] == ["charge"]
