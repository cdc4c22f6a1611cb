"""Domain records <-> Avro record dicts. One place for every field mapping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from processors.engine import MONEY_FIELDS
from processors.inputs import (
    Rejected,
    canonical_id,
    cdr_from_record,
    check_tenant_id,
    checked_record,
    licences_of,
    tenant_from_dict,
)
from processors.model import AutoRecharge, Cdr, Charge, Event, Funding, Tenant, User
from processors.money import format_money

# A decoded cdr record (the schema's field names, typed values) to a checked Cdr: the pure
# core does it (compiled with the rest of it), the same mapping as the JSON form's.
cdr_from_avro = cdr_from_record

# The newest cdr schema read straight into a Cdr (fast.py's `read_cdr_object`, generated
# with `cdr_build`): Cdr's arguments in order, each the schema field of that name, but for
# these; a missing routing is a calling plan's, as `cdr_from_record` has it.
CDR_CLASS = "processors.model.Cdr"
_CDR_ARGS = (
    "call_id",
    "tenant_id",
    "user_id",
    "call_type",
    "caller_number",
    "callee_number",
    "start_time",
    "end_time",
    "duration_s",
    "usage_country",
    "conference_id",
    "licence_capability",
    "routing",
    "graph_call_id",
    "user_principal_name",
    "user_display_name",
)


def cdr_build(record: str, fields: dict[str, str]) -> str | None:
    """The expression that builds the Cdr from the locals of a cdr record's fields; None
    (a dict) for any other record or a schema without every field."""
    if record != "Cdr" or not set(_CDR_ARGS) <= set(fields):
        return None
    args = [f"{fields[a]} or 'calling_plan'" if a == "routing" else fields[a] for a in _CDR_ARGS]
    return f"Cdr({', '.join(args)})"


def cdr_decoder(codec: Any, duration_tolerance_s: int) -> Callable[[bytes], Cdr | Rejected]:
    """`decode(message) -> Cdr | Rejected`: `cdr_from_avro(codec.decoder("cdr")(message))`
    with the same answer, straight from the bytes where fast.py has a `Cdr` reader for
    the newest schema (no record dict in between). Bad bytes raise the codec's error."""
    plain = codec.decoder("cdr")

    def from_record(data: bytes) -> Cdr | Rejected:
        return cdr_from_record(plain(data), duration_tolerance_s)

    fast = codec.object_reader("cdr")
    if fast is None:
        return from_record
    header, read = fast
    start = len(header)

    def decode(data: bytes) -> Cdr | Rejected:  # one call per CDR: the worker's hot path
        if type(data) is bytes and data[:start] == header:
            try:
                cdr, end = read(data, start)
            except Exception:  # the record path raises the error that says what broke
                return from_record(data)
            if end == len(data):
                return checked_record(cdr, duration_tolerance_s)
        return from_record(data)

    return decode


def cdr_to_avro(cdr: Cdr) -> dict[str, Any]:
    return {
        "call_id": cdr.call_id,
        "tenant_id": cdr.tenant_id,
        "user_id": cdr.user_id,
        "call_type": cdr.call_type,
        "caller_number": cdr.caller_number,
        "callee_number": cdr.callee_number,
        "start_time": cdr.start,
        "end_time": cdr.end,
        "duration_s": cdr.duration_s,
        "usage_country": cdr.usage_country,
        "conference_id": cdr.conference_id,
        "licence_capability": cdr.licence_capability,
        "graph_call_id": cdr.graph_call_id,
        "user_principal_name": cdr.user_principal_name,
        "user_display_name": cdr.user_display_name,
        "routing": cdr.routing,
    }


