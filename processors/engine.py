"""In-memory charging: the fold over many tenants, used by offline rating and tests.

The charging worker runs the same `admission.fold_batch` against Redis-held state.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from .admission import Origin, Outcome, fold_batch, tenant_refusal, unknown_tenant
from .charging import Book, Unchargeable, prepare
from .inputs import DeadLetterReason, Rejected
from .ledger import ALLOWED_LATENESS, TenantState, forfeit_due, open_state
from .model import Cdr, Charge, Event, Tenant
from .money import format_money
from .rating import RateCard


class Engine:
    """Many tenants' states in memory; every call goes through `admission.fold_batch`, the
    same admission rules and fold as the streaming worker. Funding from the configuration is
    applied at its purchase time, between the calls, as the worker applies it."""

    def __init__(
        self,
        tenants: Iterable[Tenant],
        rates: RateCard,
        latest_start: datetime | None = None,
        lateness: timedelta = ALLOWED_LATENESS,
    ):
        self.rates = rates
        self.latest_start = latest_start  # calls starting later are refused as future_start
        self.books: dict[str, Book] = {t.tenant_id: prepare(t, lateness) for t in tenants}
        self.states: dict[str, TenantState] = {tid: TenantState() for tid in self.books}
        self.seen: dict[str, dict[str, Origin]] = {tid: {} for tid in self.books}
        self._n = 0

    def admit_and_charge(self, cdr: Cdr) -> Outcome | Rejected:
        """Charge one call (input order is the offset), or say why it is refused."""
        book = self.books.get(cdr.tenant_id)
        if book is None:
            return unknown_tenant(cdr.tenant_id)
        refusal = tenant_refusal(cdr.tenant_id, book)
        if refusal is not None:
            return refusal
        self._n += 1
        seen = self.seen[cdr.tenant_id]
        folded = fold_batch(
            book,
            self.states[cdr.tenant_id],
            [(cdr, Origin(0, self._n))],
            seen,
            self.rates,
            in_place=True,
            latest=self.latest_start,
        )
        (outcome,) = folded.outcomes
        if outcome.reject is not None:
            return outcome.reject
        self.states[cdr.tenant_id] = folded.state
        seen[cdr.call_id] = outcome.origin
        return outcome

    def process(self, cdr: Cdr) -> tuple[Charge, list[Event]] | None:
        """Charge one call; None for a call id already charged (never charged twice)."""
        result = self.admit_and_charge(cdr)
        if isinstance(result, Rejected):
            if result.reason == DeadLetterReason.DUPLICATE:
                return None
            if result.reason == DeadLetterReason.UNPARSABLE_NUMBER:
                raise Unchargeable(result.detail)
            raise KeyError(cdr.tenant_id)
        assert result.charge is not None
        return result.charge, list(result.events)

    def as_of(self, at: datetime) -> list[Event]:
        """Bring every tenant to `at` as the control timer would: configured lots bought by
        then applied, lots whose expiry is older than the allowed lateness forfeited."""
        events: list[Event] = []
        for tid, book in self.books.items():
            state = self.states[tid]
            _, funded = open_state(book.tenant, state, upto=at)
            events += funded + forfeit_due(book.tenant, state, book.lateness, wall=at)
        return events


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
        "tariff": None
        if charge.tariff is None
        else {
            "rate_id": charge.tariff.rate_id,
            "price_per_minute": format_money(charge.tariff.price_per_minute),
            "connection_fee": format_money(charge.tariff.connection_fee),
            "first_increment": charge.tariff.first_increment,
            "next_increment": charge.tariff.next_increment,
        },
        "rate_card": charge.rate_card,
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
