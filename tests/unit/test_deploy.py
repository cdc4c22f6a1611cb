"""The compose file and deploy/ are validated here (no Docker engine on the dev machines)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from pipeline.adapters.metrics import ChargingMetrics, ControlMetrics

REPO = Path(__file__).resolve().parents[2]


def test_compose_services_and_mounts_are_consistent() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "prometheus", "grafana", "topics", "tenants", "charging", "control"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert "appendfsync" in " ".join(services["redis"]["command"])
    ours = [s for s in services.values() if str(s.get("image", "")).startswith("callcharge")]
    assert len(ours) == 4 and all(s["image"] != "callcharge:latest" and s.get("read_only") for s in ours)
    assert services["control"]["command"] == ["control"] and services["control"]["healthcheck"]
    for secret in compose["secrets"].values():
        assert (REPO / secret["file"]).exists()


def test_prometheus_scrapes_every_replica_and_the_control_worker() -> None:
    prom = yaml.safe_load((REPO / "deploy/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert jobs["callcharge-charging"]["dns_sd_configs"][0]["names"] == ["charging"]  # one target per replica
    assert jobs["callcharge-control"]["static_configs"][0]["targets"][0].split(":")[0] in services


def test_alerts_and_dashboard_use_real_metrics() -> None:
    known = {m.name for m in ChargingMetrics(CollectorRegistry()).registry.collect()}
    known |= {m.name for m in ControlMetrics(CollectorRegistry()).registry.collect()}
    rules = yaml.safe_load((REPO / "deploy/alerts.yml").read_text())["groups"][0]["rules"]
    dashboard = json.loads((REPO / "deploy/grafana/callcharge.json").read_text())
    exprs = [r["expr"] for r in rules] + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        for metric in re.findall(r"callcharge_[a-z_]+", expr):
            base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
            assert base in known, f"{metric} is not exported"
    names = {r["alert"] for r in rules}
    assert {"CallchargeWorkerDown", "CallchargeWorkerAbsent", "CallchargeTenantStateUnreadable"} <= names


def _k8s() -> list[dict]:
    docs = []
    for path in sorted((REPO / "deploy/k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_k8s_deploys_every_part_hardened() -> None:
    docs = _k8s()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "callcharge-charging"),
        ("Deployment", "callcharge-control"),
        ("Service", "callcharge-control"),
        ("Job", "callcharge-topics"),
        ("Job", "callcharge-tenants"),
        ("ConfigMap", "callcharge"),
        ("Secret", "callcharge"),
        ("PodDisruptionBudget", "callcharge-charging"),
    } <= kinds
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    for d in docs:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        for c in pod["containers"]:
            assert not c["image"].endswith(":latest") and ":" in c["image"]
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["resources"]["limits"]["memory"]
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in config["data"], env
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in secret["stringData"], env
            if d["kind"] == "Deployment":
                assert c["livenessProbe"]["httpGet"]["path"] and c["readinessProbe"]
                annotations = d["spec"]["template"]["metadata"]["annotations"]
                assert annotations["prometheus.io/port"] == str(c["ports"][0]["containerPort"])
    charging = next(d for d in docs if d["metadata"]["name"] == "callcharge-charging" and d["kind"] == "Deployment")
    assert charging["spec"]["template"]["spec"]["containers"][0]["args"] == ["charge"]


def test_the_image_is_built_from_a_wheel_runs_as_non_root_without_the_dev_broker() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") == 2 and "pip wheel" in dockerfile
    assert "-e ." not in dockerfile and "--require-hashes" in dockerfile
    assert "USER 10001" in dockerfile and "CALLCHARGE_METRICS_HOST=0.0.0.0" in dockerfile
    assert "python -m pipeline.dev.build" in dockerfile  # the image runs the hot path compiled, or is not built
    assert "n.mode() != 'compiled with mypyc'" in dockerfile
    lock = (REPO / "deploy/requirements.lock").read_text()
    assert "calfkit" not in lock and "--hash=sha256:" in lock and "confluent-kafka==" in lock


def test_the_dashboard_imports_anywhere_and_shows_money_in_currency_units() -> None:
    raw = (REPO / "deploy/grafana/callcharge.json").read_text()
    dashboard = json.loads(raw)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables and dashboard["__inputs"]
    assert '"uid": "prometheus"' not in raw  # no hard-coded datasource
    money = next(p for p in dashboard["panels"] if p["title"].startswith("Money"))
    assert "currency units" in money["title"] and money["targets"][0]["expr"].endswith("/ 1e6")
    titles = " ".join(p["title"] for p in dashboard["panels"])
    assert "Control worker" in titles and "API requests" in titles


def test_every_alert_fires_on_its_incident_in_promtool() -> None:
    """deploy/alerts.test.yml through Prometheus's own rule engine (`make setup` installs
    Debian's prometheus package, which carries promtool)."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make setup` (it installs Debian's prometheus package)"
    checked = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=REPO / "deploy", capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=REPO / "deploy", capture_output=True)
    assert tested.returncode == 0 and b"SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    rules = yaml.safe_load((REPO / "deploy/alerts.yml").read_text())["groups"][0]["rules"]
    covered = (REPO / "deploy/alerts.test.yml").read_text()
    assert all(f"alertname: {r['alert']}" in covered for r in rules), "an alert without a promtool test"


K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests are for (PDB policy/v1, probes, seccomp)


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    """kubernetes-validate carries the OpenAPI schemas of each Kubernetes release; strict:
    a misspelt or misplaced field is an error, as `kubectl apply --validate=strict` says."""
    import kubernetes_validate

    docs = _k8s()
    assert docs
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    broken = json.loads(json.dumps(next(d for d in docs if d["kind"] == "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # misspelt: refused
    try:
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError:
        pass
    else:
        raise AssertionError("the validator let a misspelt field through")


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    """The Compose Specification's JSON schema as check-jsonschema vendors it."""
    from importlib import resources

    import jsonschema

    schema_text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    validator = jsonschema.Draft7Validator(json.loads(schema_text.read_text()))
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    compose["services"]["control"]["healthcheck"] = {"test": ["CMD", "true"], "intervall": "5s"}
    assert list(validator.iter_errors(compose)), "the schema let a misspelt key through"
    services = compose["services"]
    assert {"topics", "tenants", "charging", "control", "prometheus"} <= set(services), set(services)
