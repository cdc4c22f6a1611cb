"""Turn plain dicts (JSON tenants files, CDR JSON lines, Microsoft Graph pstnCallLogRow)
into domain records, or a Rejected value with a reason. Never raises on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from phonenumbers import SUPPORTED_REGIONS

from . import tables
from .calendar import zone
from .errors import DomainError
from .model import (
    CALL_TYPES,
    CHANNELS,
    DIRECT_ROUTING_CALL_TYPES,
    POSTPAID_CHANNELS,
    AutoRecharge,
    Cdr,
    Funding,
    Tenant,
    User,
)
from .money import MAX_AMOUNT, MAX_BALANCE, MoneyError, format_money, parse_money

MAX_DURATION_S = 7 * 24 * 3600  # Teams ends calls after 24 h; a week is absurd for sure.
# `duration_s` may differ from end - start by this much (rounding, clock of the platform);
# more and the facts contradict each other: which one to bill is unknown (our rule).
DURATION_TOLERANCE_S = 30
# A dialled or calling number: an optional '+' and digits (E.164 is at most 15; short codes
# and carrier prefixes a few more). Letters (vanity numbers written out), spaces or
# punctuation are refused: phonenumbers would silently turn "+1212ABC9994" into a number.
# `number_text` says the same as this pattern, without a regular expression per number.
NUMBER_TEXT = re.compile(r"\+?[0-9]{1,20}\Z")


# A GUID (Entra tenant and object ids, Graph userId): 8-4-4-4-12 hex digits. A GUID compares
# case-insensitively; one export writes it in upper case, another in lower.
GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\Z")


def canonical_id(value: str) -> str:
    """The one stored form of a tenant or user id (our rule): a GUID in lower case, any other
    id as written. Every path an id arrives by (tenants files, CDR JSON and Avro, Graph rows,
    `--tenant-id`, API paths, token tenant lists) goes through here, so the same GUID in
    another letter case is the same tenant or user. Cheap on the hot path: only a
    36-character id with an upper-case letter is matched."""
    if len(value) != 36 or value.islower() or not GUID.match(value):
        return value
    return value.lower()


def folded_twin(ids: Iterable[str]) -> tuple[str, str] | None:
    """Two ids of `ids` that differ only by letter case (None when there are none): a
    configuration cannot tell which of the two a CDR written in either case means."""
    seen: dict[str, str] = {}
    for x in ids:
        twin = seen.setdefault(x.casefold(), x)
        if twin != x:
            return twin, x
    return None


def number_text(number: str) -> bool:
    """`NUMBER_TEXT.match(number)`: an optional "+", then 1 to 20 ASCII digits."""
    digits = number[1:] if number.startswith("+") else number
    return 1 <= len(digits) <= 20 and digits.isascii() and digits.isdigit()


class DeadLetterReason(StrEnum):
    """Why a CDR went to the dead-letter topic: an operator contract (the
    `callcharge_dead_letters_total{reason}` label, `dlq redrive --reason`, the alerts).
    A value is its own wire form: `DeadLetterReason.DUPLICATE == "duplicate"`."""

    UNDECODABLE = "undecodable"  # not Avro / not JSON / not text
    UNKNOWN_SCHEMA = "unknown_schema"  # a fingerprint no schema file has
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    BAD_DURATION = "bad_duration"
    DURATION_MISMATCH = "duration_mismatch"  # duration_s and end - start disagree beyond the tolerance
    FUTURE_START = "future_start"  # the call starts later than now plus the allowed clock skew
    UNKNOWN_TENANT = "unknown_tenant"
    DUPLICATE = "duplicate"  # a call id charged before from another source offset
    TOO_OLD = "too_old"  # older than the dedup window: whether it was charged is unknown
    UNPARSABLE_NUMBER = "unparsable_number"
    STATE_UNREADABLE = "state_unreadable"  # the tenant's stored state cannot be read
    STATE_CONFLICT = "state_conflict"  # the tenant's state kept changing under the worker
    UNPROCESSABLE = "unprocessable"  # a control record (command, event) that kept failing
    # the call's charge would take its tenant's money past the range we keep (processors.money)
    MONEY_OUT_OF_RANGE = "money_out_of_range"
    TENANT_REMOVED = "tenant_removed"  # the tenant was offboarded (`callcharge tenants remove`)
    MASKED_NUMBER = "masked_number"  # a number masked ('+12345678***') where charging needs its digits


@dataclass(frozen=True)
class Rejected:
    reason: DeadLetterReason  # the dead-letter metric label
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):  # RFC 3339 allows either case
            text = text[:-1] + "+00:00"
        # Graph sends 7 fractional digits; fromisoformat takes at most 6.
        if "." in text:
            head, _, tail = text.partition(".")
            digits = ""
            rest = tail
            while rest and rest[0].isdigit():
                digits, rest = digits + rest[0], rest[1:]
            text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
        dt = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a time: {value!r}")
    if dt.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return dt.astimezone(UTC)


def _text(d: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        if required:
            raise KeyError(key)
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def is_graph_row(d: Mapping[str, Any]) -> bool:
    return "callType" in d or "startDateTime" in d


# Fields only a Graph directRoutingLogRow carries (getDirectRoutingCalls): such a call ran
# over the customer's own SBC and is never charged to Communications Credits.
DIRECT_ROUTING_FIELDS = frozenset({"trunkFullyQualifiedDomainName", "finalSipCode", "mediaBypassEnabled"})


def is_direct_routing_row(d: Mapping[str, Any]) -> bool:
    return not DIRECT_ROUTING_FIELDS.isdisjoint(d)


def cdr_from_dict(d: Mapping[str, Any], duration_tolerance_s: int = DURATION_TOLERANCE_S) -> Cdr | Rejected:
    """A CDR from its JSON form (schema field names) or a Graph pstnCallLogRow + tenantId."""
    if not isinstance(d, Mapping):
        return Rejected(DeadLetterReason.INVALID_FIELD, "a CDR must be a JSON object")
    try:
        cdr = _from_graph(d) if is_graph_row(d) else _from_json(d)
    except KeyError as exc:
        return Rejected(DeadLetterReason.MISSING_FIELD, f"missing field {exc.args[0]}")
    except (TypeError, ValueError) as exc:
        return Rejected(DeadLetterReason.INVALID_FIELD, str(exc))
    return check(cdr, duration_tolerance_s)


def cdr_from_record(r: dict[str, Any], duration_tolerance_s: int = DURATION_TOLERANCE_S) -> Cdr | Rejected:
    """A CDR from a decoded record of the cdr schema (the JSON form's field names, values
    already typed: datetimes and ints), checked as every input form is. The charging
    worker's per-CDR path (pipeline.adapters.avro.records.cdr_from_avro)."""
    try:
        # positional, in Cdr's field order (about half the cost of keywords on the hot path;
        # tests/unit/test_avro_compiled.py round-trips every traffic shape)
        cdr = Cdr(
            r["call_id"],
            r["tenant_id"],
            r["user_id"],
            r["call_type"],
            r["caller_number"],
            r["callee_number"],
            r["start_time"],
            r["end_time"],
            r["duration_s"],
            r.get("usage_country"),
            r.get("conference_id"),
            r.get("licence_capability"),
            r.get("routing") or "calling_plan",
            r.get("graph_call_id"),
            r.get("user_principal_name"),
            r.get("user_display_name"),
        )
    except KeyError as exc:
        return Rejected(DeadLetterReason.MISSING_FIELD, f"missing field {exc.args[0]}")
    return checked_record(cdr, duration_tolerance_s)