def charge_to_avro(c: Charge, partition: int, offset: int, charged_at: datetime) -> dict[str, Any]:
    return {
        "call_id": c.call_id,
        "tenant_id": c.tenant_id,
        "user_id": c.user_id,
        "call_type": c.call_type,
        "classification": c.classification,
        "billed_seconds": c.billed_seconds,
        "billed_minutes": c.billed_minutes,
        "segments": [
            {
                "bucket": s.bucket,
                "minutes": s.minutes,
                "amount": s.amount,
                "pool": s.pool,
                "rate": s.rate,
                "lots": [{"lot_id": d.lot_id, "amount": d.amount} for d in s.lots],
                "deficit": s.deficit,
            }
            for s in c.segments
        ],
        "amount": c.amount,
        "connection_fee": c.connection_fee,
        "currency": c.currency,
        "capability": c.capability,
        "balance_after": c.balance_after,
        "start_time": c.start,
        "end_time": c.end,
        "duration_s": c.duration_s,
        "destination_country": c.destination_country,
        "number_type": c.number_type,
        "domestic": c.domestic,
        "flags": list(c.flags),
        "month": c.month,
        "source_partition": partition,
        "source_offset": offset,
        "charged_at": charged_at,
        "graph_call_id": c.graph_call_id,
        "conference_id": c.conference_id,
        "usage_country": c.usage_country,
        "user_principal_name": c.user_principal_name,
        "user_display_name": c.user_display_name,
        "caller_number": c.caller_number,
        "callee_number": c.callee_number,
        "tariff": None
        if c.tariff is None
        else {
            "rate_id": c.tariff.rate_id,
            "price_per_minute": c.tariff.price_per_minute,
            "connection_fee": c.tariff.connection_fee,
            "first_increment": c.tariff.first_increment,
            "next_increment": c.tariff.next_increment,
        },
        "rate_card": c.rate_card,
    }


# charge.v2 read straight off a Charge (Codec.object_encoder): every field is the attribute
# of the same name, but for these; the source offset and the batch's time are arguments.
CHARGE_EXTRA = ("partition", "offset", "charged_at")
_CHARGE_FIELDS = {
    "start_time": "r.start",
    "end_time": "r.end",
    "source_partition": "partition",
    "source_offset": "offset",
    "charged_at": "charged_at",
}


# The charge's strings that come from a small vocabulary (a tenant's users, lots and
# plans, the classifications, countries, months, rate ids): the writer encodes each
# distinct value once (`prims.write_vocab`). Call ids, conference ids and numbers are
# a long tail and are encoded every time.
CHARGE_VOCABULARY = frozenset(
    {
        "tenant_id",
        "user_id",
        "call_type",
        "classification",
        "bucket",
        "pool",
        "rate",
        "lot_id",
        "currency",
        "capability",
        "destination_country",
        "number_type",
        "flags",
        "month",
        "usage_country",
        "user_principal_name",
        "user_display_name",
        "rate_id",
        "rate_card",
    }
)


# The class of each record of charge.v2 as the object writer meets it: avro_fast's
# `write_charge_object` declares them, so where it is compiled with the core (one mypyc
# group) it reads their attributes directly instead of looking each one up by name.
CHARGE_CLASSES = {
    "Charge": "processors.model.Charge",
    "Segment": "processors.model.Segment",
    "LotDraw": "processors.model.LotDraw",
    "Tariff": "processors.rating.Tariff",
}


def charge_access(record: str, field: str, value: str) -> str:
    if record == "Charge" and field in _CHARGE_FIELDS:
        return _CHARGE_FIELDS[field]
    return f"{value}.{field}"


def charge_encoder(codec: Any) -> Callable[[Charge, int, int, datetime], bytes]:
    """`encode(charge, partition, offset, charged_at)`: the bytes of
    `codec.encode("charge", charge_to_avro(...))` without building the dict."""
    fn: Callable[[Charge, int, int, datetime], bytes] = codec.object_encoder(
        "charge", charge_access, CHARGE_EXTRA, charge_to_avro, fast=True, vocabulary=CHARGE_VOCABULARY
    )
    return fn


def event_to_avro(e: Event, currency: str) -> dict[str, Any]:
    fields = e.field_dict()
    amount = fields.pop("amount", None)
    lot_id = fields.pop("lot_id", None)
    request_id = fields.pop("request_id", None)
    attributes = {k: format_money(v) if k in MONEY_FIELDS else str(v) for k, v in fields.items()}
    return {
        "event_id": e.event_id,
        "type": e.type,
        "tenant_id": e.tenant_id,
        "at": e.at,
        "balance": e.balance,
        "currency": currency,
        "amount": amount,
        "lot_id": lot_id,
        "request_id": request_id,
        "attributes": attributes,
    }


def event_from_avro(r: dict[str, Any]) -> Event:
    """A decoded balance_event back to the domain Event (attributes stay strings)."""
    fields: dict[str, Any] = dict(r.get("attributes") or {})
    for key in ("amount", "lot_id", "request_id"):
        if r.get(key) is not None:
            fields[key] = r[key]
    return Event(r["event_id"], r["type"], r["tenant_id"], r["at"], r["balance"], tuple(fields.items()))


