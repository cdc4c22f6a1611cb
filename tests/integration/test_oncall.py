"""What on-call sees: a charging worker that cannot charge (Redis away) shows the CDRs it
leaves uncharged and for how long nothing moved, and charges every one once Redis is back."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.dev import traffic
from tests.integration.harness import Env, assert_exact, kill, wait_for
from tests.integration.servers import RedisProcs, free_ports, wait_port

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    """Each sample of the worker's /metrics, summed over the label sets of a name."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([-0-9.e+]+|NaN)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def test_a_worker_that_cannot_charge_shows_what_waits_and_charges_it_all_after(
    base_settings: Settings, tmp_path: Path
) -> None:
    redis_port, metrics_port = free_ports(2)
    servers = RedisProcs()
    durable = ("--port", str(redis_port), "--appendonly", "yes", "--appendfsync", "always")
    servers.start(redis_port, tmp_path, *durable)
    worker = None
    try:
        wait_port(redis_port)
        env = Env.make(replace(base_settings, redis_url=f"redis://127.0.0.1:{redis_port}/0"), tmp_path)
        tenants = traffic.tenants(3, seed=90, prefix=env.tag)
        cdrs = traffic.cdrs(tenants, 60, seed=91)
        env.publish(tenants, cdrs[:30])
        worker = env.worker(
            idle=None, extra={"CALLCHARGE_METRICS_PORT": str(metrics_port), "CALLCHARGE_BACKLOG_WATCH_S": "1"}
        )
        wait_for(lambda: scrape(metrics_port).get("callcharge_charges_total", 0) == 30, timeout=90)
        wait_for(lambda: scrape(metrics_port).get("callcharge_consumer_lag", -1) == 0, timeout=30)

        servers.kill(redis_port)  # Redis away, then 30 more CDRs
        env.ingest(cdrs[30:])
        wait_for(
            lambda: (
                scrape(metrics_port).get("callcharge_consumer_lag") == 30
                and scrape(metrics_port).get("callcharge_charging_stalled_seconds", 0) >= 5
            ),
            timeout=60,
        )
        assert worker.poll() is None  # it waits Redis out; it does not exit

        servers.restart(redis_port)  # back, with what it had (append-only file)
        wait_port(redis_port)
        wait_for(lambda: scrape(metrics_port).get("callcharge_consumer_lag", -1) == 0, timeout=90)
        wait_for(lambda: scrape(metrics_port).get("callcharge_charging_stalled_seconds", -1) == 0, timeout=30)
        assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))  # each once, none lost
    finally:
        if worker is not None:
            kill(worker)
        servers.stop()
