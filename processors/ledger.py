"""The credit balance of one tenant as a fold over funding, debits and expiry.

Lots are consumed first-in, first-out (by purchase time) and expire 12 months after
purchase. Time is the time of the data (our rule, DOMAIN.md "Event time"): a call draws
from the lots valid at its *start*, FIFO, then from lots bought after it started (what the
deficit it would have left in time order is covered by), then goes into deficit. A lot's
remainder is forfeited only once its expiry is older than the allowed lateness on the clock
of the data (`TenantState.watermark`, the latest call end charged, or the control timer's
wall clock, whichever is later), so a CDR delivered late still pays with the lot that was
valid when the call was made. A completed call is always charged, so
a `direct`/`csp` balance may go below zero (our rule): the shortfall is a deficit that the
next funding covers first. Invariant, to the micro-unit, at every step:

    balance == funded - charged - expired

Each operation returns the events it caused (ids derived from the cause, so a replay
reproduces them) and mutates only the state object it is given; callers copy first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any

from .calendar import add_months
from .frozen import written_inits
from .model import POSTPAID_CHANNELS, Event, Funding, LotDraw, Tenant, event_id
from .money import MAX_BALANCE, format_money

_quote: Callable[[str], str] = encode_basestring_ascii  # json.dumps' own string quoting (C)
_JSON_BOOL = {True: "true", False: "false"}

LOT_LIFETIME_MONTHS = 12
ALLOWED_LATENESS = timedelta(hours=72)  # default of the setting CALLCHARGE_ALLOWED_LATENESS_H


@dataclass(frozen=True)
class Lot:
    lot_id: str
    amount: int
    remaining: int
    purchased_at: datetime
    expires_at: datetime
    expired: bool = False

    def __init__(
        self,
        lot_id: str,
        amount: int,
        remaining: int,
        purchased_at: datetime,
        expires_at: datetime,
        expired: bool = False,
    ) -> None:
        self.lot_id = lot_id  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.remaining = remaining  # type: ignore[misc]
        self.purchased_at = purchased_at  # type: ignore[misc]
        self.expires_at = expires_at  # type: ignore[misc]
        self.expired = expired  # type: ignore[misc]

    # Built directly: dataclasses.replace() inspects the fields on every call (debit path).
    def debited(self, amount: int) -> Lot:
        return Lot(self.lot_id, self.amount, self.remaining - amount, self.purchased_at, self.expires_at, self.expired)

    def forfeited(self) -> Lot:
        return Lot(self.lot_id, self.amount, 0, self.purchased_at, self.expires_at, True)


@dataclass
class TenantState:
    lots: list[Lot] = field(default_factory=list)
    deficit: int = 0
    pool_used: dict[str, int] = field(default_factory=dict)
    thresholds: list[str] = field(default_factory=list)
    recharge_in_flight: str | None = None
    recharge_seq: int = 0
    below_trigger: bool = False
    funded: int = 0
    charged: int = 0
    expired: int = 0
    overage: int = 0
    watermark: datetime | None = None  # the latest end of a call charged: the data's clock
    zero_raised: bool = False  # balance_zero was raised and the balance has not been restored since
    # Pool keys drawn since the state was read or last written: the store writes those
    # fields only (a state's pools are hash fields of their own), not every pool again.
    pools_dirty: set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def balance(self) -> int:
        lots = self.lots
        if len(lots) == 1:  # the usual case, asked several times per call: no generator
            return lots[0].remaining - self.deficit
        return sum(lot.remaining for lot in lots) - self.deficit

    def copy(self) -> TenantState:
        return TenantState(
            list(self.lots),
            self.deficit,
            dict(self.pool_used),
            list(self.thresholds),
            self.recharge_in_flight,
            self.recharge_seq,
            self.below_trigger,
            self.funded,
            self.charged,
            self.expired,
            self.overage,
            self.watermark,
            self.zero_raised,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "lots": [
                [
                    lot.lot_id,
                    lot.amount,
                    lot.remaining,
                    lot.purchased_at.isoformat(),
                    lot.expires_at.isoformat(),
                    lot.expired,
                ]
                for lot in self.lots
            ],
            "deficit": self.deficit,
            "pool_used": self.pool_used,
            "thresholds": self.thresholds,
            "recharge_in_flight": self.recharge_in_flight,
            "recharge_seq": self.recharge_seq,
            "below_trigger": self.below_trigger,
            "funded": self.funded,
            "charged": self.charged,
            "expired": self.expired,
            "overage": self.overage,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "zero_raised": self.zero_raised,
        }

    def to_json(self, pools: bool = True) -> str:
        """`json.dumps(self.to_dict(), separators=(",", ":"))`, written out: the worker
        stores one state per tenant per batch, and the dict plus the generic encoder cost
        it about three times as much (a property test holds the two equal). Without
        `pools`, `pool_used` is written empty: the store keeps each pool in a field of its
        own (`pipeline.adapters.store`)."""
        q = _quote
        lots = ",".join(
            f'[{q(lot.lot_id)},{lot.amount},{lot.remaining},"{lot.purchased_at.isoformat()}",'
            f'"{lot.expires_at.isoformat()}",{_JSON_BOOL[lot.expired]}]'
            for lot in self.lots
        )
        used = ",".join(f"{q(k)}:{v}" for k, v in self.pool_used.items()) if pools else ""
        thresholds = ",".join(q(t) for t in self.thresholds)
        flight = "null" if self.recharge_in_flight is None else q(self.recharge_in_flight)
        mark = "null" if self.watermark is None else f'"{self.watermark.isoformat()}"'
        return (
            f'{{"lots":[{lots}],"deficit":{self.deficit},"pool_used":{{{used}}},'
            f'"thresholds":[{thresholds}],"recharge_in_flight":{flight},"recharge_seq":{self.recharge_seq},'
            f'"below_trigger":{_JSON_BOOL[self.below_trigger]},"funded":{self.funded},"charged":{self.charged},'
            f'"expired":{self.expired},"overage":{self.overage},"watermark":{mark},'
            f'"zero_raised":{_JSON_BOOL[self.zero_raised]}}}'
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TenantState:
        lots = [
            Lot(a, b, c, datetime.fromisoformat(p), datetime.fromisoformat(e), bool(x))
            for a, b, c, p, e, x in d["lots"]
        ]
        return cls(
            lots,
            d["deficit"],
            dict(d["pool_used"]),
            list(d["thresholds"]),
            d["recharge_in_flight"],
            d["recharge_seq"],
            d["below_trigger"],
            d["funded"],
            d["charged"],
            d["expired"],
            d.get("overage", 0),
            datetime.fromisoformat(d["watermark"]) if d.get("watermark") else None,
            bool(d["zero_raised"]) if "zero_raised" in d else _zero_before(lots, d),
        )


def _zero_before(lots: list[Lot], d: dict[str, Any]) -> bool:
    """The zero state of a state stored before the flag existed (at zero after money moved)."""
    return sum(lot.remaining for lot in lots) - d["deficit"] <= 0 and bool(d["funded"] or d["charged"])


def _event(cause: str, kind: str, tenant: Tenant, at: datetime, state: TenantState, **fields: Any) -> Event:
    return Event(
        event_id(tenant.tenant_id, cause, kind), kind, tenant.tenant_id, at, state.balance, tuple(fields.items())
    )


def after_change(tenant: Tenant, state: TenantState, before: int, at: datetime, cause: str) -> list[Event]:
    """Zero crossing, restore, low-balance and the auto-recharge decision."""
    events: list[Event] = []
    after = state.balance
    # direct/csp: at or below zero is the zero state, raised once per episode, the first
    # billable charge of a tenant that never had credits included (our rule). mca/nce only
    # cross zero when leftover credits run out (overage goes on after that).
    if tenant.channel in POSTPAID_CHANNELS:
        zero = before > 0 >= after
    else:
        zero = after <= 0 and not state.zero_raised
    if zero:
        state.zero_raised = True
        events.append(_event(cause, "balance_zero", tenant, at, state))
    elif before <= 0 < after:
        state.zero_raised = False
        events.append(_event(cause, "balance_restored", tenant, at, state))
    ar = tenant.auto_recharge
    if ar is None:
        return events
    if after < ar.trigger:
        if not state.below_trigger:
            state.below_trigger = True
            events.append(_event(cause, "balance_low", tenant, at, state, trigger=ar.trigger))
        if ar.enabled and state.recharge_in_flight is None and tenant.channel not in POSTPAID_CHANNELS:
            state.recharge_seq += 1
            request_id = f"{tenant.tenant_id}:recharge:{state.recharge_seq}"
            state.recharge_in_flight = request_id
            events.append(
                _event(cause, "recharge_requested", tenant, at, state, request_id=request_id, amount=ar.amount)
            )
    else:
        state.below_trigger = False
    return events


def fund(
    tenant: Tenant, state: TenantState, lot_id: str, amount: int, purchased_at: datetime, at: datetime
) -> list[Event]:
    """Add a lot; any deficit is covered first. A lot id seen before changes nothing."""
    if amount <= 0:
        raise ValueError("funding amount must be positive")
    if any(lot.lot_id == lot_id for lot in state.lots):
        return []
    before = state.balance
    covered = min(state.deficit, amount)
    state.deficit -= covered
    expires = add_months(purchased_at, LOT_LIFETIME_MONTHS)
    state.lots.append(Lot(lot_id, amount, amount - covered, purchased_at, expires))
    state.lots.sort(key=lambda lot: (lot.purchased_at, lot.lot_id))
    state.funded += amount
    cause = f"fund:{lot_id}"
    events = [
        _event(
            cause,
            "funds_added",
            tenant,
            at,
            state,
            lot_id=lot_id,
            amount=amount,
            deficit_covered=covered,
            expires_at=expires.isoformat(),
        )
    ]
    events.extend(after_change(tenant, state, before, at, cause))
    return events


def forfeit_due(tenant: Tenant, state: TenantState, lateness: timedelta, wall: datetime | None = None) -> list[Event]:
    """Forfeit every lot whose expiry is older than `lateness` on the clock of the data:
    the latest call end charged, or the wall clock of the control timer when later."""
    clock = state.watermark
    if wall is not None and (clock is None or wall > clock):
        clock = wall
    if clock is None:
        return []
    return expire(tenant, state, clock - lateness)


def expire(tenant: Tenant, state: TenantState, at: datetime) -> list[Event]:
    """Forfeit the remainder of every lot whose 12 months are over at `at` (`at` is the
    data's clock less the allowed lateness: see `forfeit_due`)."""
    events: list[Event] = []
    for i, lot in enumerate(state.lots):
        if lot.expired or lot.expires_at > at:
            continue
        before = state.balance
        state.lots[i] = lot.forfeited()
        state.expired += lot.remaining
        cause = f"expire:{lot.lot_id}"
        if lot.remaining:
            events.append(
                _event(cause, "credits_expired", tenant, lot.expires_at, state, lot_id=lot.lot_id, amount=lot.remaining)
            )
            events.extend(after_change(tenant, state, before, lot.expires_at, cause))
    return events


def debit(state: TenantState, amount: int, allow_deficit: bool, at: datetime) -> tuple[tuple[LotDraw, ...], int, int]:
    """Take `amount` for a call that started `at`: first from the lots valid at `at`
    (bought before it, not yet expired), FIFO; then from lots bought after it, FIFO (in time
    order the call would have left a deficit that those fundings cover first).

    Returns (lot draws, deficit taken, amount not taken). With allow_deficit the whole
    amount is always taken (the shortfall becomes deficit); without, the shortfall is
    returned untaken (post-paid overage for mca/nce).
    """
    draws: list[LotDraw] = []
    left = amount
    lots = state.lots
    valid = [i for i, lot in enumerate(lots) if lot.remaining > 0 and lot.purchased_at <= at < lot.expires_at]
    later = [i for i, lot in enumerate(lots) if lot.remaining > 0 and lot.purchased_at > at and not lot.expired]
    for i in valid + later:
        if left == 0:
            break
        lot = lots[i]
        take = min(lot.remaining, left)
        lots[i] = lot.debited(take)
        draws.append(LotDraw(lot.lot_id, take))
        left -= take
    deficit = 0
    if left and allow_deficit:
        deficit, left = left, 0
        state.deficit += deficit
    state.charged += amount - left
    return tuple(draws), deficit, left


def late_after_expiry(state: TenantState, at: datetime) -> bool:
    """A lot valid when the call started has been forfeited already: the CDR came after it."""
    for lot in state.lots:
        if lot.expired and lot.purchased_at <= at < lot.expires_at:
            return True
    return False


def missing_funding(tenant: Tenant, state: TenantState) -> list[Funding]:
    """The configured funding lots not in `state` yet (lots only ever join a state)."""
    if not tenant.funding:
        return []
    have = {lot.lot_id for lot in state.lots}
    return [f for f in tenant.funding if f.lot_id not in have]


def open_state(
    tenant: Tenant, state: TenantState | None = None, upto: datetime | None = None
) -> tuple[TenantState, list[Event]]:
    """Apply the configured funding lots not yet in `state` (a new state when None) that
    were bought at or before `upto` (every one when None), each at its purchase time."""
    state = TenantState() if state is None else state
    events: list[Event] = []
    due = [f for f in missing_funding(tenant, state) if upto is None or f.purchased_at <= upto]
    for lot in sorted(due, key=lambda f: (f.purchased_at, f.lot_id)) if due else ():
        if state.balance + lot.amount > MAX_BALANCE:
            events.append(refuse_lot(tenant, state, lot))
            continue
        events.extend(fund(tenant, state, lot.lot_id, lot.amount, lot.purchased_at, lot.purchased_at))
    return state, events


def refuse_lot(tenant: Tenant, state: TenantState, lot: Funding) -> Event:
    """A configured lot that would take the balance past `money.MAX_BALANCE` (lots added
    load after load, each file within its cap) is refused, not applied: it stays in the
    state as an empty, expired lot (so it is refused once) and a `funding_refused` event
    with its id, amount and reason is on the ledger."""
    state.lots.append(Lot(lot.lot_id, 0, 0, lot.purchased_at, lot.purchased_at, True))
    state.lots.sort(key=lambda x: (x.purchased_at, x.lot_id))
    reason = f"the balance would exceed the maximum of {format_money(MAX_BALANCE)}"
    return _event(
        f"fund:{lot.lot_id}", "funding_refused", tenant, lot.purchased_at, state,
        lot_id=lot.lot_id, amount=lot.amount, reason=reason,
    )  # fmt: skip


written_inits(Lot)
