"""The state rebuilt from the ledger equals the state the fold kept, field for field."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.adapters.avro.records import charge_to_avro, event_from_avro, event_to_avro
from pipeline.config import Settings
from pipeline.dev import traffic
from processors.engine import Engine
from processors.inputs import cdr_from_dict, tenant_from_dict
from processors.ledger import TenantState, expire, fund
from processors.model import Event
from processors.rating import RateCard
from processors.replay import LedgerGap, differences, state_from_ledger

RATES = Settings().rates_file  # the shipped example card
# The traffic's clock, pinned: lots bought from mid-October, calls from 3 to 13 November, one
# calendar month in every tenant's time zone (pools reset at a month start, and the
# assertions count pool alerts), whatever day the suite runs on.
START = datetime(2026, 11, 3, 0, 0, tzinfo=UTC)


def run(seed: int, n_cdrs: int) -> tuple[Engine, list[dict], list[Event]]:
    """Charge generated traffic offline, and do what the control worker does beside it:
    pay some recharges, refuse others finally, add funds by hand, expire old lots."""
    rng = random.Random(seed)
    tenants = traffic.tenants(6, seed=seed, start=START - timedelta(days=8))
    engine = Engine(
        [tenant_from_dict(t) for t in tenants],
        RateCard.from_csv_text(RATES.read_text()),
    )
    charges: list[dict] = []
    events: list[Event] = []
    for i, d in enumerate(traffic.cdrs(tenants, n_cdrs, seed=seed + 1, start=START)):
        cdr = cdr_from_dict(d)
        result = engine.process(cdr)  # type: ignore[arg-type]
        assert result is not None
        charge, evs = result
        charges.append(charge_to_avro(charge, 0, i, cdr.end))
        events += evs
        book = engine.books[charge.tenant_id]
        state = engine.states[charge.tenant_id]
        for e in evs:
            if e.type != "recharge_requested":
                continue
            request_id = e.field_dict()["request_id"]
            if rng.random() < 0.7:  # paid: the lot is the request id, as control._credit does
                events += fund(book.tenant, state, request_id, e.field_dict()["amount"], cdr.end, cdr.end)
                state.recharge_in_flight = None
                events.append(
                    Event(
                        f"{request_id}:recharge_succeeded",
                        "recharge_succeeded",
                        book.tenant.tenant_id,
                        cdr.end,
                        state.balance,
                        (("request_id", request_id),),
                    )
                )
            elif rng.random() < 0.5:  # refused for good: no longer in flight
                state.recharge_in_flight = None
                fields = (("request_id", request_id), ("next_attempt_at", ""))
                events.append(
                    Event(
                        f"{request_id}:3:recharge_failed",
                        "recharge_failed",
                        book.tenant.tenant_id,
                        cdr.end,
                        state.balance,
                        fields,
                    )
                )
        if rng.random() < 0.01:  # funds added through the API
            events += fund(book.tenant, state, f"cmd-{i}", 5_000_000, cdr.end, cdr.end)
    later = max(c["end_time"] for c in charges) + timedelta(days=400)
    for tid in list(engine.states)[::3]:  # a year on, some tenants' lots are forfeited
        events += expire(engine.books[tid].tenant, engine.states[tid], later)
    return engine, charges, events


def rebuilt(engine: Engine, charges: list[dict], events: list[Event]) -> dict[str, TenantState]:
    return {tid: state_from_ledger(b.tenant, charges, events) for tid, b in engine.books.items()}


def comparable(state: TenantState) -> dict:
    d = state.to_dict()
    # a used-up lot expires without an event: the flag is not in the ledger (see replay.py)
    d["lots"] = [[*lot[:5], lot[5] and lot[2] != 0] for lot in d["lots"]]
    return d


def test_state_rebuilt_from_charges_and_events_equals_the_fold() -> None:
    kinds: Counter[str] = Counter()
    segments = []
    for seed in (7, 17):
        engine, charges, events = run(seed, 3000)
        kinds.update(e.type for e in events)
        segments += [s for c in charges for s in c["segments"]]
        for tid, state in rebuilt(engine, charges, events).items():
            assert comparable(state) == comparable(engine.states[tid]), (seed, tid)
    # the traffic reaches every kind of effect the rebuild reads
    for kind in ("funds_added", "credits_expired", "recharge_requested", "recharge_succeeded", "recharge_failed"):
        assert kinds[kind], (kind, kinds)
    assert kinds["pool_threshold"] > 8  # more alerts than a state keeps
    assert any(s["deficit"] for s in segments) and any(s["bucket"] == "overage" for s in segments)


def test_order_duplicates_and_the_avro_round_trip_do_not_matter() -> None:
    engine, charges, events = run(7, 3000)
    currency = {tid: b.tenant.currency for tid, b in engine.books.items()}
    via_avro = [event_from_avro(event_to_avro(e, currency[e.tenant_id])) for e in events]
    rng = random.Random(1)
    shuffled_charges = charges + rng.sample(charges, 100)  # read twice: counted once
    rng.shuffle(shuffled_charges)
    # pool alerts stay in their order (one writer); everything else in any order
    alerts = [e for e in via_avro if e.type == "pool_threshold"]
    others = [e for e in via_avro if e.type != "pool_threshold"] + rng.sample(via_avro, len(via_avro) // 3)
    rng.shuffle(others)
    mixed = others[: len(others) // 2] + alerts + others[len(others) // 2 :]
    expected = rebuilt(engine, charges, events)
    for tid, state in rebuilt(engine, shuffled_charges, mixed).items():
        assert state.to_dict() == expected[tid].to_dict(), tid


def test_a_draw_from_a_lot_never_funded_is_a_gap_not_a_guess() -> None:
    engine, charges, events = run(7, 600)
    funded = [e for e in events if e.type == "funds_added"]
    drawn_lot = next(d["lot_id"] for c in charges for s in c["segments"] for d in s["lots"])
    missing = [e for e in events if not (e.type == "funds_added" and e.field_dict()["lot_id"] == drawn_lot)]
    assert len(missing) < len(events) and funded
    tenant = next(
        b.tenant
        for b in engine.books.values()
        if any(
            d["lot_id"] == drawn_lot
            for c in charges
            if c["tenant_id"] == b.tenant.tenant_id
            for s in c["segments"]
            for d in s["lots"]
        )
    )
    with pytest.raises(LedgerGap, match=drawn_lot):
        state_from_ledger(tenant, charges, missing)


def test_differences_name_what_differs_and_nothing_when_equal() -> None:
    engine, charges, events = run(17, 1500)
    tid, state = next((t, s) for t, s in engine.states.items() if s.lots and s.pool_used)
    rebuilt_state = state_from_ledger(engine.books[tid].tenant, charges, events)
    assert differences(state, rebuilt_state) == []
    assert differences(None, TenantState()) == []
    assert differences(None, rebuilt_state) == ["no state stored"]
    tampered = state.copy()
    tampered.lots[0] = tampered.lots[0].debited(1)
    key = next(iter(tampered.pool_used))
    tampered.pool_used[key] += 2
    found = differences(tampered, rebuilt_state)
    assert any(f.startswith("balance ") for f in found)
    assert any(f.startswith(f"lot {state.lots[0].lot_id}:") for f in found)
    assert f"pool {key}: {state.pool_used[key] + 2} min stored, {state.pool_used[key]} in the ledger" in found


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n_cdrs=st.integers(50, 1200))
@example(seed=44366, n_cdrs=50)  # a tenant whose balance never moved was rebuilt as below its trigger
def test_any_traffic_rebuilds_to_the_state_the_fold_kept(seed: int, n_cdrs: int) -> None:
    engine, charges, events = run(seed, n_cdrs)
    for tid, state in rebuilt(engine, charges, events).items():
        assert comparable(state) == comparable(engine.states[tid]), tid
