"""The admission rules and the batch fold (`processors.admission`), without Kafka or Redis:
the same code the charging worker runs at step 4, offline rating and the engine run per call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processors.admission import Origin, fold_batch, unknown_tenant
from processors.charging import prepare
from processors.engine import Engine
from processors.inputs import DeadLetterReason, tenant_from_dict
from processors.ledger import open_state
from processors.model import Cdr
from processors.money import parse_money
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
