"""A tenant's balance state rebuilt from its ledger: the charges and balance events it emitted.

Every change to a `TenantState` leaves its effect in a record on Kafka:

* a charge's segments: pool minutes drawn (pool id; the dimension follows from the pool
  and the charge's `domestic`), the lots drawn and the deficit taken, overage;
* `funds_added`: the lot (id, amount, purchase time = the event time, expiry) and the
  deficit it covered; `credits_expired`: the remainder a lot forfeited;
* `recharge_requested` / `recharge_succeeded` / a final `recharge_failed`: the request in
  flight and the request sequence; `pool_threshold`: the pool alerts already sent.

The effects are sums and sets, so the order of charges relative to events does not matter
(pool alerts keep their topic order: only the charging worker writes them). Records read
twice (an at-least-once reader, a replay) count once: charges by call id, events by id.
`below_trigger` follows from the balance and whether a `balance_low` was ever raised, the
zero state from the balance and whether a `balance_zero` was ever raised, the data's clock
(`watermark`) from the latest call end.
A lot used up before its expiry date carries no event when it expires, so a rebuilt state
shows it as not expired; nothing depends on that flag for a lot with nothing left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .calendar import add_months
from .charging import ZONE_A_POOL
from .errors import DomainError
from .ledger import LOT_LIFETIME_MONTHS, Lot, TenantState
from .model import BILLABLE, OVERAGE, Event, Tenant
from .money import micro

KEPT_POOL_ALERTS = 8  # as charging._pool_alerts keeps them


class LedgerGap(DomainError):
    """The ledger refers to a lot it never funded: records are missing (a topic read short,
    retention shorter than a lot's life); no state is guessed."""


@dataclass
class _LotSums:
    amount: int
    purchased_at: datetime
    expires_at: datetime
    covered: int = 0
    drawn: int = 0
    forfeited: int = 0
    expired: bool = False


def state_from_ledger(tenant: Tenant, charges: Iterable[Mapping[str, Any]], events: Iterable[Event]) -> TenantState:
    """The state the charging fold left for `tenant`, from its charge records (Avro
    shape: segments with pool, lots, deficit; `domestic`; `month`) and balance events."""
    state = TenantState()
    lots: dict[str, _LotSums] = {}
    drawn: dict[str, int] = {}
    covered = 0
    requested: dict[str, int] = {}
    closed: set[str] = set()
    seen: set[str] = set()
    zero_seen = low_seen = False
    for e in events:
        if e.tenant_id != tenant.tenant_id or e.event_id in seen:
            continue
        seen.add(e.event_id)
        f = e.field_dict()
        if e.type == "funds_added":
            amount = micro(f["amount"])
            lot = _LotSums(amount, e.at, add_months(e.at, LOT_LIFETIME_MONTHS))
            lot.covered = micro(f.get("deficit_covered", 0))
            lots[f["lot_id"]] = lot
            state.funded += amount
            covered += lot.covered
        elif e.type == "funding_refused" and "lot_id" in f:  # a configured lot past the range
            lot = _LotSums(0, e.at, e.at, expired=True)
            lots[f["lot_id"]] = lot
        elif e.type == "credits_expired":
            if f["lot_id"] not in lots:
                raise LedgerGap(f"{tenant.tenant_id}: lot {f['lot_id']} expired but was never funded")
            lot = lots[f["lot_id"]]
            lot.forfeited += micro(f["amount"])
            lot.expired = True
            state.expired += micro(f["amount"])
        elif e.type == "recharge_requested":
            requested[f["request_id"]] = int(str(f["request_id"]).rsplit(":", 1)[1])
        elif e.type == "recharge_succeeded" or (e.type == "recharge_failed" and not f.get("next_attempt_at")):
            closed.add(f["request_id"])
        elif e.type == "balance_zero":
            zero_seen = True
        elif e.type == "balance_low":
            low_seen = True
        elif e.type == "pool_threshold":
            state.thresholds.append(f"{f['month']}|{f['pool']}|{f['percent']}")
    calls: set[str] = set()
    for c in charges:
        if c["tenant_id"] != tenant.tenant_id or c["call_id"] in calls:
            continue
        calls.add(c["call_id"])
        if state.watermark is None or c["end_time"] > state.watermark:
            state.watermark = c["end_time"]
        for s in c["segments"]:
            if s["pool"] is not None and s["minutes"]:
                dim = "dom" if s["pool"] == ZONE_A_POOL or c["domestic"] else "intl"
                key = f"{c['month']}|{s['pool']}|{dim}"
                state.pool_used[key] = state.pool_used.get(key, 0) + s["minutes"]
            if s["bucket"] == BILLABLE:
                state.charged += s["amount"]
                state.deficit += s["deficit"]
            elif s["bucket"] == OVERAGE:
                state.overage += s["amount"]
            for d in s["lots"]:
                drawn[d["lot_id"]] = drawn.get(d["lot_id"], 0) + d["amount"]
    state.deficit -= covered
    unknown = sorted(set(drawn) - set(lots))
    if unknown:
        raise LedgerGap(f"{tenant.tenant_id}: charges draw from lots never funded: {', '.join(unknown[:3])}")
    for lot_id, lot in lots.items():
        remaining = lot.amount - lot.covered - drawn.get(lot_id, 0) - lot.forfeited
        state.lots.append(Lot(lot_id, lot.amount, remaining, lot.purchased_at, lot.expires_at, lot.expired))
    state.lots.sort(key=lambda x: (x.purchased_at, x.lot_id))
    del state.thresholds[:-KEPT_POOL_ALERTS]
    if requested:
        last = max(requested, key=requested.__getitem__)
        state.recharge_seq = requested[last]
        state.recharge_in_flight = None if last in closed else last
    ar = tenant.auto_recharge
    # Below the trigger once a balance_low was raised (every change of the balance that
    # lands below it raises one): a tenant whose balance never moved is not below it.
    state.below_trigger = ar is not None and state.balance < ar.trigger and low_seen
    # Every fall to or below zero raises balance_zero and every rise above it restores: the
    # zero state is on exactly when the balance is at or below zero and it was ever raised.
    state.zero_raised = state.balance <= 0 and zero_seen
    return state


def differences(stored: TenantState | None, rebuilt: TenantState) -> list[str]:
    """What differs between a stored state and the one rebuilt from the ledger, as short
    sentences (empty when they agree). A used-up lot's expiry flag is not compared."""
    if stored is None:
        return [] if rebuilt == TenantState() else ["no state stored"]
    out = []
    for name in (
        "deficit",
        "funded",
        "charged",
        "expired",
        "overage",
        "recharge_seq",
        "recharge_in_flight",
        "watermark",
        "zero_raised",
    ):
        a, b = getattr(stored, name), getattr(rebuilt, name)
        if a != b:
            out.append(f"{name} {a} stored, {b} in the ledger")
    if stored.balance != rebuilt.balance:
        out.append(f"balance {stored.balance} stored, {rebuilt.balance} in the ledger")
    mine = {lot.lot_id: (lot.remaining, lot.expired and lot.remaining != 0) for lot in stored.lots}
    theirs = {lot.lot_id: (lot.remaining, lot.expired and lot.remaining != 0) for lot in rebuilt.lots}
    for lot_id in sorted(mine.keys() | theirs.keys()):
        if mine.get(lot_id) != theirs.get(lot_id):
            out.append(f"lot {lot_id}: {mine.get(lot_id)} stored, {theirs.get(lot_id)} in the ledger")
    for key in sorted(stored.pool_used.keys() | rebuilt.pool_used.keys()):
        if stored.pool_used.get(key, 0) != rebuilt.pool_used.get(key, 0):
            out.append(
                f"pool {key}: {stored.pool_used.get(key, 0)} min stored, {rebuilt.pool_used.get(key, 0)} in the ledger"
            )
    if stored.thresholds != rebuilt.thresholds:
        out.append(f"pool alerts {stored.thresholds} stored, {rebuilt.thresholds} in the ledger")
    return out