def checked_record(cdr: Cdr, duration_tolerance_s: int = DURATION_TOLERANCE_S) -> Cdr | Rejected:
    """The checks of a CDR built from a decoded record (`cdr_from_record`, or the compiled
    Avro reader that builds the `Cdr` straight from the bytes)."""
    if not cdr.call_id or not cdr.tenant_id:
        return Rejected(DeadLetterReason.MISSING_FIELD, "empty call_id or tenant_id")
    return check(cdr, duration_tolerance_s)


def check(cdr: Cdr, duration_tolerance_s: int = DURATION_TOLERANCE_S) -> Cdr | Rejected:
    """Field-level validation shared by every input form (JSON and Avro): each field alone,
    then the facts against each other."""
    if cdr.call_type not in CALL_TYPES:
        return Rejected(DeadLetterReason.INVALID_FIELD, f"unknown call type {cdr.call_type!r}")
    if cdr.duration_s < 0:
        return Rejected(DeadLetterReason.BAD_DURATION, f"negative duration {cdr.duration_s}")
    if cdr.duration_s > MAX_DURATION_S:
        return Rejected(DeadLetterReason.BAD_DURATION, f"absurd duration {cdr.duration_s} s")
    if cdr.end < cdr.start:
        return Rejected(DeadLetterReason.BAD_DURATION, "call ends before it starts")
    if cdr.routing not in ("calling_plan", "direct_routing"):
        return Rejected(DeadLetterReason.INVALID_FIELD, f"unknown routing {cdr.routing!r}")
    span = (cdr.end - cdr.start).total_seconds()
    if abs(span - cdr.duration_s) > duration_tolerance_s:
        return Rejected(
            DeadLetterReason.DURATION_MISMATCH,
            f"duration_s {cdr.duration_s} but the call ran {span:.0f} s from start to end "
            f"(tolerance {duration_tolerance_s} s)",
        )
    callee, caller = cdr.callee_number, cdr.caller_number
    if callee and not number_text(callee):
        if not masked_number(callee):
            return _not_a_number("callee", callee)
        if cdr.routing != "direct_routing" and cdr.call_type not in DIRECT_ROUTING_CALL_TYPES:
            # the dialled number decides the tariff (outbound) or whether it is our
            # toll-free number (inbound): its digits are needed
            return Rejected(
                DeadLetterReason.MASKED_NUMBER,
                f"callee number {callee[:40]!r} is masked: charging a {cdr.call_type} call needs its digits "
                "(export the CDR unmasked)",
            )
    if caller and caller.startswith("+") and not number_text(caller) and not masked_number(caller):
        return _not_a_number("caller", caller)
    tid, uid = canonical_id(cdr.tenant_id), canonical_id(cdr.user_id)
    if tid is not cdr.tenant_id or uid is not cdr.user_id:
        return _with_ids(cdr, tid, uid)
    return cdr


