"""The charging worker against the real broker and Redis: exact, exactly once, crash-safe."""

from __future__ import annotations

import random
import signal
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import cdr_to_avro
from pipeline.adapters.kafka import producer
from pipeline.adapters.store import Store, call_digest, tenant_key
from pipeline.config import Settings
from pipeline.dev import stack, traffic
from pipeline.ops.publish import publish_tenants
from pipeline.reports.finance import check_month, read_ledger, statement_report
from pipeline.reports.readback import read_all
from processors.inputs import cdr_from_dict
from tests.conftest import _free_port
from tests.integration.harness import Env, assert_exact, kill, wait_exit, wait_for

pytestmark = pytest.mark.integration


def scenario(env: Env, n_tenants: int, n_cdrs: int, seed: int) -> tuple[list, list]:
    tenants = traffic.tenants(n_tenants, seed=seed, prefix=env.tag)
    return tenants, traffic.cdrs(tenants, n_cdrs, seed=seed + 1)


def test_worker_charges_exactly_what_offline_rating_says(env: Env) -> None:
    tenants, cdrs = scenario(env, 12, 3000, seed=1)
    env.publish(tenants, cdrs)
    assert wait_exit(env.worker()) == 0
    charges = env.charges(min_count=len(cdrs))
    assert_exact(env, tenants, cdrs, charges)
    # the config is materialized in Redis, with state beside it
    r = redis.Redis.from_url(env.settings.redis)
    assert r.hexists(tenant_key(tenants[0]["tenant_id"]), "config")
    assert int(r.hget(tenant_key(cdrs[0]["tenant_id"]), "ver")) >= 1
    # every charge names its source offset and, for credits, the lots it came from
    billable = [c for c in charges if c["classification"] == "billable"]
    assert billable and all(s["lots"] or s["deficit"] for c in billable for s in c["segments"])


def test_every_bad_input_kind_goes_to_the_dead_letter_topic(env: Env) -> None:
    tenants, cdrs = scenario(env, 2, 20, seed=2)
    env.publish(tenants, cdrs)
    codec = Codec(env.settings.schemas_dir)
    good = cdr_from_dict(cdrs[0])
    base = cdr_to_avro(good)
    now = datetime.now(UTC)
    bad = {
        "undecodable": b"\x00garbage",
        "unknown_schema": b"\xc3\x01" + b"\x42" * 8 + b"\x00",
        "missing_field": codec.encode("cdr", {**base, "call_id": ""}),
        "invalid_field": codec.encode("cdr", {**base, "call_id": "bad-type", "call_type": "telepathy"}),
        "bad_duration": codec.encode("cdr", {**base, "call_id": "neg", "duration_s": -3}),
        "unparsable_number": codec.encode(
            "cdr", {**base, "call_id": "num", "call_type": "user_out", "callee_number": "+0000"}
        ),
        "unknown_tenant": codec.encode("cdr", {**base, "call_id": "who", "tenant_id": "nobody"}),
        "too_old": codec.encode(
            "cdr",
            {
                **base,
                "call_id": "old",
                "start_time": now - timedelta(days=400),
                "end_time": now - timedelta(days=400) + timedelta(seconds=60),
            },
        ),
        "duplicate": codec.encode("cdr", base),  # same call id as cdrs[0], another offset
    }
    p = producer(env.settings)
    for value in bad.values():
        p.produce(env.settings.topic.cdr, key=good.tenant_id.encode(), value=value)
    p.produce(
        env.settings.topic.cdr, key=b"x", value=codec.encode("cdr", {**base, "call_id": "absurd", "duration_s": 10**7})
    )
    assert p.flush(10) == 0
    port = _free_port()
    worker = env.worker(idle=None, extra={"CALLCHARGE_METRICS_PORT": str(port)})
    dlq = env.read(env.settings.topic.dlq, min_count=len(bad) + 1)
    charged = env.charges(min_count=len(cdrs))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    worker.send_signal(signal.SIGTERM)  # a clean stop
    assert wait_exit(worker) == 0
    # what SREs and finance read off /metrics is what the charges topic holds
    samples = {
        (smp.name, tuple(sorted(smp.labels.items()))): smp.value
        for family in text_string_to_metric_families(metrics)
        for smp in family.samples
    }
    for classification, n in Counter(c["classification"] for c in charged).items():
        assert samples[("callcharge_charges_total", (("classification", classification),))] == n
    money: Counter[tuple[str, str]] = Counter()
    for c in charged:
        for seg in c["segments"]:
            if seg["bucket"] in ("billable", "overage") and seg["amount"]:
                money[c["currency"], seg["bucket"]] += seg["amount"]
    assert money, "the scenario charges some money"
    for (currency, bucket), amount in money.items():
        key = ("callcharge_money_charged_micros_total", (("bucket", bucket), ("currency", currency)))
        assert samples[key] == amount, key
    for reason in bad:
        assert f'callcharge_dead_letters_total{{reason="{reason}"}}' in metrics
    assert 'callcharge_dead_letters_total{reason="bad_duration"} 2.0' in metrics
    assert "callcharge_charges_total{classification=" in metrics
    assert "callcharge_end_to_end_seconds_count" in metrics
    assert "+1" not in metrics.replace("+Inf", "")  # no phone number in any label
    reasons = {d["reason"] for d in dlq}
    assert reasons == set(bad)  # absurd duration is bad_duration too
    assert len(dlq) == len(bad) + 1
    by_reason = {d["reason"]: d for d in dlq}
    assert by_reason["undecodable"]["value"] == b"\x00garbage"  # original bytes kept
    assert by_reason["undecodable"]["source_topic"] == env.settings.topic.cdr
    assert "already charged" in by_reason["duplicate"]["detail"]
    # the good CDRs were all charged, once
    charges = env.charges(min_count=len(cdrs))
    assert sorted(c["call_id"] for c in charges) == sorted(c["call_id"] for c in cdrs)


