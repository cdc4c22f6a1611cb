"""Turn plain dicts (JSON tenants files, CDR JSON lines, Microsoft Graph pstnCallLogRow)
into domain records, or a Rejected value with a reason. Never raises on bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .calendar import zone
from .errors import DomainError
from .frozen import frozen
from .model import CALL_TYPES, CHANNELS, POSTPAID_CHANNELS, AutoRecharge, Cdr, Funding, Tenant, User
from .money import MoneyError, parse_money

MAX_DURATION_S = 7 * 24 * 3600  # Teams ends calls after 24 h; a week is absurd for sure.


class DeadLetterReason(StrEnum):
    """Why a CDR went to the dead-letter topic: an operator contract (the
    `callcharge_dead_letters_total{reason}` label, `dlq redrive --reason`, the alerts).
    A value is its own wire form: `DeadLetterReason.DUPLICATE == "duplicate"`."""

    UNDECODABLE = "undecodable"  # not Avro / not JSON / not text
    UNKNOWN_SCHEMA = "unknown_schema"  # a fingerprint no schema file has
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    BAD_DURATION = "bad_duration"
    UNKNOWN_TENANT = "unknown_tenant"
    DUPLICATE = "duplicate"  # a call id charged before from another source offset
    TOO_OLD = "too_old"  # older than the dedup window: whether it was charged is unknown
    UNPARSABLE_NUMBER = "unparsable_number"
    STATE_UNREADABLE = "state_unreadable"  # the tenant's stored state cannot be read


@frozen
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
        if text.endswith("Z"):
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


def cdr_from_dict(d: Mapping[str, Any]) -> Cdr | Rejected:
    """A CDR from its JSON form (schema field names) or a Graph pstnCallLogRow + tenantId."""
    if not isinstance(d, Mapping):
        return Rejected(DeadLetterReason.INVALID_FIELD, "a CDR must be a JSON object")
    try:
        cdr = _from_graph(d) if is_graph_row(d) else _from_json(d)
    except KeyError as exc:
        return Rejected(DeadLetterReason.MISSING_FIELD, f"missing field {exc.args[0]}")
    except (TypeError, ValueError) as exc:
        return Rejected(DeadLetterReason.INVALID_FIELD, str(exc))
    return check(cdr)


def check(cdr: Cdr) -> Cdr | Rejected:
    """Field-level validation shared by every input form (JSON and Avro)."""
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
    return cdr


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer")
    return value


def _from_json(d: Mapping[str, Any]) -> Cdr:
    return Cdr(
        call_id=_text(d, "call_id") or "",
        tenant_id=_text(d, "tenant_id") or "",
        user_id=_text(d, "user_id") or "",
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
        user_id=_text(d, "userId") or "",
        call_type=_text(d, "callType") or "",
        caller_number=_text(d, "callerNumber", False) or "",
        callee_number=_text(d, "calleeNumber", False) or "",
        start=parse_time(d["startDateTime"]),
        end=parse_time(d["endDateTime"]),
        duration_s=_int(d["duration"], "duration"),
        usage_country=_text(d, "usageCountryCode", False),
        conference_id=_text(d, "conferenceId", False),
        licence_capability=_text(d, "licenseCapability", False),
        graph_call_id=_text(d, "callId", False),
        user_principal_name=_text(d, "userPrincipalName", False),
        user_display_name=_text(d, "userDisplayName", False),
    )


class TenantError(DomainError):
    """A tenant entry that cannot be used; the message names the tenant and field."""


def tenant_from_dict(d: Mapping[str, Any]) -> Tenant:
    tid = d.get("tenant_id") if isinstance(d, Mapping) else None
    if not isinstance(tid, str) or not tid:
        raise TenantError("tenant without tenant_id")
    try:
        return _tenant(tid, d)
    except TenantError:
        raise
    except (KeyError, TypeError, ValueError, MoneyError) as exc:
        raise TenantError(f"tenant {tid}: {type(exc).__name__}: {exc}") from None


def _tenant(tid: str, d: Mapping[str, Any]) -> Tenant:
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
    for u in d.get("users", []):
        user = User(
            user_id=u["user_id"],
            usage_country=u["usage_country"].upper(),
            licences=frozenset(u.get("licences", [])),
            dialout_policy=u.get("dialout_policy"),
            email=u.get("email"),
            roles=frozenset(u.get("roles", [])),
            display_name=u.get("display_name"),
        )
        users[user.user_id] = user
    ar = None
    if d.get("auto_recharge"):
        a = d["auto_recharge"]
        ar = AutoRecharge(bool(a.get("enabled", False)), parse_money(a["amount"]), parse_money(a["trigger"]))
        if ar.enabled and channel in POSTPAID_CHANNELS:
            raise TenantError(f"tenant {tid}: auto-recharge must be off for {channel} billing")
        if ar.amount <= 0 or ar.trigger < 0:
            raise TenantError(f"tenant {tid}: auto-recharge amount must be positive")
    funding = tuple(
        Funding(f["lot_id"], parse_money(f["amount"]), parse_time(f["purchased_at"])) for f in d.get("funding", [])
    )
    if any(f.amount <= 0 for f in funding):
        raise TenantError(f"tenant {tid}: funding amounts must be positive")
    return Tenant(
        tenant_id=tid,
        country=d["country"].upper(),
        currency=d["currency"].upper(),
        channel=channel,
        users=users,
        time_zone=tz,
        auto_recharge=ar,
        funding=funding,
        payment_method=d.get("payment_method"),
    )