def _with_ids(cdr: Cdr, tenant_id: str, user_id: str) -> Cdr:
    """`cdr` with its tenant and user ids in their canonical form."""
    return Cdr(
        cdr.call_id,
        tenant_id,
        user_id,
        cdr.call_type,
        cdr.caller_number,
        cdr.callee_number,
        cdr.start,
        cdr.end,
        cdr.duration_s,
        cdr.usage_country,
        cdr.conference_id,
        cdr.licence_capability,
        cdr.routing,
        cdr.graph_call_id,
        cdr.user_principal_name,
        cdr.user_display_name,
    )


def masked_number(number: str) -> bool:
    """A number as Microsoft masks it in reports and Direct Routing rows ("+12345678***"):
    an optional "+", at least one digit, then one or more '*' to the end. Accepted where
    charging does not need the hidden digits (a caller; a Direct Routing row)."""
    stars = len(number) - len(number.rstrip("*"))
    return stars > 0 and number_text(number[: len(number) - stars]) and len(number) <= 24


def _not_a_number(name: str, number: str) -> Rejected:
    return Rejected(
        DeadLetterReason.UNPARSABLE_NUMBER,
        f"{name} number {number[:40]!r} has characters other than '+' and digits",
    )


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer")
    return value


def _from_json(d: Mapping[str, Any]) -> Cdr:
    return Cdr(
        call_id=_text(d, "call_id") or "",
        tenant_id=_text(d, "tenant_id") or "",
        user_id=_text(d, "user_id", False) or "",  # empty: a tenant-level call (resource account)
        call_type=_text(d, "call_type") or "",
        caller_number=_text(d, "caller_number", False) or "",
        callee_number=_text(d, "callee_number", False) or "",
        start=parse_time(d["start_time"]),
        end=parse_time(d["end_time"]),
        duration_s=_int(d["duration_s"], "duration_s"),
        usage_country=_text(d, "usage_country", False),
        conference_id=_text(d, "conference_id", False),
        licence_capability=_text(d, "licence_capability", False),
        routing=_text(d, "routing", False) or "calling_plan",
        graph_call_id=_text(d, "graph_call_id", False),
        user_principal_name=_text(d, "user_principal_name", False),
        user_display_name=_text(d, "user_display_name", False),
    )


