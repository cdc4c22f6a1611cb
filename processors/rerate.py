"""Re-rating: a call charged as free because no tariff matched (`FREECALL`, bucket
`free_unrated`) is priced again with a newer rate card, and what it now costs is taken from
the balance as an adjustment.

The adjustment is a charge record of its own (call id `<call id>:rerate`, flag `adjusts`)
naming the original call, so the ledger keeps every effect on the balance as a record:
the replay, the statement (as re-rating adjustments) and the export all see it. The pool
minutes the call drew stay as they were; only its unrated minutes are priced, at the
tariff the new card gives for the call's route, from the lots valid when it started.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .charging import Book, route, take_credits, tariff_for
from .ledger import TenantState, after_change
from .model import FREE_UNRATED, Cdr, Charge, Event
from .rating import RateCard, Tariff

ADJUSTS = "adjusts"
SUFFIX = ":rerate"


def needs_rerating(c: Mapping[str, Any]) -> bool:
    """A charge (Avro shape) with unrated minutes, and not itself an adjustment."""
    return ADJUSTS not in c["flags"] and any(s["bucket"] == FREE_UNRATED and s["minutes"] for s in c["segments"])


def cdr_of(c: Mapping[str, Any]) -> Cdr:
    """The call a charge record was made from (charge.v2 keeps the numbers)."""
    return Cdr(
        c["call_id"],
        c["tenant_id"],
        c["user_id"],
        c["call_type"],
        c.get("caller_number") or "",
        c.get("callee_number") or "",
        c["start_time"],
        c["end_time"],
        c["duration_s"],
        usage_country=c.get("usage_country"),
    )


def price(book: Book, c: Mapping[str, Any], rates: RateCard) -> tuple[Tariff, int, int] | None:
    """(tariff, unrated minutes, amount) of a FREECALL charge under `rates`, or None when the
    card still has no tariff for it (or its numbers were not kept: a charge.v1 record)."""
    if not c.get("callee_number") and not c.get("caller_number"):
        return None
    tariff = tariff_for(book, rates, route(book, cdr_of(c)))
    if tariff is None:
        return None
    pooled = sum(s["minutes"] for s in c["segments"] if s["pool"] is not None)
    minutes = sum(s["minutes"] for s in c["segments"] if s["bucket"] == FREE_UNRATED)
    seconds = max(0, tariff.billed_seconds(c["duration_s"]) - pooled * 60)
    amount = tariff.connection_fee + tariff.price_seconds(seconds)
    return tariff, minutes, amount


def adjust(
    book: Book, state: TenantState, c: Mapping[str, Any], priced: tuple[Tariff, int, int], rates: RateCard, at: datetime
) -> tuple[Charge, list[Event]]:
    """Take the re-rated amount of charge `c` from `state` (mutated): the adjustment record
    and the balance events it causes."""
    tariff, minutes, amount = priced
    tenant = book.tenant
    before = state.balance
    segments = tuple(take_credits(tenant, state, minutes, amount, tariff.rate_id, c["start_time"]))
    call_id = c["call_id"] + SUFFIX
    events = after_change(tenant, state, before, at, call_id)
    charge = Charge(
        call_id=call_id,
        tenant_id=c["tenant_id"],
        user_id=c["user_id"],
        call_type=c["call_type"],
        classification=segments[0].bucket if len(segments) == 1 else "mixed",
        billed_seconds=minutes * 60,
        billed_minutes=minutes,
        segments=segments,
        amount=amount,
        connection_fee=tariff.connection_fee,
        capability=c["capability"] if c["capability"] != "FREECALL" else "MCOPSTNPP",
        balance_after=state.balance,
        currency=tenant.currency,
        start=c["start_time"],
        end=c["end_time"],
        duration_s=c["duration_s"],
        destination_country=c.get("destination_country"),
        number_type=c.get("number_type"),
        domestic=c.get("domestic"),
        flags=(ADJUSTS,),
        month=c["month"],
        graph_call_id=c.get("graph_call_id"),
        conference_id=c.get("conference_id"),
        usage_country=c.get("usage_country"),
        user_principal_name=c.get("user_principal_name"),
        user_display_name=c.get("user_display_name"),
        caller_number=c.get("caller_number"),
        callee_number=c.get("callee_number"),
        tariff=tariff,
        rate_card=rates.version,
    )
    return charge, events