@pytest.mark.slow
@pytest.mark.parametrize("step", range(1, 9))
def test_killed_after_each_commit_step_loses_nothing_and_charges_nothing_twice(env: Env, step: int) -> None:
    tenants, cdrs = scenario(env, 6, 1200, seed=10 + step)
    env.publish(tenants, cdrs)
    crashed = env.worker(crash_after=f"{step}:3")
    assert wait_exit(crashed) == -9  # it really died at that step
    assert wait_exit(env.worker()) == 0
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))


@pytest.mark.slow
def test_killed_at_random_moments_during_a_long_run(env: Env) -> None:
    tenants, cdrs = scenario(env, 20, 20000, seed=40)
    env.publish(tenants, cdrs)
    rng = random.Random(4)
    for _ in range(3):
        w = env.worker(idle=None)
        time.sleep(rng.uniform(4.0, 7.0))
        kill(w)
    assert wait_exit(env.worker()) == 0
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)), aborted_batches=3)
    # finance's view of the same ledger: every statement adds up and closes on Redis
    ledger = read_ledger(env.settings)
    store = Store(redis.Redis.from_url(env.settings.redis))
    for t in tenants:
        tid = t["tenant_id"]
        _, st = statement_report(ledger, tid, check_month(None, ledger.tenants[tid], datetime.now(UTC)), "json")
        state = store.state(tid)[1]
        assert st.adds_up and state is not None, tid
        assert (st.closing_balance, st.closing_deficit) == (state.balance, state.deficit), tid


@pytest.mark.slow
def test_two_workers_share_the_partitions_and_one_is_killed(env: Env) -> None:
    tenants, cdrs = scenario(env, 20, 12000, seed=50)
    env.publish(tenants, cdrs)
    a, b = env.worker(idle=None), env.worker(idle=8)
    time.sleep(6)
    kill(a)
    assert wait_exit(b) == 0
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)), aborted_batches=1)


def test_exit_when_idle_waits_for_partitions_a_dead_worker_still_holds(env: Env) -> None:
    """A killed worker stays in the group until its session times out, and the group may
    still hand it partitions. A worker told to exit when idle must not take its own share
    running dry for the whole topic being charged."""
    tenants, cdrs = scenario(env, 12, 3000, seed=45)
    publish_tenants(env.settings, tenants)
    first = env.worker(idle=None)
    wait_for(lambda: "assigned [0, 1, 2, 3]" in env.log(first), timeout=60)
    kill(first)  # a member holding every partition: the next join waits for its session to end
    second = env.worker(idle=None)
    wait_for(lambda: "consuming" in env.log(second), timeout=60)
    time.sleep(1.5)
    kill(second)  # joined, but dead before the group settles: it is dealt partitions anyway
    env.ingest(cdrs)
    last = env.worker(idle=1)
    assert wait_exit(last) == 0
    assert "assigned [0, 1, 2, 3]" in env.log(last), env.log(last)  # it outlived the dead members
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))


