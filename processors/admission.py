"""Admitting and folding one tenant's batch of CDRs: the rules that turn a call away and the
fold that charges the rest. The charging worker, offline rating and the in-memory engine all
run their calls through `fold_batch`, so a call is admitted or refused the same way on every
path.

The rules, in the order they are applied to a call:

* `unknown_tenant`: no configuration for the call's tenant (checked by the caller, which
  knows its directory: `unknown_tenant()` builds the refusal).
* redelivery: the call id was recorded before from the **same** source offset (a batch
  read again after a crash or a rebalance). Not a refusal: the recorded outputs are emitted
  again, byte for byte, and nothing is debited.
* `duplicate`: the call id was recorded from **another** source offset, or earlier in this
  batch (the platform published the call twice). Nothing is debited.
* `too_old`: the call started before the dedup window (`oldest`): past it the call-id record
  may have expired, so whether the call was charged cannot be told.
* `future_start`: the call starts after `latest` (now plus the allowed clock skew): a
  platform clock gone wrong, or a made-up date; charging it would draw on a future month.
* `unparsable_number`: the pure core cannot analyse a number of the call.

Funding lots from the tenant's configuration are applied by the call they come before (at
their purchase time, see `charging.charge_call`), and their events are that call's: a batch
that charges no call applies nothing (no event is ever applied without being emitted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .charging import Book, OutOfRange, Unchargeable, charge_call
from .frozen import written_inits
from .inputs import DeadLetterReason, Rejected
from .ledger import TenantState, missing_funding
from .model import Cdr, Charge, Event
from .rating import RateCard


@dataclass(frozen=True)
class Origin:
    """Where a CDR was read from: its source partition and offset."""

    partition: int
    offset: int

    def __init__(
        self,
        partition: int,
        offset: int,
    ) -> None:
        self.partition = partition  # type: ignore[misc]
        self.offset = offset  # type: ignore[misc]


@dataclass
class Outcome:
    """What became of one call of the batch: exactly one of `reject`, `replay`, `charge`."""

    cdr: Cdr
    origin: Origin
    reject: Rejected | None = None
    replay: bool = False  # redelivered: re-emit what was recorded for it, debit nothing
    charge: Charge | None = None
    events: Sequence[Event] = ()

    def __init__(
        self,
        cdr: Cdr,
        origin: Origin,
        reject: Rejected | None = None,
        replay: bool = False,
        charge: Charge | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        self.cdr = cdr
        self.origin = origin
        self.reject = reject
        self.replay = replay
        self.charge = charge
        self.events = events


@dataclass
class Folded:
    state: TenantState  # the state after the batch (the stored one when nothing was charged)
    outcomes: list[Outcome]

    def __init__(
        self,
        state: TenantState,
        outcomes: list[Outcome],
    ) -> None:
        self.state = state
        self.outcomes = outcomes

    @property
    def charged(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.charge is not None]


def unknown_tenant(tenant_id: str) -> Rejected:
    return Rejected(DeadLetterReason.UNKNOWN_TENANT, f"unknown tenant {tenant_id!r}")


def tenant_refusal(tenant_id: str, book: Book | None) -> Rejected | None:
    """Why no call of this tenant is charged (not configured, or offboarded), or None."""
    if book is None:
        return unknown_tenant(tenant_id)
    removed = book.tenant.removed_at
    if removed is not None:
        return Rejected(
            DeadLetterReason.TENANT_REMOVED,
            f"tenant {tenant_id!r} was removed at {removed.isoformat()}: its calls are no longer charged",
        )
    return None


def admit(
    cdr: Cdr,
    origin: Origin,
    prior: Origin | None,
    seen_in_batch: bool,
    oldest: datetime | None,
    window_days: int,
    latest: datetime | None = None,
) -> Rejected | bool:
    """The admission rules for one call of a known tenant: a refusal, True for a
    redelivery (replay what was recorded), False to charge it."""
    if prior is not None:
        if prior == origin:
            return True
        return Rejected(
            DeadLetterReason.DUPLICATE, f"call {cdr.call_id} already charged from {prior.partition}/{prior.offset}"
        )
    if seen_in_batch:
        return Rejected(DeadLetterReason.DUPLICATE, f"call {cdr.call_id} already charged earlier in this batch")
    if oldest is not None and cdr.start < oldest:
        return Rejected(
            DeadLetterReason.TOO_OLD,
            f"call started {cdr.start.isoformat()}, before the {window_days}-day dedup window",
        )
    if latest is not None and cdr.start > latest:
        return Rejected(
            DeadLetterReason.FUTURE_START,
            f"call starts {cdr.start.isoformat()}, after {latest.isoformat()} (now plus the allowed clock skew)",
        )
    return False


def fold_batch(
    book: Book,
    stored_state: TenantState | None,
    batch: Sequence[tuple[Cdr, Origin]],
    prior: Mapping[str, Origin],
    rates: RateCard,
    oldest: datetime | None = None,
    window_days: int = 0,
    in_place: bool = False,
    latest: datetime | None = None,
) -> Folded:
    """Admit and charge one tenant's calls in order, on a copy of `stored_state`.

    `prior` maps the call ids already recorded (in Redis, or by the engine) to the origin
    they were charged from; `oldest` is the start of the dedup window (None: no window).
    `in_place` folds into `stored_state` itself (the engine, which keeps no stored copy).
    """
    if in_place and stored_state is not None:
        state = stored_state
    else:
        state = stored_state.copy() if stored_state is not None else TenantState()
    outcomes: list[Outcome] = []
    charged_here: set[str] = set()
    pending = bool(missing_funding(book.tenant, state))  # once per batch, not per call: usually none
    for cdr, origin in batch:
        outcome = Outcome(cdr, origin)
        outcomes.append(outcome)
        verdict = admit(cdr, origin, prior.get(cdr.call_id), cdr.call_id in charged_here, oldest, window_days, latest)
        if isinstance(verdict, Rejected):
            outcome.reject = verdict
            continue
        if verdict:
            outcome.replay = True
            continue
        try:
            outcome.charge, outcome.events = charge_call(book, state, cdr, rates, pending)
        except Unchargeable as exc:
            outcome.reject = Rejected(DeadLetterReason.UNPARSABLE_NUMBER, str(exc))
            continue
        except OutOfRange as past:  # its own name: mypyc types `exc` as the clause above's class
            outcome.reject = Rejected(DeadLetterReason.MONEY_OUT_OF_RANGE, str(past))
            continue
        charged_here.add(cdr.call_id)
        if pending:
            pending = bool(missing_funding(book.tenant, state))
    return Folded(state, outcomes)


written_inits(Origin)