def _from_graph(d: Mapping[str, Any]) -> Cdr:
    tenant = _text(d, "tenantId", False) or _text(d, "tenant_id", False)
    if tenant is None:
        raise KeyError("tenantId")
    return Cdr(
        call_id=_text(d, "id") or "",
        tenant_id=tenant,
        # null for bot call types (ucap_in, ucap_out) and calls to service numbers: the
        # call is the tenant's, charged with the user empty
        user_id=_text(d, "userId", False) or "",
        call_type=_text(d, "callType") or "",
        caller_number=_text(d, "callerNumber", False) or "",
        callee_number=_text(d, "calleeNumber", False) or "",
        start=parse_time(d["startDateTime"]),
        end=parse_time(d["endDateTime"]),
        duration_s=_int(d["duration"], "duration"),
        usage_country=_text(d, "usageCountryCode", False),
        conference_id=_text(d, "conferenceId", False),
        licence_capability=_text(d, "licenseCapability", False),
        routing=_text(d, "routing", False) or ("direct_routing" if is_direct_routing_row(d) else "calling_plan"),
        graph_call_id=_text(d, "callId", False),
        user_principal_name=_text(d, "userPrincipalName", False),
        user_display_name=_text(d, "userDisplayName", False),
    )


class TenantError(DomainError):
    """A tenant entry that cannot be used; the message names the tenant and field."""


# Tenant ids: letters, digits, '.', '_' and '-', starting with a letter or digit, at most
# 64 characters. Microsoft tenant ids are GUIDs; the alphabet keeps every Redis key of one
# tenant apart from every other tenant's whatever the call id (no '}' or ':' in a tenant id)
# and every id printable in logs, file names and URLs.
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def check_tenant_id(tid: Any) -> str:
    """`tid` in its canonical form (`canonical_id`) when it is a valid tenant id;
    TenantError naming the rule otherwise."""
    if not isinstance(tid, str) or not tid:
        raise TenantError("tenant without tenant_id")
    if not TENANT_ID.match(tid):
        raise TenantError(
            f"tenant id {tid[:80]!r} is not valid: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (a Microsoft tenant id is a GUID)"
        )
    return canonical_id(tid)


def tenant_from_dict(d: Mapping[str, Any]) -> Tenant:
    tid = check_tenant_id(d.get("tenant_id") if isinstance(d, Mapping) else None)
    try:
        return _tenant(tid, d)
    except TenantError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, MoneyError) as exc:
        raise TenantError(f"tenant {tid}: {type(exc).__name__}: {exc}") from None


def licences_of(tid: str, user_id: str, names: Any) -> frozenset[str]:
    """Capability codes of a user's licence list: codes as themselves, Microsoft SKU part
    numbers by data/sku_service_plans.csv (E5 with Audio Conferencing -> MCOMEETADD,
    MCOPSTNC -> MCOPSTNPP). A name in neither table is refused: ignoring it would charge
    the tenant for minutes its licences include."""
    if not isinstance(names, list):
        raise TenantError(f"tenant {tid}: user {user_id}: licences must be a list")
    out: set[str] = set()
    for name in names:
        caps = tables.capabilities_of(name) if isinstance(name, str) else None
        if caps is None:
            raise TenantError(f"tenant {tid}: user {user_id}: unknown licence {name!r} (not a capability code or SKU)")
        out |= caps
    return frozenset(out)


CURRENCY = re.compile(r"[A-Z]{3}")


def first_repeated(ids: Iterable[str]) -> str | None:
    """The first id met a second time (None when each is met once): a configuration that
    names one thing twice cannot tell which of the two is meant."""
    seen: set[str] = set()
    for x in ids:
        if x in seen:
            return x
        seen.add(x)
    return None


def _country(tid: str, what: str, value: Any) -> str:
    """An ISO 3166 alpha-2 country that phonenumbers knows (numbers are analysed for it)."""
    code = value.upper() if isinstance(value, str) else value
    if code not in SUPPORTED_REGIONS:
        raise TenantError(f"tenant {tid}: {what} {value!r} is not a country code (ISO 3166 alpha-2, e.g. US)")
    return str(code)