def test_private_redis_restarted_mid_run(env: Env, base_settings: Settings) -> None:
    if not stack.running_pid(base_settings, stack.services(base_settings)[1]):
        pytest.skip("Redis is external (REDIS_URL): not ours to restart")
    tenants, cdrs = scenario(env, 10, 15000, seed=60)
    env.publish(tenants, cdrs)
    w = env.worker(idle=10)
    r = redis.Redis.from_url(env.settings.redis)
    wait_for(lambda: any(r.scan_iter(f"cc:{{{env.tag}*", count=1000)), timeout=60)
    stack.down(base_settings, only="redis")  # SIGTERM; the AOF is fsynced on every write
    time.sleep(2)
    stack.up(base_settings, only="redis")
    assert wait_exit(w) == 0  # the worker rode out the outage
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))
    # every call's outputs were dropped once committed, those of the batch whose apply met
    # the outage among them: nothing waits in Redis for its epoch to expire
    left = {k: r.hlen(k) for k in r.scan_iter(f"cc:{{{env.tag}*}}:outputs:*", count=1000)}
    assert not any(left.values()), left


@pytest.mark.slow
def test_differential_100k_cdrs_across_many_tenants(env: Env) -> None:
    """100 000 generated CDRs through Kafka and Redis equal `callcharge rate`, to the micro-unit."""
    tenants, cdrs = scenario(env, 150, 100_000, seed=70)
    env.publish(tenants, cdrs)
    a, b = env.worker(idle=8), env.worker(idle=8)
    assert wait_exit(a) == 0 and wait_exit(b) == 0
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))


def test_a_dead_workers_open_transaction_is_aborted_once_its_lease_runs_out(env: Env) -> None:
    """A worker killed with its records on the broker leaves its transaction open. The
    embedded broker never expires it, and nothing written after it could commit; a living
    worker takes over the transactional id once its lease runs out, which aborts it."""
    tenants, cdrs = scenario(env, 6, 1500, seed=47)
    dead_id = f"{env.settings.transactional_id_prefix}-dead-worker"
    dead = producer(env.settings, dead_id)
    dead.init_transactions(30)
    dead.begin_transaction()
    for partition in range(env.settings.charges_partitions):  # where every later batch writes
        dead.produce(env.settings.topic.charges, value=b"never committed", partition=partition)
    assert dead.flush(30) == 0  # on the broker, the transaction open: then the worker "dies"
    r = redis.Redis.from_url(env.settings.redis)
    r.hset(f"cc:txn-leases:{env.settings.group_id}", dead_id, 0)  # its lease ran out long ago
    env.publish(tenants, cdrs)
    w = env.worker()
    assert wait_exit(w) == 0  # without the takeover, its commits never complete: no exit
    assert f"aborted the open transaction of {dead_id}" in env.log(w)
    assert r.hget(f"cc:txn-leases:{env.settings.group_id}", dead_id) is None
    codec = Codec(env.settings.schemas_dir)
    raw = read_all(env.settings, env.settings.topic.charges, timeout=60, min_count=len(cdrs))
    # the embedded broker does not hide aborted records (Apache Kafka does): skip them here
    charges = [codec.decode(v)[1] for _, v in raw if v != b"never committed"]
    assert_exact(env, tenants, cdrs, charges)


def test_a_state_another_writer_changed_is_read_again_not_overwritten(env: Env) -> None:
    """The worker keeps each tenant's state as it last wrote it and skips reading it for the
    next batch. When another writer moved the state in between (here funding written
    straight into Redis with the next version, as a rebuild writes), the next batch's
    compare-and-set fails, the state is read again and folded again: the lot stays, every
    call is debited once."""
    from prometheus_client import CollectorRegistry

    from pipeline import wiring
    from processors.inputs import tenant_from_dict
    from processors.ledger import fund

    tenants, cdrs = scenario(env, 1, 40, seed=91)
    tid = tenants[0]["tenant_id"]
    publish_tenants(env.settings, tenants)
    registry = CollectorRegistry()
    worker = wiring.charging_worker(env.settings, registry)
    worker.directory.catch_up()
    worker.consumer.subscribe([env.settings.topic.cdr])

    def counted(name: str) -> float:
        return sum(s.value for m in registry.collect() for s in m.samples if s.name == name)

    def charge_until(n: int) -> None:
        deadline = time.monotonic() + 90
        while counted("callcharge_charges_total") < n and time.monotonic() < deadline:
            worker.run_once()
        assert counted("callcharge_charges_total") == n

    store = Store(redis.Redis.from_url(env.settings.redis))
    try:
        env.ingest(cdrs[:20])
        charge_until(20)
        version, state = store.state(tid)
        assert state is not None
        bought = datetime.now(UTC) - timedelta(days=30)  # valid for every call of the traffic
        fund(tenant_from_dict(tenants[0]), state, "outside-lot", 7_000_000, bought, bought)
        store.admin.put_state(tid, state, version + 1)
        env.ingest(cdrs[20:])
        charge_until(40)
        assert counted("callcharge_state_cache_stale_total") == 1
    finally:
        worker.close()
    _, final = store.state(tid)
    assert final is not None
    assert "outside-lot" in {lot.lot_id for lot in final.lots}
    assert final.funded == state.funded  # the outside lot and the configured ones, nothing else
    charges = env.charges(40)
    assert len({c["call_id"] for c in charges}) == 40
    assert sum(c["amount"] for c in charges) == final.charged + final.overage
    assert final.balance == final.funded - final.charged - final.expired


