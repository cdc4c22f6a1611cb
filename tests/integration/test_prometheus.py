"""A live Prometheus (Debian's prometheus 2.42, installed by `make setup`) scrapes a
charging worker and a control worker through the shipped deploy/prometheus.yml, with the
shipped alert rules loaded. Every dashboard query and every alert expression is evaluated
through Prometheus's HTTP API and must return data; the money counter equals the ledger."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Inbox
from tests.integration.harness import REPO, ControlProc, Env, kill, wait_for
from tests.integration.servers import free_ports, wait_port
from tests.integration.test_charging import scenario

pytestmark = pytest.mark.integration
DASHBOARD = REPO / "deploy/grafana/callcharge.json"
ALERTS = REPO / "deploy/alerts.yml"
MONEY_BUCKETS = ("billable", "overage")  # the buckets the money counter counts (the others are minutes)


def prometheus_config(targets: dict[str, str], rules: Path) -> dict[str, Any]:
    """deploy/prometheus.yml with each job's discovery replaced by this test's address (the
    job names, paths and everything else as shipped) and a 1 s scrape."""
    shipped = yaml.safe_load((REPO / "deploy/prometheus.yml").read_text())
    shipped["global"] = {**shipped.get("global", {}), "scrape_interval": "1s", "evaluation_interval": "1s"}
    shipped["rule_files"] = [str(rules)]
    for job in shipped["scrape_configs"]:
        for sd in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[sd]
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    assert set(targets) == {j["job_name"] for j in shipped["scrape_configs"]}, "a shipped job the test does not run"
    return shipped


def start_prometheus(work: Path, port: int, targets: dict[str, str], rules: Path) -> subprocess.Popen[bytes]:
    """A real Prometheus on `port` with the shipped config pointed at `targets` and `rules`
    loaded; returns once it listens (the caller terminates it)."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run `make setup` (it installs Debian's prometheus package)"
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, rules)))
    with open(work / "prometheus.log", "wb") as log:
        prom = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_port(port, timeout=30)
    return prom


def alerts(port: int) -> dict[str, str]:
    """Each active alert's name and state (pending or firing)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=10) as resp:
        found = json.loads(resp.read())["data"]["alerts"]
    return {a["labels"]["alertname"]: a["state"] for a in found}


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$job", ".*").replace("$instance", ".*")
            out.append((panel["title"], expr))
    return out


def test_prometheus_scrapes_both_workers_and_every_panel_and_alert_has_data(
    env: Env, tmp_path: Path, smtp: Inbox
) -> None:
    metrics_port, prom_port = free_ports(2)
    tenants, cdrs = scenario(env, 6, 1500, seed=33)
    env.publish(tenants, cdrs)
    charging = env.worker(idle=None, extra={"CALLCHARGE_METRICS_PORT": str(metrics_port)})
    control = ControlProc(env, smtp).start()
    targets = {"callcharge-charging": f"127.0.0.1:{metrics_port}", "callcharge-control": f"127.0.0.1:{control.port}"}
    prom = start_prometheus(tmp_path, prom_port, targets, ALERTS)
    try:
        # every call charged and the API used once, then the money on the ledger
        charges = env.charges(min_count=len(cdrs))
        assert control.get(f"/v1/tenants/{tenants[0]['tenant_id']}/balance")[0] == 200
        ledger = sum(s["amount"] for c in charges for s in c["segments"] if s["bucket"] in MONEY_BUCKETS)
        assert ledger > 0
        wait_for(lambda: _scalar(prom_port, "sum(callcharge_cdrs_consumed_total)") == len(cdrs), timeout=60)
        wait_for(lambda: all(r["value"][1] == "1" for r in query(prom_port, "up")) and len(query(prom_port, "up")) == 2)
        time.sleep(3)  # a few more scrapes: rate() and increase() need two samples in their window
        assert _scalar(prom_port, "sum(callcharge_money_charged_micros_total)") == ledger
        assert _scalar(prom_port, "sum(callcharge_charges_total)") == len(cdrs)
        # every dashboard query returns data
        empty = [(title, expr) for title, expr in dashboard_queries() if not query(prom_port, expr)]
        assert not empty, f"dashboard queries without data: {empty}"
        # every alert rule is evaluated without error, and every series it names exists
        wait_for(lambda: _rules(prom_port) and all(r["lastEvaluation"][:4] != "0001" for r in _rules(prom_port)))
        for rule in _rules(prom_port):
            assert rule["health"] == "ok", rule
            for name in set(re.findall(r"\b(callcharge_[a-z_]+|up)\b", rule["query"])):
                assert query(prom_port, f"count({name})"), f"alert {rule['name']}: no series {name}"
    finally:
        prom.terminate()
        prom.wait(10)
        kill(charging)
        control.kill()


def _scalar(port: int, expr: str) -> float:
    result = query(port, expr)
    return float(result[0]["value"][1]) if result else -1.0


def _rules(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=10) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    return [r for g in groups for r in g["rules"]]
