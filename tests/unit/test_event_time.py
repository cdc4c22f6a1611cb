"""Event time (our rule): for a tenant whose calls all draw on credits, the order in which
fundings, expiry timer ticks and late CDRs (each within the allowed lateness) arrive does
not change what each lot gives, what is forfeited, or the final balance.

Minute pools are drawn in the order the tenant's CDRs are charged, as live consumption
would draw them; this tenant has none (pay-as-you-go plus Communications Credits)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.engine import Engine
from processors.inputs import tenant_from_dict
from processors.ledger import ALLOWED_LATENESS, TenantState, forfeit_due, fund
from processors.model import Cdr
from tests.helpers import fixture_rates, tenant_entry

RATES = fixture_rates()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86400
SPAN_DAYS = 500  # lots live 12 months: some expire inside the run

calls = st.lists(
    st.tuples(
        st.integers(0, SPAN_DAYS * DAY),  # start, seconds after T0
        st.integers(1, 120),  # minutes
        st.integers(0, int(ALLOWED_LATENESS.total_seconds()) - 120 * 60),  # lateness after the end
        st.sampled_from(["+12125550123", "+447700900123", "+33142685300"]),
    ),
    max_size=25,
)
fundings = st.lists(st.tuples(st.integers(0, SPAN_DAYS * DAY), st.integers(1, 40_000_000)), max_size=6)
ticks = st.lists(st.integers(0, (SPAN_DAYS + 400) * DAY), max_size=8)


def run(
    ops: list[tuple[int, int, str, object]], funded_at_start: bool
) -> tuple[dict[str, tuple[int, bool]], int, int, int]:
    """Apply (arrival, order, kind, payload) in arrival order; the final lots, balance,
    deficit and total forfeited."""
    entry = tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]]})
    if funded_at_start:
        entry["funding"] = [{"lot_id": "cfg", "amount": "3.00", "purchased_at": "2026-01-01T00:00:00Z"}]
    engine = Engine([tenant_from_dict(entry)], RATES)
    tenant = engine.books["T"].tenant
    for _, _, kind, payload in sorted(ops, key=lambda o: (o[0], o[1])):
        state: TenantState = engine.states["T"]
        if kind == "call":
            assert isinstance(payload, Cdr)
            assert engine.process(payload) is not None
        elif kind == "fund":
            lot_id, amount, at = payload  # type: ignore[misc]
            fund(tenant, state, lot_id, amount, at, at)
        else:
            assert isinstance(payload, datetime)
            forfeit_due(tenant, state, ALLOWED_LATENESS, wall=payload)
    state = engine.states["T"]
    lots = {lot.lot_id: (lot.remaining, lot.expired and lot.remaining == 0) for lot in state.lots}
    return lots, state.balance, state.deficit, state.expired


@settings(max_examples=300, deadline=None)
@given(calls, fundings, ticks, st.booleans())
def test_any_interleaving_within_the_lateness_draws_and_forfeits_as_time_order(
    cs: list[tuple[int, int, int, str]], fs: list[tuple[int, int]], ts: list[int], funded_at_start: bool
) -> None:
    in_time: list[tuple[int, int, str, object]] = []
    late: list[tuple[int, int, str, object]] = []
    for i, (start_s, minutes, delay_s, number) in enumerate(cs):
        start = T0 + timedelta(seconds=start_s)
        end = start + timedelta(minutes=minutes)
        cdr = Cdr(f"c{i}", "T", "u1", "user_out", "+12125550100", number, start, end, minutes * 60)
        end_s = start_s + minutes * 60
        in_time.append((end_s, i, "call", cdr))  # a CDR arrives when the call ends
        late.append((end_s + delay_s, i, "call", cdr))  # or later, within the lateness
    for j, (at_s, amount) in enumerate(fs):
        op = (at_s, 1000 + j, "fund", (f"f{j}", amount, T0 + timedelta(seconds=at_s)))
        in_time.append(op)
        late.append(op)
    for k, at_s in enumerate(ts):
        op = (at_s, 2000 + k, "tick", T0 + timedelta(seconds=at_s))
        in_time.append(op)
        late.append(op)
    assert run(late, funded_at_start) == run(in_time, funded_at_start)