def tenant_to_avro(d: dict[str, Any], updated_at: datetime) -> dict[str, Any]:
    """A tenants-file entry (validated) to its tenant_config record."""
    return tenant_record(tenant_from_dict(d), updated_at)


def tenant_record(t: Tenant, updated_at: datetime, inline_users: bool = True) -> dict[str, Any]:
    """A tenant's configuration as its tenant_config record (the newest version); with
    `inline_users=False` the users are left to their own tenant_user records."""
    return {
        "tenant_id": t.tenant_id,
        "country": t.country,
        "currency": t.currency,
        "channel": t.channel,
        "time_zone": t.time_zone,
        "users": [user_to_avro(u) for u in t.users.values()] if inline_users else [],
        "auto_recharge": None
        if t.auto_recharge is None
        else {"enabled": t.auto_recharge.enabled, "amount": t.auto_recharge.amount, "trigger": t.auto_recharge.trigger},
        "funding": [{"lot_id": f.lot_id, "amount": f.amount, "purchased_at": f.purchased_at} for f in t.funding],
        "updated_at": updated_at,
        "payment_method": t.payment_method,
        "removed_at": t.removed_at,
    }


def user_to_avro(u: User) -> dict[str, Any]:
    return {
        "user_id": u.user_id,
        "usage_country": u.usage_country,
        "licences": sorted(u.licences),
        "dialout_policy": u.dialout_policy,
        "email": u.email,
        "roles": sorted(u.roles),
        "display_name": u.display_name,
    }


def user_record(tenant_id: str, u: User, updated_at: datetime) -> dict[str, Any]:
    """One user as its tenant_user record (key `user_key(tenant_id, user_id)`)."""
    return {"tenant_id": tenant_id, **user_to_avro(u), "updated_at": updated_at}


def user_key(tenant_id: str, user_id: str) -> bytes:
    """The compaction key of a tenant_user record: a tenant id has no '/' (the tenant-id
    rule), so the key names one (tenant, user) pair."""
    return f"{tenant_id}/{user_id}".encode()


_LICENCES: dict[tuple[str, ...], frozenset[str]] = {}  # one frozenset per licence list, shared


def user_from_avro(tenant_id: str, u: dict[str, Any]) -> User:
    """A user of a tenant_config's users or a tenant_user record; TenantError for a licence
    we do not know. Licence and role sets are shared between users that have the same."""
    names = tuple(u["licences"])
    licences = _LICENCES.get(names)
    if licences is None:
        licences = licences_of(tenant_id, u["user_id"], list(names))
        if len(_LICENCES) < 10_000:
            _LICENCES[names] = licences
    roles = u.get("roles") or ()
    uid = canonical_id(u["user_id"])
    return User(
        uid,
        u["usage_country"],
        licences,
        u.get("dialout_policy"),
        u.get("email"),
        _ROLES.setdefault(tuple(roles), frozenset(roles)) if len(_ROLES) < 10_000 else frozenset(roles),
        u.get("display_name"),
    )


_ROLES: dict[tuple[str, ...], frozenset[str]] = {}


def tenant_from_avro(r: dict[str, Any], users: dict[str, User] | None = None) -> Tenant:
    """A tenant_config record as a Tenant, with `users` (from tenant_user records) beside
    those inline; TenantError for an id outside the tenant-id rule (a record another system
    put on the topic)."""
    ar = r.get("auto_recharge")
    tid = check_tenant_id(r["tenant_id"])
    inline = {u.user_id: u for u in (user_from_avro(tid, x) for x in r["users"])}
    return Tenant(
        tenant_id=tid,
        country=r["country"],
        currency=r["currency"],
        channel=r["channel"],
        time_zone=r.get("time_zone"),
        users={**inline, **users} if users else inline,
        auto_recharge=None if ar is None else AutoRecharge(ar["enabled"], ar["amount"], ar["trigger"]),
        funding=tuple(Funding(f["lot_id"], f["amount"], f["purchased_at"]) for f in r["funding"]),
        payment_method=r.get("payment_method"),
        removed_at=r.get("removed_at"),
    )


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    detail: str,
    at: datetime,
) -> dict[str, Any]:
    return {
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "key": key,
        "value": value or b"",
        "reason": reason,
        "detail": detail,
        "at": at,
    }
