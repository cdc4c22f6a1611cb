"""Redis Cluster for real: three primaries with a replica each, started by the test from
redis-server on loopback ports. The charging workers, `rebuild` and the API run on it
(CALLCHARGE_REDIS_MODE=cluster); a primary killed mid-run fails over to its replica and
the totals stay exact to the micro-unit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from pipeline import wiring
from pipeline.adapters.store import tenant_key
from pipeline.config import Settings
from processors.money import format_money
from tests.integration.conftest import Inbox
from tests.integration.harness import ControlProc, Env, assert_exact, wait_exit, wait_for
from tests.integration.servers import redis_cluster
from tests.integration.test_charging import scenario

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_100k_on_a_redis_cluster_whose_primary_is_killed_mid_run(
    base_settings: Settings, tmp_path: Path, smtp: Inbox
) -> None:
    with redis_cluster(tmp_path) as (ports, procs):
        env = Env.make(
            base_settings,
            tmp_path,
            redis_url=f"redis://127.0.0.1:{ports[0]}/0",
            redis_mode="cluster",
            redis_replicas_ack=1,  # a debit on the ledger is on a replica too: a failover keeps it
            batch_size=500,
        )
        tenants, cdrs = scenario(env, 60, 100_000, seed=81)
        env.publish(tenants, cdrs)
        client = wiring.redis_client(env.settings)
        cluster = redis.RedisCluster(host="127.0.0.1", port=ports[0])
        victim_tenant = cdrs[0]["tenant_id"]
        victim = cluster.get_node_from_key(tenant_key(victim_tenant))
        a, b = env.worker(idle=10), env.worker(idle=10)
        # mid-run: the victim's primary already holds charged state for it
        wait_for(lambda: int(client.hget(tenant_key(victim_tenant), "ver") or 0) >= 3, timeout=120)
        procs.kill(victim.port)
        killed_at = time.monotonic()
        # its replica takes over; charging of its slots waits until the new primary has a
        # replica again (redis_replicas_ack=1), as when an orchestrator restarts the node
        wait_for(lambda: _served_elsewhere(cluster, victim_tenant, victim.port), timeout=60)
        procs.restart(victim.port)
        assert wait_exit(a, timeout=400) == 0 and wait_exit(b, timeout=400) == 0
        # the replica kept the slots; every call charged once, every balance exact
        assert _served_elsewhere(cluster, victim_tenant, victim.port)
        assert any("Redis" in env.log(w) and "retrying the batch" in env.log(w) for w in (a, b)) or (
            time.monotonic() - killed_at < 1
        )
        assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))
        # rebuild reads and compares every tenant across the primaries
        check = env.cli("rebuild", "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.splitlines()[0].endswith(f"{len(tenants)} match the ledger, 0 differ"), check.stdout
        # the API serves a balance from the cluster
        control = ControlProc(env, smtp).start()
        status, bal = control.get(f"/v1/tenants/{victim_tenant}/balance")
        _, state = wiring.store(env.settings).state(victim_tenant)
        assert state is not None and status == 200
        assert bal["balance"] == format_money(state.balance), bal
        control.kill()


def _served_elsewhere(cluster: redis.RedisCluster, tenant_id: str, port: int) -> bool:
    try:
        cluster.nodes_manager.initialize()
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        return False
    return bool(cluster.get_node_from_key(tenant_key(tenant_id)).port != port)