def test_committed_outputs_go_with_the_retry_when_the_apply_carrying_them_fails(env: Env) -> None:
    """A standalone Redis drops a committed call's outputs with the next apply. When that
    apply fails (here Redis has lost its scripts, as after a restart), they go with its
    retry instead of waiting in Redis until their epoch expires."""
    from processors.ledger import TenantState

    r = redis.Redis.from_url(env.settings.redis)
    store = Store(r)
    tid = f"{env.tag}-outputs"
    outputs = f"cc:{{{tid}}}:outputs:*"
    assert store.apply([(tid, 0, TenantState(), {"call-1": b"first call's records"})]) == [(1, 1)]
    assert sum(r.hlen(k) for k in r.scan_iter(outputs)) == 1
    store.forget_outputs({tid: ["call-1"]})  # its transaction committed
    r.script_flush()
    assert store.apply([(tid, 1, TenantState(), {"call-2": b"second call's records"})]) == [(1, 2)]
    assert {f for k in r.scan_iter(outputs) for f in r.hkeys(k)} == {call_digest("call-2")}


def test_a_batch_write_not_on_the_replicas_asked_for_is_not_taken_as_done(env: Env) -> None:
    """REDIS_REPLICAS_ACK on a standalone Redis (the batch in one call): a write that no
    replica confirms within the wait raises, so the batch is retried, never committed on
    a write a failover could lose; the primary has it (the retry replays it)."""
    from pipeline.adapters.store import ReplicationLagging
    from processors.ledger import TenantState

    store = Store(redis.Redis.from_url(env.settings.redis), replicas_ack=1)  # this Redis has no replica
    with pytest.raises(ReplicationLagging, match="not on 1 replica"):
        store.apply([("t-wait", 0, TenantState(), {"c-1": b"stored"})])
    assert store.state("t-wait")[0] == 1
    assert Store(redis.Redis.from_url(env.settings.redis)).apply([("t-wait", 0, TenantState(), {})]) == [(0, 1)]


@pytest.mark.parametrize("keep_s", [0, 60], ids=["batch script", "per-tenant script"])
def test_a_call_id_recorded_in_any_epoch_of_the_window_is_never_charged_again(env: Env, keep_s: int) -> None:
    """The seen index is one hash per epoch of the dedup window. A call id recorded in the
    current epoch, or in an older one still in the window, stops its tenant's write: the
    state keeps its version and nothing of the batch is recorded. Both scripts: the one a
    standalone Redis takes a batch in, and the per-tenant one (a Cluster, the control
    worker's operations with `keep_s`)."""
    from processors.ledger import TenantState

    r = redis.Redis.from_url(env.settings.redis)
    store = Store(r)
    now = time.time()
    for n, (age_days, calls) in enumerate([(30, 1), (12, 2), (0, 3), (None, 0)]):
        tid = f"{env.tag}-{keep_s}-{n}"
        if age_days is not None:  # calls charged that long ago (rebuild's restore puts them there)
            assert store.admin.restore_seen(tid, [(f"old-{tid}", 0, 7, now - age_days * 86400)]) == 1
        ids = [f"new-{tid}-{i}" for i in range(calls)] + ([f"old-{tid}"] if age_days is not None else [])
        batch = {c: b"records of " + c.encode() for c in [*ids, f"other-{tid}"]}
        answer = store.apply([(tid, 0, TenantState(), batch)], keep_s=keep_s)
        if age_days is None:  # nothing recorded before: written
            assert answer == [(1, 1)]
            assert r.hget(tenant_key(tid), "ver") == b"1"
            continue
        assert answer == [(-1, len(ids))], (age_days, answer)  # the old call's place in the batch
        assert r.hget(tenant_key(tid), "ver") is None
        assert len(store.admin.seen_calls(tid)) == 1
