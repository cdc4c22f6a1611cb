"""Redis lost, rebuilt from the ledger on Kafka: balances, pools and call records come back,
and charging carries on exactly where it was."""

from __future__ import annotations

import json

import pytest
import redis

from pipeline.adapters.store import Store, tenant_key
from pipeline.dev import traffic
from processors.replay import differences
from tests.integration.harness import Env, assert_exact, wait_exit

pytestmark = pytest.mark.integration


def test_redis_lost_and_rebuilt_from_the_ledger_charges_on_exactly(env: Env) -> None:
    tenants = traffic.tenants(8, seed=80, prefix=env.tag)
    cdrs = traffic.cdrs(tenants, 4000, seed=81)
    before, after = cdrs[:3000], cdrs[3000:]
    env.publish(tenants, before)
    assert wait_exit(env.worker()) == 0

    ok = env.cli("rebuild", "--check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "8 tenants: 8 match the ledger, 0 differ" in ok.stdout

    r = redis.Redis.from_url(env.settings.redis)
    store = Store(r)
    saved = {t["tenant_id"]: store.state(t["tenant_id"])[1] for t in tenants}
    assert all(s is not None and s.charged for s in saved.values())
    ours = list(r.scan_iter(f"cc:{{{env.tag}*", count=1000))
    seen = [k for k in ours if b":seen:" in k]
    assert sum(r.hlen(k) for k in seen) == len(before)  # every call in the seen index, once
    assert not [k for k in ours if b":outputs:" in k or b":out:" in k]  # outputs dropped once committed
    for t in tenants:  # each pool a field of its own: a batch writes the pools it drew
        fields = r.hgetall(tenant_key(t["tenant_id"]))
        assert json.loads(fields[b"state"])["pool_used"] == {}
        pools = {k[2:].decode(): int(v) for k, v in fields.items() if k.startswith(b"p:")}
        assert pools == saved[t["tenant_id"]].pool_used
    r.delete(*ours)  # Redis lost

    lost = env.cli("rebuild", "--check")
    assert lost.returncode == 3, lost.stdout + lost.stderr
    assert "0 match the ledger, 8 differ" in lost.stdout and "no state stored" in lost.stdout

    done = env.cli("rebuild")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"rebuilt 8 tenant states; restored {len(before)} call records (0 already there)" in done.stdout
    for tid, state in saved.items():
        assert state is not None
        assert differences(state, store.state(tid)[1] or state.__class__()) == [], tid
        assert int(r.hget(tenant_key(tid), "ver") or 0) >= 1
    again = env.cli("rebuild", "--check")
    assert again.returncode == 0 and "8 match the ledger" in again.stdout

    # charging carries on from the rebuilt balances, and an old call published again is
    # recognised from its restored record
    env.ingest([*after, before[0]])
    assert wait_exit(env.worker()) == 0
    charges = env.charges(min_count=len(cdrs))
    assert_exact(env, tenants, cdrs, charges)
    first = next(c for c in charges if c["call_id"] == before[0]["call_id"])
    letters = env.read(env.settings.topic.dlq)
    assert [(d["reason"], d["detail"]) for d in letters] == [
        (
            "duplicate",
            f"call {first['call_id']} already charged from {first['source_partition']}/{first['source_offset']}",
        )
    ]


@pytest.mark.slow
def test_a_tenant_whose_stored_state_is_corrupt_waits_in_the_dlq_while_the_others_are_charged(env: Env) -> None:
    tenants = traffic.tenants(4, seed=85, prefix=env.tag)
    cdrs = traffic.cdrs(tenants, 1600, seed=86)
    before, after = cdrs[:800], cdrs[800:]
    env.publish(tenants, before)
    assert wait_exit(env.worker()) == 0
    bad = tenants[1]["tenant_id"]
    r = redis.Redis.from_url(env.settings.redis)
    r.hset(tenant_key(bad), "state", '{"lots": "written by hand"')  # corrupted

    env.ingest(after)
    assert wait_exit(env.worker()) == 0  # the other tenants were charged
    waiting = [c for c in after if c["tenant_id"] == bad]
    letters = env.read(env.settings.topic.dlq)
    assert {d["reason"] for d in letters} == {"state_unreadable"} and len(letters) == len(waiting)
    assert f"`callcharge rebuild --tenant {bad}`" in letters[0]["detail"]
    charged = {c["call_id"] for c in env.charges(min_count=len(cdrs) - len(waiting))}
    assert charged == {c["call_id"] for c in cdrs} - {c["call_id"] for c in waiting}

    check = env.cli("rebuild", "--check")
    assert check.returncode == 3 and f"{bad}: stored state unreadable" in check.stdout, check.stdout + check.stderr
    assert "4 tenants: 3 match the ledger, 1 differ" in check.stdout
    fixed = env.cli("rebuild", "--tenant", bad)
    assert "rebuilt 1 tenant states" in fixed.stdout, fixed.stdout + fixed.stderr
    redrive = env.cli("dlq", "redrive", "--reason", "state_unreadable")
    assert f"re-drove {len(waiting)} " in redrive.stdout, redrive.stdout + redrive.stderr
    assert wait_exit(env.worker()) == 0
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))
