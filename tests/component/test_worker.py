"""The charging worker's commit protocol in process, on in-memory clients: what a batch
charges, what each crash point leaves, and every way a batch is handed back."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from pipeline.charging.apply import MAX_CAS_RETRIES
from pipeline.dev import traffic
from pipeline.errors import FatalError
from processors.replay import differences
from tests.component.conftest import START, World


def assert_charged_once_as_offline(world: World) -> None:
    """Every published call charged exactly once, each as offline rating charges it, every
    tenant's state the offline engine's, every balance event once."""
    expected, event_ids, states = world.offline()
    charges = world.charges()
    counted = Counter(c["call_id"] for c in charges)
    assert counted == Counter({cid: 1 for cid in expected}), "each call once"
    for c in charges:
        e = expected[c["call_id"]]
        assert (c["amount"], c["balance_after"], c["classification"]) == (e.amount, e.balance_after, e.classification)
    for tid, state in states.items():
        assert differences(world.store.state(tid)[1], state) == [], tid
    events = Counter(e["event_id"] for e in world.decoded(world.settings.topic.balance_events))
    assert events == Counter({i: 1 for i in event_ids})


def test_a_worker_charges_what_offline_rating_charges(world: World) -> None:
    assert world.run(world.worker()) >= 200 // world.settings.batch_size
    assert_charged_once_as_offline(world)
    assert world.dead_letters() == []
    assert world.metric("callcharge_cdrs_consumed_total") == 200


@pytest.mark.parametrize("step", range(1, 9))
def test_a_crash_after_any_step_leaves_every_call_charged_once(world: World, step: int) -> None:
    """Steps 1-2 of batch 3 run while batch 2 applies (read-ahead); 3-5 touch Redis, 6-8
    the transaction: whichever the worker died after, the next one charges each call once."""
    world.run_crashing(f"{step}:3")
    assert_charged_once_as_offline(world)
    assert world.dead_letters() == []


def test_an_apply_whose_answer_was_lost_is_replayed_from_what_it_recorded(world: World) -> None:
    """Redis wrote the batch, then the connection dropped before its answer: the retry finds
    the calls recorded and emits their stored records; nothing is debited twice."""
    world.store.fail_applies, world.store.fail_after_write = 1, True
    w = world.worker()
    world.run(w)
    assert_charged_once_as_offline(world)
    assert world.metric("callcharge_replayed_calls_total") > 0


def test_redis_away_before_the_write_retries_the_batch(world: World) -> None:
    world.store.fail_applies = 2
    world.run(world.worker())
    assert_charged_once_as_offline(world)
    assert world.metric("callcharge_replayed_calls_total") == 0


def test_a_failed_commit_is_aborted_and_the_batch_charged_once(world: World) -> None:
    w = world.worker()
    w.producer.fail_commits = 2  # type: ignore[attr-defined]
    world.run(w)
    assert_charged_once_as_offline(world)
    assert world.metric("callcharge_txn_aborts_total") == 2


def test_a_fenced_worker_stops_and_its_successor_charges_once(world: World) -> None:
    old = world.worker()
    old.run_once()
    new = world.worker()  # the same transactional id: the old producer is fenced
    with pytest.raises(FatalError, match="fenced"):
        old.run_once()
    world.run(new)
    assert_charged_once_as_offline(world)


def test_a_state_another_writer_moved_is_read_and_folded_again(world: World) -> None:
    """The worker keeps the states it wrote; the control worker (a funding, a rebuild)
    moves a version under it: the apply answers CONFLICT, the tenant is read again."""
    w = world.worker()
    w.run_once()
    moved = 0
    for tid in world.directory.books:
        version, state = world.store.state(tid)
        if state is not None:
            world.store.put_state(tid, state, version + 7)
            moved += 1
    world.run(w)
    assert_charged_once_as_offline(world)
    assert world.metric("callcharge_state_cache_stale_total") >= 1 and moved


def test_a_call_published_twice_is_a_duplicate_dead_letter(world: World) -> None:
    again = dict(world.published[10])
    world.run(world.worker())
    world.publish([again])
    world.published.pop()  # offline rating sees it once
    world.run(world.worker())
    assert_charged_once_as_offline(world)
    assert [d["reason"] for d in world.dead_letters()] == ["duplicate"]


def test_bad_bytes_and_unknown_tenants_are_dead_letters_and_the_rest_is_charged(world: World) -> None:
    world.publish_raw(b"t", b"\x00garbage")
    stranger = dict(world.published[0], tenant_id="nobody", call_id="stranger-1")
    world.publish([stranger])
    world.published.pop()
    world.run(world.worker())
    assert_charged_once_as_offline(world)
    assert sorted(d["reason"] for d in world.dead_letters()) == ["undecodable", "unknown_tenant"]


def test_an_unreadable_state_sets_only_its_tenant_aside(world: World) -> None:
    tid = world.published[0]["tenant_id"]
    world.store.hashes[tid][b"state"] = b"{not json"
    world.run(world.worker())
    letters = world.dead_letters()
    mine = [c for c in world.published if c["tenant_id"] == tid]
    assert len(letters) == len(mine) and {d["reason"] for d in letters} == {"state_unreadable"}
    assert {c["tenant_id"] for c in world.charges()} == {t["tenant_id"] for t in world.tenants} - {tid}


def test_a_state_that_keeps_moving_goes_to_the_dlq_after_the_retries(world: World) -> None:
    tid = world.published[0]["tenant_id"]
    real = world.store._apply_one

    def always_moved(t: str, expected: int, state: object, calls: dict[str, bytes]) -> tuple[int, int]:
        if t == tid:
            return 0, expected + 1  # CONFLICT: someone else always got there first
        return real(t, expected, state, calls)  # type: ignore[arg-type]

    world.store._apply_one = always_moved  # type: ignore[method-assign]
    world.run(world.worker())
    letters = world.dead_letters()
    assert letters and {d["reason"] for d in letters} == {"state_conflict"}
    assert f"{MAX_CAS_RETRIES} attempts" in letters[0]["detail"]
    assert tid not in {c["tenant_id"] for c in world.charges()}


def test_a_call_that_cannot_be_encoded_is_set_aside_and_its_tenant_charged_without_it(world: World) -> None:
    """The safety net behind the core's money bounds: a charge whose record cannot be
    encoded goes to the DLQ (money_out_of_range) and its tenant's batch is folded again
    without it, from the state as stored (the fold works in place)."""
    w = world.worker()
    w.run_once()  # the tenants' states are kept in memory now: the next fold starts from them
    bad = world.published[150]
    encode = w.state.folder._encode_charge

    def refuse_one(charge: Any, partition: int, offset: int, now: Any) -> bytes:
        if charge.call_id == bad["call_id"]:
            raise OverflowError("int too big to fit an Avro long")
        return encode(charge, partition, offset, now)

    w.state.folder._encode_charge = refuse_one  # type: ignore[method-assign]
    world.run(w)
    letters = world.dead_letters()
    assert [(d["reason"], bad["call_id"] in d["detail"]) for d in letters] == [("money_out_of_range", True)]
    world.published.remove(bad)  # offline rating without it
    assert_charged_once_as_offline(world)


def test_a_state_is_read_with_the_pools_its_calls_can_draw_not_every_pool() -> None:
    """What a read after a cache miss costs grows with the batch, not with the tenant's users
    and pools; a kept state reads only the pools it lacks."""
    tenants = traffic.tenants(1, seed=9, users_per_tenant=80, start=START - timedelta(days=20))
    for u in tenants[0]["users"]:
        u["licences"], u["usage_country"], u["dialout_policy"] = ["MCOPSTN8", "MCOPSTNPP"], "US", None
    tenants[0]["country"], tenants[0]["currency"], tenants[0]["time_zone"] = "US", "USD", "America/New_York"
    world = World(tenants)
    calls = traffic.cdrs(tenants, 300, seed=10, start=START, span=timedelta(days=3))
    world.publish(calls[:-3])
    world.run(world.worker())
    tid = tenants[0]["tenant_id"]
    drawn = sum(k.startswith(b"p:") for k in world.store.hashes[tid])
    world.store.reads.clear()
    world.publish(calls[-3:])
    w = world.worker()  # a new worker: nothing kept
    world.run(w)
    wanted, pools, _ = world.store.reads[0]
    assert tid in wanted and len(pools[tid]) <= 4 * 3 < drawn, (pools, drawn)
    world.store.reads.clear()
    world.publish(
        [
            dict(c, call_id=c["call_id"] + "-next", user_id=u["user_id"])
            for c, u in zip(calls[:3], tenants[0]["users"][-3:], strict=True)
        ]
    )
    world.run(w)  # the state is kept: only the pools it lacks are read
    wanted, pools, topups = world.store.reads[0]
    assert tid not in wanted and 0 < len(topups[tid]) <= 4 * 3, topups
    assert_charged_once_as_offline(world)
