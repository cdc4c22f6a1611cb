"""In-memory charging: the fold over many tenants, used by offline rating and tests.

The charging worker runs the same `open_state` and `charge_call` against Redis-held state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .charging import Book, charge_call, prepare
from .ledger import TenantState, fund
from .model import Cdr, Charge, Event, Tenant
from .money import format_money
from .rating import RateCard


def open_state(tenant: Tenant, state: TenantState | None = None) -> tuple[TenantState, list[Event]]:
    """Apply the configured funding lots not yet in `state` (a new state when None)."""
    state = TenantState() if state is None else state
    events: list[Event] = []
    for lot in sorted(tenant.funding, key=lambda f: (f.purchased_at, f.lot_id)):
        events.extend(fund(tenant, state, lot.lot_id, lot.amount, lot.purchased_at, lot.purchased_at))
    return state, events


class Engine:
    def __init__(self, tenants: Iterable[Tenant], rates: RateCard):
        self.rates = rates
        self.books: dict[str, Book] = {t.tenant_id: prepare(t) for t in tenants}
        self.states: dict[str, TenantState] = {}
        self.seen: set[str] = set()
        self.opening_events: list[Event] = []
        for tid, book in self.books.items():
            self.states[tid], events = open_state(book.tenant)
            self.opening_events.extend(events)

    def process(self, cdr: Cdr) -> tuple[Charge, list[Event]] | None:
        """Charge one call; None for a call id already charged (never charged twice)."""
        key = f"{cdr.tenant_id}\x00{cdr.call_id}"
        if key in self.seen:
            return None
        book = self.books[cdr.tenant_id]
        result = charge_call(book, self.states[cdr.tenant_id], cdr, self.rates)
        self.seen.add(key)
        return result


def charge_to_dict(charge: Charge) -> dict[str, Any]:
    """The output line of a charge: money as decimal strings."""
    return {
        "call_id": charge.call_id,
        "tenant_id": charge.tenant_id,
        "user_id": charge.user_id,
        "call_type": charge.call_type,
        "classification": charge.classification,
        "billed_seconds": charge.billed_seconds,
        "billed_minutes": charge.billed_minutes,
        "segments": [
            {
                "bucket": s.bucket,
                "minutes": s.minutes,
                "amount": format_money(s.amount),
                **({"pool": s.pool} if s.pool else {}),
                **({"rate": s.rate} if s.rate else {}),
                **(
                    {"lots": [{"lot_id": d.lot_id, "amount": format_money(d.amount)} for d in s.lots]} if s.lots else {}
                ),
                **({"deficit": format_money(s.deficit)} if s.deficit else {}),
            }
            for s in charge.segments
        ],
        "amount": format_money(charge.amount),
        "connection_fee": format_money(charge.connection_fee),
        "currency": charge.currency,
        "capability": charge.capability,
        "balance_after": format_money(charge.balance_after),
        "month": charge.month,
        "destination_country": charge.destination_country,
        "number_type": charge.number_type,
        "flags": list(charge.flags),
    }


MONEY_FIELDS = frozenset({"amount", "trigger", "deficit_covered"})


def event_to_dict(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": event.type,
        "event_id": event.event_id,
        "tenant_id": event.tenant_id,
        "at": event.at.isoformat().replace("+00:00", "Z"),
        "balance": format_money(event.balance),
    }
    for key, value in event.fields:
        out[key] = format_money(value) if key in MONEY_FIELDS else value
    return out
