"""hypothesis invariants for money and allocation: parts sum to the whole, balances never drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.charging import charge_call, prepare
from processors.inputs import tenant_from_dict
from processors.ledger import expire, fund, open_state
from processors.model import Cdr
from processors.money import format_money, parse_money
from tests.helpers import fixture_rates, tenant_entry

RATES = fixture_rates()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NUMBERS = ["+12125550123", "+442071234567", "+2348012345678", "+19005550123", "+18005550123", "+33142685300"]
TYPES = ["user_out", "conf_out", "user_in"]

op = st.one_of(
    st.tuples(
        st.just("call"),
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(TYPES),
        st.sampled_from(NUMBERS),
        st.integers(0, 20000),
        st.integers(0, 400 * 86400),
    ),
    st.tuples(st.just("fund"), st.integers(1, 50_000_000), st.integers(0, 400 * 86400)),
)


@settings(max_examples=150, deadline=None)
@given(channel=st.sampled_from(["direct", "csp", "mca", "nce"]), ops=st.lists(op, max_size=40))
def test_segments_add_up_and_balance_never_drifts(channel: str, ops: list) -> None:
    sc = {
        "channel": channel,
        "users": [
            ["u1", "US", ["MCOMEETADD", "MCOPSTN1", "MCOPSTNPP"]],
            ["u2", "US", ["MCOPSTN8"]],
            ["u3", "GB", ["MCOPSTN2", "MCOPSTNPP"]],
        ],
        "funding": "3",
    }
    if channel in ("direct", "csp"):
        sc["auto_recharge"] = {"enabled": True, "amount": "10", "trigger": "1"}
    book = prepare(tenant_from_dict(tenant_entry(sc)))
    state, _ = open_state(book.tenant)
    funded, charged, expired = parse_money("3"), 0, 0
    ops = sorted(ops, key=lambda o: o[-1])  # time moves forward
    for i, o in enumerate(ops):
        at = T0 + timedelta(seconds=o[-1])
        if o[0] == "fund":
            events = fund(book.tenant, state, f"lot{i}", o[1], at, at)
            funded += o[1]
        else:
            _, user, ctype, number, dur, _ = o
            cdr = Cdr(f"c{i}", "T", user, ctype, "+12125550100", number, at - timedelta(seconds=dur), at, dur)
            charge, events = charge_call(book, state, cdr, RATES)
            assert sum(s.minutes for s in charge.segments) == charge.billed_minutes
            assert sum(s.amount for s in charge.segments) == charge.amount
            for s in charge.segments:
                if s.bucket == "billable":
                    assert sum(d.amount for d in s.lots) + s.deficit == s.amount
            charged += sum(s.amount for s in charge.segments if s.bucket == "billable")
            assert charge.balance_after == state.balance
        expired += sum(
            parse_money(format_money(e.field_dict()["amount"])) for e in events if e.type == "credits_expired"
        )
        assert state.balance == funded - charged - expired
        assert state.balance == state.funded - state.charged - state.expired
        if channel in ("mca", "nce"):
            assert state.balance >= 0  # post-paid: overage, never a negative credit balance
        if state.deficit:
            assert all(lot.remaining == 0 for lot in state.lots)
    events = expire(book.tenant, state, T0 + timedelta(days=800))
    expired += sum(e.field_dict()["amount"] for e in events if e.type == "credits_expired")
    assert state.balance == funded - charged - expired <= 0


@given(st.integers(-(10**15), 10**15))
def test_money_text_round_trips(micro: int) -> None:
    assert parse_money(format_money(micro)) == micro


def _state_strategy() -> st.SearchStrategy:
    from processors.ledger import Lot, TenantState

    text = st.text(max_size=12)  # quotes, backslashes, control and non-ASCII characters included
    money = st.integers(-(10**15), 10**15)
    moment = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
    lot = st.builds(Lot, text, money, money, moment, moment, st.booleans())
    return st.builds(
        TenantState,
        st.lists(lot, max_size=4),
        money,
        st.dictionaries(text, st.integers(0, 10**9), max_size=5),
        st.lists(text, max_size=3),
        st.none() | text,
        st.integers(0, 10**6),
        st.booleans(),
        money,
        money,
        money,
        money,
        st.none() | moment,
        st.booleans(),
    )


@settings(max_examples=300, deadline=None)
@given(_state_strategy())
def test_the_stored_state_text_is_the_json_of_the_state(state) -> None:  # type: ignore[no-untyped-def]
    """The worker writes `to_json()` to Redis; everything that reads a state parses it as
    the JSON of `to_dict()`: the two must be the same text, byte for byte."""
    import json

    from processors.ledger import TenantState

    text = state.to_json()
    assert text == json.dumps(state.to_dict(), separators=(",", ":"))
    assert TenantState.from_dict(json.loads(text)) == state
