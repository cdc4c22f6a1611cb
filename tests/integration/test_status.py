"""`callcharge status` as an operator reads it: the backlog over the whole topic, dead letters."""

from __future__ import annotations

import re

import pytest

from pipeline.adapters.kafka import producer
from pipeline.dev import traffic
from tests.integration.harness import Env, wait_exit

pytestmark = pytest.mark.integration


def backlog(env: Env) -> tuple[int, dict[int, int]]:
    out = env.cli("status")
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"\): (\d+) CDRs waiting \(([^)]*)\)", out.stdout)
    assert m, out.stdout
    per = {int(p): int(n) for p, n in (x.split(":") for x in m.group(2).split())}
    return int(m.group(1)), per


def test_status_counts_what_the_group_has_yet_to_charge_and_the_dead_letters(env: Env) -> None:
    tenants = traffic.tenants(6, seed=90, prefix=env.tag)
    cdrs = traffic.cdrs(tenants, 1200, seed=91)
    env.publish(tenants, cdrs)
    total, per = backlog(env)
    assert total == len(cdrs) and sum(per.values()) == total and len(per) == env.settings.cdr_partitions
    out = env.cli("status").stdout
    assert "tenants configured: 6" in out and "dead letters: 0" in out

    p = producer(env.settings)
    p.produce(env.settings.topic.cdr, key=tenants[0]["tenant_id"].encode(), value=b"\x00not avro")
    assert p.flush(10) == 0
    assert backlog(env)[0] == len(cdrs) + 1
    assert wait_exit(env.worker()) == 0
    assert backlog(env) == (0, dict.fromkeys(per, 0))
    out = env.cli("status").stdout
    assert "dead letters: 1 (undecodable 1); see `callcharge dlq`" in out
