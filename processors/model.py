"""Plain frozen records of the charging domain. Money is integer micro-units."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .frozen import written_inits

if TYPE_CHECKING:
    from .rating import Tariff

# Call types of the PSTN usage report.
INBOUND = frozenset({"user_in", "conf_in", "unassigned_in", "ucap_in"})
USER_OUTBOUND = frozenset({"user_out", "user_out_conf", "user_out_transfer", "user_out_forwarding", "ucap_out"})
CONF_OUTBOUND = frozenset({"conf_out"})
# Call types of Direct Routing rows (Graph getDirectRoutingCalls, the Direct Routing usage
# report): the call ran over the customer's own SBC and carrier, which bill it. Never
# charged, always on the ledger as not_charged with the reason direct_routing.
DIRECT_ROUTING_CALL_TYPES = frozenset(
    {
        "ByotIn",
        "ByotOut",
        "ByotInUserForwarding",
        "ByotInUserTransfer",
        "ByotOutUserForwarding",
        "ByotOutUserTransfer",
        "ByotInOverflow",
        "ByotOutOverflow",
    }
)
CALL_TYPES = INBOUND | USER_OUTBOUND | CONF_OUTBOUND | DIRECT_ROUTING_CALL_TYPES

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


@dataclass(frozen=True)
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

    def __init__(
        self,
        call_id: str,
        tenant_id: str,
        user_id: str,
        call_type: str,
        caller_number: str,
        callee_number: str,
        start: datetime,
        end: datetime,
        duration_s: int,
        usage_country: str | None = None,
        conference_id: str | None = None,
        licence_capability: str | None = None,
        routing: str = "calling_plan",
        graph_call_id: str | None = None,
        user_principal_name: str | None = None,
        user_display_name: str | None = None,
    ) -> None:
        self.call_id = call_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.user_id = user_id  # type: ignore[misc]
        self.call_type = call_type  # type: ignore[misc]
        self.caller_number = caller_number  # type: ignore[misc]
        self.callee_number = callee_number  # type: ignore[misc]
        self.start = start  # type: ignore[misc]
        self.end = end  # type: ignore[misc]
        self.duration_s = duration_s  # type: ignore[misc]
        self.usage_country = usage_country  # type: ignore[misc]
        self.conference_id = conference_id  # type: ignore[misc]
        self.licence_capability = licence_capability  # type: ignore[misc]
        self.routing = routing  # type: ignore[misc]
        self.graph_call_id = graph_call_id  # type: ignore[misc]
        self.user_principal_name = user_principal_name  # type: ignore[misc]
        self.user_display_name = user_display_name  # type: ignore[misc]


@dataclass(frozen=True)
class User:
    user_id: str
    usage_country: str
    licences: frozenset[str]
    dialout_policy: str | None = None
    email: str | None = None
    roles: frozenset[str] = frozenset()
    display_name: str | None = None


@dataclass(frozen=True)
class AutoRecharge:
    enabled: bool
    amount: int
    trigger: int


@dataclass(frozen=True)
class Funding:
    lot_id: str
    amount: int
    purchased_at: datetime


@dataclass(frozen=True)
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
    removed_at: datetime | None = None  # offboarded: charging stopped, the ledger kept


@dataclass(frozen=True)
class LotDraw:
    lot_id: str
    amount: int

    def __init__(
        self,
        lot_id: str,
        amount: int,
    ) -> None:
        self.lot_id = lot_id  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]


@dataclass(frozen=True)
class Segment:
    bucket: str
    minutes: int
    amount: int = 0
    pool: str | None = None
    rate: str | None = None  # the tariff id the amount was priced with
    lots: tuple[LotDraw, ...] = ()
    deficit: int = 0  # part of the amount taken below zero (no lot behind it)

    def __init__(
        self,
        bucket: str,
        minutes: int,
        amount: int = 0,
        pool: str | None = None,
        rate: str | None = None,
        lots: tuple[LotDraw, ...] = (),
        deficit: int = 0,
    ) -> None:
        self.bucket = bucket  # type: ignore[misc]
        self.minutes = minutes  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.pool = pool  # type: ignore[misc]
        self.rate = rate  # type: ignore[misc]
        self.lots = lots  # type: ignore[misc]
        self.deficit = deficit  # type: ignore[misc]

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


@dataclass(frozen=True)
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

    def __init__(
        self,
        call_id: str,
        tenant_id: str,
        user_id: str,
        call_type: str,
        classification: str,
        billed_seconds: int,
        billed_minutes: int,
        segments: tuple[Segment, ...],
        amount: int,
        connection_fee: int,
        capability: str,
        balance_after: int,
        currency: str,
        start: datetime,
        end: datetime,
        duration_s: int,
        destination_country: str | None,
        number_type: str | None,
        domestic: bool | None,
        flags: tuple[str, ...] = (),
        month: str = "",
        graph_call_id: str | None = None,
        conference_id: str | None = None,
        usage_country: str | None = None,
        user_principal_name: str | None = None,
        user_display_name: str | None = None,
        caller_number: str | None = None,
        callee_number: str | None = None,
        tariff: Tariff | None = None,
        rate_card: str | None = None,
    ) -> None:
        self.call_id = call_id  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.user_id = user_id  # type: ignore[misc]
        self.call_type = call_type  # type: ignore[misc]
        self.classification = classification  # type: ignore[misc]
        self.billed_seconds = billed_seconds  # type: ignore[misc]
        self.billed_minutes = billed_minutes  # type: ignore[misc]
        self.segments = segments  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.connection_fee = connection_fee  # type: ignore[misc]
        self.capability = capability  # type: ignore[misc]
        self.balance_after = balance_after  # type: ignore[misc]
        self.currency = currency  # type: ignore[misc]
        self.start = start  # type: ignore[misc]
        self.end = end  # type: ignore[misc]
        self.duration_s = duration_s  # type: ignore[misc]
        self.destination_country = destination_country  # type: ignore[misc]
        self.number_type = number_type  # type: ignore[misc]
        self.domestic = domestic  # type: ignore[misc]
        self.flags = flags  # type: ignore[misc]
        self.month = month  # type: ignore[misc]
        self.graph_call_id = graph_call_id  # type: ignore[misc]
        self.conference_id = conference_id  # type: ignore[misc]
        self.usage_country = usage_country  # type: ignore[misc]
        self.user_principal_name = user_principal_name  # type: ignore[misc]
        self.user_display_name = user_display_name  # type: ignore[misc]
        self.caller_number = caller_number  # type: ignore[misc]
        self.callee_number = callee_number  # type: ignore[misc]
        self.tariff = tariff  # type: ignore[misc]
        self.rate_card = rate_card  # type: ignore[misc]


def event_id(tenant_id: str, cause: str, kind: str) -> str:
    """The id of the `kind` event `cause` raised for a tenant: deterministic (a redelivery
    raises the same id) and unique across tenants (our rule: consumers count each
    event_id once, and two tenants' commands, calls and lots may share an id). It starts
    with the tenant id and a colon; a cause that already does (a recharge request id) is
    not prefixed twice."""
    prefix = tenant_id + ":"
    return f"{cause}:{kind}" if cause.startswith(prefix) else f"{prefix}{cause}:{kind}"


@dataclass(frozen=True)
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

    def __init__(
        self,
        event_id: str,
        type: str,
        tenant_id: str,
        at: datetime,
        balance: int,
        fields: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        self.event_id = event_id  # type: ignore[misc]
        self.type = type  # type: ignore[misc]
        self.tenant_id = tenant_id  # type: ignore[misc]
        self.at = at  # type: ignore[misc]
        self.balance = balance  # type: ignore[misc]
        self.fields = fields  # type: ignore[misc]

    def field_dict(self) -> dict[str, Any]:
        return dict(self.fields)


written_inits(Cdr, LotDraw, Segment, Charge, Event)