def _tenant(tid: str, d: Mapping[str, Any]) -> Tenant:
    country = _country(tid, "country", d["country"])
    currency = d["currency"].upper() if isinstance(d["currency"], str) else d["currency"]
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise TenantError(f"tenant {tid}: currency {d['currency']!r} is not an ISO 4217 code (e.g. USD)")
    channel = d["channel"]
    if channel not in CHANNELS:
        raise TenantError(f"tenant {tid}: channel must be one of {sorted(CHANNELS)}")
    tz = d.get("time_zone")
    if tz:
        try:
            zone(tz)
        except Exception as exc:  # ZoneInfoNotFoundError and friends
            raise TenantError(f"tenant {tid}: unknown time zone {tz!r}") from exc
    users = {}
    listed = d.get("users", [])
    if not isinstance(listed, list):
        raise TenantError(f"tenant {tid}: users must be a list")
    for u in listed:
        if not isinstance(u.get("user_id"), str) or not u["user_id"]:
            raise TenantError(f"tenant {tid}: a user without user_id")
        uid = canonical_id(u["user_id"])
        policy = u.get("dialout_policy")
        if policy is not None and policy not in tables.dialout_policies():
            raise TenantError(f"tenant {tid}: user {u['user_id']}: unknown dial-out policy {policy!r}")
        if uid in users:  # which of the two is meant cannot be told
            raise TenantError(
                f"tenant {tid}: user {u['user_id']} is listed twice (user ids compare case-insensitively)"
            )
        user = User(
            user_id=uid,
            usage_country=_country(tid, f"user {u['user_id']}: usage_country", u["usage_country"]),
            licences=licences_of(tid, u["user_id"], u.get("licences", [])),
            dialout_policy=policy,
            email=u.get("email"),
            roles=frozenset(u.get("roles", [])),
            display_name=u.get("display_name"),
        )
        users[user.user_id] = user
    twins = folded_twin(users)
    if twins is not None:
        raise TenantError(f"tenant {tid}: users {twins[0]!r} and {twins[1]!r} differ only by letter case")
    ar = None
    if d.get("auto_recharge"):
        a = d["auto_recharge"]
        enabled = a.get("enabled", False)
        if not isinstance(enabled, bool):  # "false" is a string, and a true one
            raise TenantError(f"tenant {tid}: auto_recharge.enabled must be true or false (a JSON boolean)")
        ar = AutoRecharge(enabled, parse_money(a["amount"]), parse_money(a["trigger"]))
        if ar.amount > MAX_AMOUNT or ar.trigger > MAX_BALANCE:
            raise TenantError(f"tenant {tid}: auto-recharge amount above the maximum of {format_money(MAX_AMOUNT)}")
        if ar.enabled and channel in POSTPAID_CHANNELS:
            raise TenantError(f"tenant {tid}: auto-recharge must be off for {channel} billing")
        if ar.amount <= 0 or ar.trigger < 0:
            raise TenantError(f"tenant {tid}: auto-recharge amount must be positive")
    funding = tuple(
        Funding(f["lot_id"], parse_money(f["amount"]), parse_time(f["purchased_at"])) for f in d.get("funding", [])
    )
    twice = first_repeated(f.lot_id for f in funding)
    if twice is not None:  # a lot id names one purchase: two would be credited under one id
        raise TenantError(f"tenant {tid}: funding lot {twice!r} is listed twice")
    if any(f.amount <= 0 for f in funding):
        raise TenantError(f"tenant {tid}: funding amounts must be positive")
    if any(f.amount > MAX_AMOUNT for f in funding) or sum(f.amount for f in funding) > MAX_BALANCE:
        raise TenantError(f"tenant {tid}: funding above the maximum of {format_money(MAX_AMOUNT)} per lot")
    return Tenant(
        tenant_id=tid,
        country=country,
        currency=currency,
        channel=channel,
        users=users,
        time_zone=tz,
        auto_recharge=ar,
        funding=funding,
        payment_method=d.get("payment_method"),
    )
