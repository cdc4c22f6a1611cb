"""The admission rules and the batch fold (`processors.admission`), without Kafka or Redis:
the same code the charging worker runs at step 4, offline rating and the engine run per call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.dev import traffic
from processors.admission import Origin, fold_batch, unknown_tenant
from processors.charging import pool_fields, pool_fields_of, prepare
from processors.engine import Engine
from processors.inputs import DeadLetterReason, cdr_from_dict, tenant_from_dict
from processors.ledger import TenantState, open_state
from processors.model import Cdr
from processors.money import parse_money
from processors.rating import RateCard
from tests.helpers import fixture_rates, tenant_entry

RATES = fixture_rates()
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
TENANT = tenant_from_dict(
    tenant_entry({"users": [["u1", "US", ["MCOMEETADD", "MCOPSTNPP"]]], "lots": [["L1", "10", "2026-11-01T00:00:00Z"]]})
)
BOOK = prepare(TENANT)


def call(call_id: str, number: str = "+442071234567", minutes: int = 3, at: datetime = NOW) -> Cdr:
    start = at - timedelta(minutes=minutes)
    return Cdr(call_id, "T", "u1", "user_out", "+12125550100", number, start, at, minutes * 60)


def fold(batch: list[tuple[Cdr, Origin]], prior: dict[str, Origin] | None = None, stored=None, days: int = 45):  # type: ignore[no-untyped-def]
    return fold_batch(BOOK, stored, batch, prior or {}, RATES, NOW - timedelta(days=days), days)


def test_a_new_call_is_charged_and_carries_the_funding_bought_before_it() -> None:
    folded = fold([(call("a"), Origin(0, 5))])
    (outcome,) = folded.outcomes
    assert outcome.reject is None and not outcome.replay and outcome.charge is not None
    assert [e.type for e in outcome.events][:2] == ["funds_added", "balance_restored"]
    assert folded.state.balance == parse_money("10") - outcome.charge.amount


def test_redelivery_from_the_same_offset_is_replayed_and_debits_nothing() -> None:
    stored, _ = open_state(TENANT)
    folded = fold([(call("a"), Origin(0, 5))], prior={"a": Origin(0, 5)}, stored=stored)
    (outcome,) = folded.outcomes
    assert outcome.replay and outcome.reject is None and outcome.charge is None
    assert folded.state.balance == stored.balance


def test_the_same_call_id_from_another_offset_is_a_duplicate() -> None:
    stored, _ = open_state(TENANT)
    folded = fold([(call("a"), Origin(1, 9))], prior={"a": Origin(0, 5)}, stored=stored)
    (outcome,) = folded.outcomes
    assert outcome.reject is not None and outcome.reject.reason == DeadLetterReason.DUPLICATE
    assert "0/5" in outcome.reject.detail and folded.state.balance == stored.balance


def test_a_call_id_twice_in_one_batch_is_charged_once() -> None:
    folded = fold([(call("a"), Origin(0, 1)), (call("a"), Origin(0, 2))])
    first, second = folded.outcomes
    assert first.charge is not None
    assert second.reject is not None and second.reject.reason == DeadLetterReason.DUPLICATE
    assert "earlier in this batch" in second.reject.detail


def test_a_call_older_than_the_dedup_window_is_too_old() -> None:
    old = call("old", at=NOW - timedelta(days=46))
    (outcome,) = fold([(old, Origin(0, 1))]).outcomes
    assert outcome.reject is not None and outcome.reject.reason == DeadLetterReason.TOO_OLD
    assert "45-day dedup window" in outcome.reject.detail


def test_an_unparsable_number_is_refused_and_the_rest_of_the_batch_goes_on() -> None:
    folded = fold([(call("bad", number="+999"), Origin(0, 1)), (call("ok"), Origin(0, 2))])
    bad, ok = folded.outcomes
    assert bad.reject is not None and bad.reject.reason == DeadLetterReason.UNPARSABLE_NUMBER
    assert ok.charge is not None and [e.type for e in ok.events][:2] == ["funds_added", "balance_restored"]


def test_funding_with_no_charged_call_to_carry_it_is_deferred() -> None:
    """No event is applied without being emitted: a batch that charges nothing leaves the
    stored state as it was, config lots included, for the next batch that has a call."""
    folded = fold([(call("old", at=NOW - timedelta(days=60)), Origin(0, 1))])
    assert folded.charged == [] and folded.state.lots == [] and folded.state.balance == 0
    stored, _ = open_state(TENANT)
    folded = fold([(call("a"), Origin(0, 5))], prior={"a": Origin(0, 5)}, stored=stored)
    assert folded.state.lots == stored.lots  # lots already there are not applied again


def test_unknown_tenant_is_a_dead_letter_reason_of_the_contract() -> None:
    r = unknown_tenant("nobody")
    assert r.reason == "unknown_tenant" and r.reason is DeadLetterReason.UNKNOWN_TENANT
    assert "nobody" in r.detail


def test_the_engine_runs_the_same_rules() -> None:
    engine = Engine([TENANT], RATES)
    assert engine.admit_and_charge(call("a")).charge is not None  # type: ignore[union-attr]
    again = engine.admit_and_charge(call("a"))
    assert getattr(again, "reason", None) == DeadLetterReason.DUPLICATE
    stranger = Cdr("x", "nobody", "u1", "user_out", "+12125550100", "+442071234567", NOW, NOW, 0)
    assert getattr(engine.admit_and_charge(stranger), "reason", None) == DeadLetterReason.UNKNOWN_TENANT


# The worker reads from Redis only the pools its batch's calls can draw (`pool_fields_of`), not
# every pool of the tenant: folding on those alone must charge exactly as folding on all.
POOL_START = datetime(2026, 10, 20, tzinfo=UTC)  # the calls span a month start in every zone


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), batch=st.integers(1, 60))
@example(seed=7, batch=25)
def test_a_fold_on_the_batchs_pool_fields_alone_charges_as_a_fold_on_every_pool(seed: int, batch: int) -> None:
    rates = RateCard.from_csv_text(Settings().rates_file.read_text())
    entries = traffic.tenants(3, seed=seed, users_per_tenant=12, start=POOL_START - timedelta(days=40))
    books = {e["tenant_id"]: prepare(tenant_from_dict(e)) for e in entries}
    calls = [
        cdr_from_dict(d) for d in traffic.cdrs(entries, 400, seed=seed + 1, start=POOL_START, span=timedelta(days=25))
    ]
    full: dict[str, TenantState] = {}
    for first in range(0, len(calls), batch):
        by_tenant: dict[str, list[Cdr]] = {}
        for c in calls[first : first + batch]:
            assert isinstance(c, Cdr)
            by_tenant.setdefault(c.tenant_id, []).append(c)
        for tid, cdrs in by_tenant.items():
            book, state = books[tid], full.get(tid, TenantState())
            fields = pool_fields_of(book, cdrs)  # what the worker reads
            assert fields == {k for c in cdrs for k in pool_fields(book, c)}
            partial = state.copy()
            partial.pool_used = {k: v for k, v in state.pool_used.items() if k in fields}
            origins = [(c, Origin(0, first + i)) for i, c in enumerate(cdrs)]
            everything = fold_batch(book, state, origins, {}, rates)
            alone = fold_batch(book, partial, origins, {}, rates)
            assert [(o.charge, o.events, o.reject) for o in alone.outcomes] == [
                (o.charge, o.events, o.reject) for o in everything.outcomes
            ]
            assert {k: everything.state.pool_used.get(k) for k in fields} == {
                k: alone.state.pool_used.get(k) for k in fields
            }
            assert set(alone.state.pool_used) <= fields
            full[tid] = everything.state
