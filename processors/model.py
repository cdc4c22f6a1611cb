"""Plain frozen records of the charging domain. Money is integer micro-units."""

from __future__ import annotations

from dataclasses import field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .frozen import frozen

if TYPE_CHECKING:
    from .rating import Tariff

# Call types of the PSTN usage report.
INBOUND = frozenset({"user_in", "conf_in", "unassigned_in", "ucap_in"})
USER_OUTBOUND = frozenset({"user_out", "user_out_conf", "user_out_transfer", "user_out_forwarding", "ucap_out"})
CONF_OUTBOUND = frozenset({"conf_out"})
CALL_TYPES = INBOUND | USER_OUTBOUND | CONF_OUTBOUND

CHANNELS = frozenset({"direct", "mca", "nce", "csp"})
POSTPAID_CHANNELS = frozenset({"mca", "nce"})

# Buckets a segment draws from, and the call classifications built from them.
INCLUDED = "included"
POOLED_ZONE_A = "pooled_zone_a"
BILLABLE = "billable"
OVERAGE = "overage"
NOT_CHARGED = "not_charged"
FREE_UNRATED = "free_unrated"
MIXED = "mixed"

CREDITS_LICENCE = "MCOPSTNPP"
AUDIO_CONF = "MCOMEETADD"
AUDIO_CONF_PPM = "MCOMEETACPEA"


@frozen
class Cdr:
    call_id: str  # the usage row id (GUID): the idempotency key
    tenant_id: str
    user_id: str
    call_type: str
    caller_number: str
    callee_number: str
    start: datetime
    end: datetime
    duration_s: int
    usage_country: str | None = None
    conference_id: str | None = None
    licence_capability: str | None = None
    routing: str = "calling_plan"  # or "direct_routing"
    graph_call_id: str | None = None  # Microsoft's callId: NOT unique
    user_principal_name: str | None = None
    user_display_name: str | None = None


@frozen
class User:
    user_id: str
    usage_country: str
    licences: frozenset[str]
    dialout_policy: str | None = None
    email: str | None = None
    roles: frozenset[str] = frozenset()
    display_name: str | None = None


@frozen
class AutoRecharge:
    enabled: bool
    amount: int
    trigger: int


@frozen
class Funding:
    lot_id: str
    amount: int
    purchased_at: datetime


@frozen
class Tenant:
    tenant_id: str
    country: str
    currency: str
    channel: str
    users: dict[str, User]
    time_zone: str | None = None
    auto_recharge: AutoRecharge | None = None
    funding: tuple[Funding, ...] = ()
    payment_method: str | None = None  # the gateway's token for auto-recharge


@frozen
class LotDraw:
    lot_id: str
    amount: int


@frozen
class Segment:
    bucket: str
    minutes: int
    amount: int = 0
    pool: str | None = None
    rate: str | None = None  # the tariff id the amount was priced with
    lots: tuple[LotDraw, ...] = ()
    deficit: int = 0  # part of the amount taken below zero (no lot behind it)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "minutes": self.minutes,
            "amount": self.amount,
            "pool": self.pool,
            "rate": self.rate,
            "lots": [{"lot_id": d.lot_id, "amount": d.amount} for d in self.lots],
            "deficit": self.deficit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Segment:
        return cls(
            d["bucket"],
            d["minutes"],
            d["amount"],
            d.get("pool"),
            d.get("rate"),
            tuple(LotDraw(x["lot_id"], x["amount"]) for x in d.get("lots") or ()),
            d.get("deficit", 0),
        )


@frozen
class Charge:
    """What one call cost and where each minute and micro-unit came from."""

    call_id: str
    tenant_id: str
    user_id: str
    call_type: str
    classification: str
    billed_seconds: int
    billed_minutes: int
    segments: tuple[Segment, ...]
    amount: int  # taken from credits or billed as overage
    connection_fee: int
    capability: str
    balance_after: int
    currency: str
    start: datetime
    end: datetime
    duration_s: int
    destination_country: str | None
    number_type: str | None
    domestic: bool | None
    flags: tuple[str, ...] = ()
    month: str = ""
    # what the usage report shows of the call, as the CDR said it
    graph_call_id: str | None = None
    conference_id: str | None = None
    usage_country: str | None = None
    user_principal_name: str | None = None
    user_display_name: str | None = None
    caller_number: str | None = None
    callee_number: str | None = None
    # how it was priced: the tariff (None when none matched) and the rate card's version
    tariff: Tariff | None = None
    rate_card: str | None = None


@frozen
class Event:
    """A balance or pool event (recharge_requested, balance_zero, credits_expired, ...).

    event_id is deterministic (derived from what caused it) so that a replay yields the
    same id and downstream consumers can deduplicate.
    """

    event_id: str
    type: str
    tenant_id: str
    at: datetime
    balance: int
    fields: tuple[tuple[str, Any], ...] = field(default=())

    def field_dict(self) -> dict[str, Any]:
        return dict(self.fields)
