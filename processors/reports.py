"""Finance's reports from the ledger, pure: the PSTN usage report, the minute pools report,
the monthly statement and the flat charge export. Input is the committed ledger as decoded
records (charges in their Avro shape, balance events as `Event`); the caller reads them.

A record belongs to the month of its time in the tenant's time zone: a charge to the month
of its call's start (the `month` it carries, the month its pools were drawn in), an event to
the month of its `at`. Money stays integer micro-units here; the writers format it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from phonenumbers.geocoder import _region_display_name

from . import tables
from .calendar import month_key, posted_month, zone
from .charging import ZONE_A_POOL, prepare
from .ledger import ALLOWED_LATENESS
from .model import BILLABLE, INBOUND, OVERAGE, Event, Tenant
from .money import format_minor, format_money, micro, minor_unit, round_minor

USAGE_COLUMNS = (
    "UsageId",
    "Call ID",
    "Conference ID",
    "User Location",
    "AAD ObjectId",
    "UPN",
    "User Display Name",
    "Caller ID",
    "Call Type",
    "Number Type",
    "Domestic/International",
    "Destination Dialed",
    "Destination Number",
    "Start Time",
    "End Time",
    "Duration Seconds",
    "Connection Fee",
    "Charge",
    "Currency",
    "Capability",
)

PLAN_NAMES = {
    "MCOPSTN1": "Domestic Calling Plan",
    "MCOPSTN2": "Domestic and International Calling Plan",
    "MCOPSTN5": "Domestic Calling Plan (120 minutes)",
    "MCOPSTN6": "Domestic Calling Plan (240 minutes)",
    "MCOPSTN8": "Domestic Calling Plan (120 minutes, per user)",
    "MCOMEETADD": "Audio Conferencing dial-out to Zone A",
}


def unique_charges(charges: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One record per call (an at-least-once reader may see a record twice), in order. A
    call is its tenant and call id: call ids are unique only within a tenant."""
    seen: dict[tuple[str, str], Mapping[str, Any]] = {}
    for c in charges:
        seen.setdefault((c["tenant_id"], c["call_id"]), c)
    return list(seen.values())


def _posted(c: Mapping[str, Any], tz: str | None, lateness: timedelta) -> str:
    """The month charge `c` is posted in (`calendar.posted_month`): a closed month's
    statement never changes."""
    return posted_month(c["month"], c.get("charged_at"), tz, lateness)


def _event_posted(e: Event, recorded: Mapping[str, datetime] | None, tz: str | None, lateness: timedelta) -> str:
    """The month balance event `e` is posted in: the month of its `at` while that month was
    open when the event was recorded on the ledger (`recorded`: its record's timestamp), the
    month it was recorded in after that (a lot configured with a purchase time in a closed
    month is funding of the open month)."""
    return posted_month(month_key(e.at, tz), recorded.get(e.event_id) if recorded else None, tz, lateness)


def unique_events(events: Iterable[Event]) -> list[Event]:
    seen: dict[str, Event] = {}
    for e in events:
        seen.setdefault(e.event_id, e)
    return list(seen.values())


# -- the PSTN usage report ----------------------------------------------------------------------


def mask(number: str | None, tenant_country: str) -> str:
    """An external number as the tenant's country shows it: its trailing digits replaced by
    `*` where data/number_masking.csv says so, whole elsewhere."""
    if not number:
        return ""
    n = tables.number_masking().get(tenant_country.upper(), 0)
    if n <= 0:
        return number
    digits = sum(ch.isdigit() for ch in number)
    hide = min(n, max(0, digits - 1))
    out, left = [], hide
    for ch in reversed(number):
        if left and ch.isdigit():
            out.append("*")
            left -= 1
        else:
            out.append(ch)
    return "".join(reversed(out))


def utc_iso(at: datetime) -> str:
    """ISO 8601 in UTC, to the second: 2026-11-10T12:00:00Z."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_row(c: Mapping[str, Any], tenant: Tenant) -> dict[str, str]:
    """One row of the PSTN usage report for one charge record. The tenant's own number (the
    callee of an inbound call, the caller of an outbound one) is shown whole; the other
    party's is masked by the tenant's country."""
    inbound = c["call_type"] in INBOUND
    caller = c.get("caller_number") or ""
    callee = c.get("callee_number") or ""
    if inbound:
        caller = mask(caller, tenant.country)
    else:
        callee = mask(callee, tenant.country)
    country = c.get("destination_country")
    domestic = c.get("domestic")
    return {
        "UsageId": c["call_id"],
        "Call ID": c.get("graph_call_id") or "",
        "Conference ID": c.get("conference_id") or "",
        "User Location": c.get("usage_country") or _user_country(tenant, c["user_id"]),
        "AAD ObjectId": c["user_id"],
        "UPN": c.get("user_principal_name") or "",
        "User Display Name": c.get("user_display_name") or "",
        "Caller ID": caller,
        "Call Type": c["call_type"],
        "Number Type": _number_type(c),
        "Domestic/International": "" if domestic is None else ("Domestic" if domestic else "International"),
        "Destination Dialed": _region_display_name(country, "en") if country else "",
        "Destination Number": callee,
        "Start Time": utc_iso(c["start_time"]),
        "End Time": utc_iso(c["end_time"]),
        "Duration Seconds": str(c["duration_s"]),
        "Connection Fee": format_money(c["connection_fee"]),
        "Charge": format_money(c["amount"]),
        "Currency": c["currency"],
        "Capability": c["capability"],
    }


def _user_country(tenant: Tenant, user_id: str) -> str:
    user = tenant.users.get(user_id)
    return user.usage_country if user is not None else ""


def _number_type(c: Mapping[str, Any]) -> str:
    """The kind of the tenant's own number on the call, as the admin center names it."""
    if c["call_type"] in INBOUND and c.get("number_type") == "tollfree":
        return "Toll free"
    if not c["user_id"]:
        return "Service"
    return "User geographic"


def usage(tenant: Tenant, charges: Iterable[Mapping[str, Any]], month: str) -> list[dict[str, str]]:
    """The month's calls; a call re-rated since shows what it costs now (its adjustment
    added to the charge it had)."""
    mine = [c for c in unique_charges(charges) if c["tenant_id"] == tenant.tenant_id and c["month"] == month]
    adjustments = {c["call_id"].removesuffix(":rerate"): c for c in mine if "adjusts" in c["flags"]}
    rows = sorted((c for c in mine if "adjusts" not in c["flags"]), key=lambda c: (c["start_time"], c["call_id"]))
    out = []
    for c in rows:
        adj = adjustments.get(c["call_id"])
        if adj is not None:
            c = {**c, "amount": c["amount"] + adj["amount"], "connection_fee": adj["connection_fee"]}
            c["capability"] = adj["capability"]
        out.append(usage_row(c, tenant))
    return out


# -- the minute pools report ---------------------------------------------------------------------


def pools(tenant: Tenant, charges: Iterable[Mapping[str, Any]], month: str) -> list[dict[str, Any]]:
    """Per pool: country, capability description, total, used and available minutes and the
    capability, for `month`. MCOPSTN8 pools (one per user) are summed per country; the
    international allowance of the domestic-and-international plan is its own row."""
    book = prepare(tenant)
    used: Counter[tuple[str, str]] = Counter()
    for c in unique_charges(charges):
        if c["tenant_id"] != tenant.tenant_id or c["month"] != month:
            continue
        for s in c["segments"]:
            if s["pool"] is not None and s["minutes"]:
                dim = "dom" if s["pool"] == ZONE_A_POOL or c["domestic"] else "intl"
                used[(_pool_group(s["pool"], tenant), dim)] += s["minutes"]
    totals: Counter[tuple[str, str]] = Counter()
    for pool, (dom, intl) in book.pools.items():
        totals[(_pool_group(pool, tenant), "dom")] += dom
        if intl:
            totals[(_pool_group(pool, tenant), "intl")] += intl
    rows = []
    for (group, dim), total in sorted(totals.items()):
        if not total and not used[(group, dim)]:
            continue
        capability, country = _pool_parts(group)
        name = PLAN_NAMES.get(capability, capability)
        if dim == "intl":
            name += " (international)"
        n = used[(group, dim)]
        rows.append(
            {
                "country": country,
                "capability_description": name,
                "total_minutes": total,
                "used_minutes": n,
                "available_minutes": max(0, total - n),
                "capability": capability,
            }
        )
    return rows


def _pool_group(pool: str, tenant: Tenant) -> str:
    """The report row a pool counts in: a per-user pool (MCOPSTN8) in its user's country."""
    if pool == ZONE_A_POOL:
        return "zone_a"
    parts = pool.split(":")  # cp:PLAN:COUNTRY or cp:MCOPSTN8:user:ID
    if parts[2] != "user":
        return f"cp:{parts[1]}:{parts[2]}"
    user = tenant.users.get(parts[3])
    country = (user.usage_country if user else None) or tenant.country
    return f"cp:{parts[1]}:{'US' if country in ('US', 'PR') else country}"


def _pool_parts(group: str) -> tuple[str, str]:
    if group == "zone_a":
        return "MCOMEETADD", "Zone A"
    _, capability, country = group.split(":")
    return capability, country


# -- the monthly statement --------------------------------------------------------------------------


@dataclass
class Statement:
    tenant_id: str
    month: str
    currency: str
    opening_balance: int = 0
    opening_deficit: int = 0
    fundings: list[dict[str, Any]] = field(default_factory=list)
    charges_by_bucket: dict[str, int] = field(default_factory=dict)
    charges_by_capability: dict[str, int] = field(default_factory=dict)
    charges: int = 0  # taken from the balance (billable segments)
    overage: int = 0  # post-paid, billed on the invoice (not from the balance)
    adjustments: int = 0  # re-rating of calls charged before (taken from the balance)
    expiries: list[dict[str, Any]] = field(default_factory=list)
    closing_balance: int = 0
    closing_deficit: int = 0
    removed: dict[str, Any] | None = None  # the tenant was offboarded this month: at, balance, deficit
    deficit_taken: int = 0  # deficit the month's billable calls took (covered: see deficit_covered)

    @property
    def funding(self) -> int:
        return sum(f["amount"] for f in self.fundings)

    @property
    def expired(self) -> int:
        return sum(x["amount"] for x in self.expiries)

    @property
    def adds_up(self) -> bool:
        return (
            self.opening_balance + self.funding - self.charges - self.adjustments - self.expired == self.closing_balance
        )

    def to_dict(self) -> dict[str, Any]:
        m = format_money
        return {
            "tenant_id": self.tenant_id,
            "month": self.month,
            "currency": self.currency,
            "opening_balance": m(self.opening_balance),
            "opening_deficit": m(self.opening_deficit),
            "fundings": [
                {**f, "amount": m(f["amount"]), "deficit_covered": m(f["deficit_covered"])} for f in self.fundings
            ],
            "funding": m(self.funding),
            "charges_by_bucket": {k: m(v) for k, v in sorted(self.charges_by_bucket.items())},
            "charges_by_capability": {k: m(v) for k, v in sorted(self.charges_by_capability.items())},
            "charges": m(self.charges),
            "overage": m(self.overage),
            "adjustments": m(self.adjustments),
            "expiries": [{**x, "amount": m(x["amount"])} for x in self.expiries],
            "expired": m(self.expired),
            "closing_balance": m(self.closing_balance),
            "closing_deficit": m(self.closing_deficit),
            "deficit_taken": m(self.deficit_taken),
            "deficit_covered": m(self.deficit_covered),
            "adds_up": self.adds_up,
            "removed": None
            if self.removed is None
            else {**self.removed, "balance": m(self.removed["balance"]), "deficit": m(self.removed["deficit"])},
        }

    @property
    def deficit_covered(self) -> int:
        return sum(f["deficit_covered"] for f in self.fundings)

    def lines(self) -> list[str]:
        """The statement as aligned text: one amount column at the currency's minor unit
        (the exact micro-unit figures are in to_dict() and the export). Where rounding each
        line to the minor unit would make the column not add up, a rounding line says by
        how much, so the printed column always adds up; the check itself is exact."""
        cur = self.currency
        places = minor_unit(cur)

        def line(label: str, value: int, note: str = "") -> str:
            return f"  {label:<{LABEL_W}}{format_minor(value, cur):>{AMOUNT_W}}" + (f"  {note}" if note else "")

        def rounding(printed_sum: int, printed_total: int) -> list[str]:
            diff = printed_total - printed_sum
            return [line(f"{'+' if diff > 0 else '-'} Rounding to {places} decimals", abs(diff))] if diff else []

        def r(value: int) -> int:
            return round_minor(value, cur)

        out = [
            f"Statement of {self.tenant_id} for {self.month}",
            f"Amounts in {cur} to {places} decimals; exact micro-unit figures: --format json, "
            "`callcharge export charges`.",
            "",
            f"Balance{'':<{LABEL_W - 5}}{cur:>{AMOUNT_W}}",
            line("Opening balance", self.opening_balance),
        ]
        printed = r(self.opening_balance)
        for f in self.fundings:
            note = f"invoice {f['invoice_id']}" if f["invoice_id"] else "no invoice (configured lot)"
            out.append(line(f"+ Funding {f['lot_id']} ({f['at'][:10]})", f["amount"], note))
            printed += r(f["amount"])
        out.append(line("- Charges, billable calls", self.charges))
        out.append(line("- Re-rating adjustments", self.adjustments))
        printed -= r(self.charges) + r(self.adjustments)
        for x in self.expiries:
            out.append(line(f"- Expired {x['lot_id']} ({x['at'][:10]})", x["amount"]))
            printed -= r(x["amount"])
        out += rounding(printed, r(self.closing_balance))
        out.append(line("Closing balance", self.closing_balance))
        out.append(
            "  "
            + ("Adds up" if self.adds_up else "DOES NOT ADD UP")
            + ", exactly: opening + funding - charges - adjustments - expired = closing"
        )
        out += [
            "",
            "Deficit (calls charged past a zero balance; the next funding covers it first)",
            line("Opening deficit", self.opening_deficit),
            line("+ Taken by calls", self.deficit_taken),
            line("- Covered by fundings", self.deficit_covered),
        ]
        out += rounding(
            r(self.opening_deficit) + r(self.deficit_taken) - r(self.deficit_covered), r(self.closing_deficit)
        )
        out.append(line("Closing deficit", self.closing_deficit))
        if self.charges_by_capability:
            out += ["", "Charges by capability (all buckets with an amount)"]
            out += [line(cap, amount) for cap, amount in sorted(self.charges_by_capability.items())]
        if self.overage:
            out += ["", line("Post-paid overage", self.overage, "invoiced, not from the balance")]
        if self.removed is not None:
            rm = self.removed
            out += [
                "",
                f"Tenant removed at {rm['at']} by {rm['by'] or '-'}: balance then "
                f"{format_minor(rm['balance'], cur)} (deficit {format_minor(rm['deficit'], cur)})",
            ]
        return out


LABEL_W = 46  # the statement's label column
AMOUNT_W = 14  # and its amount column


def statement(
    tenant: Tenant,
    charges: Iterable[Mapping[str, Any]],
    events: Iterable[Event],
    month: str,
    lateness: timedelta = ALLOWED_LATENESS,
    recorded: Mapping[str, datetime] | None = None,
) -> Statement:
    """The month's statement. Balances are sums over the ledger (balance = funded - taken -
    expired; deficit = deficits taken - deficits covered), so the identity holds by the same
    arithmetic the fold keeps, and the closing state is the replay of everything up to the
    end of the month."""
    tz = tenant.time_zone
    st = Statement(tenant.tenant_id, month, tenant.currency)
    balance: dict[str, int] = defaultdict(int)  # "before" / "in" sums of balance changes
    deficit: dict[str, int] = defaultdict(int)
    for c in unique_charges(charges):
        if c["tenant_id"] != tenant.tenant_id:
            continue
        posted = _posted(c, tz, lateness)
        if posted > month:
            continue
        when = "in" if posted == month else "before"
        adjustment = "adjusts" in c.get("flags", ())
        for s in c["segments"]:
            if s["bucket"] == BILLABLE:
                balance[when] -= s["amount"]
                deficit[when] += s["deficit"]
                if when == "in":
                    st.deficit_taken += s["deficit"]
            if when == "in" and s["amount"]:
                if s["bucket"] == OVERAGE:
                    st.overage += s["amount"]
                elif s["bucket"] == BILLABLE and adjustment:
                    st.adjustments += s["amount"]
                elif s["bucket"] == BILLABLE:
                    st.charges += s["amount"]
                if not adjustment:
                    st.charges_by_bucket[s["bucket"]] = st.charges_by_bucket.get(s["bucket"], 0) + s["amount"]
                    cap = c["capability"] or "-"
                    st.charges_by_capability[cap] = st.charges_by_capability.get(cap, 0) + s["amount"]
    for e in unique_events(events):
        if e.tenant_id != tenant.tenant_id:
            continue
        em = _event_posted(e, recorded, tz, lateness)
        if e.type == "tenant_removed" and em == month:
            f = e.field_dict()
            st.removed = {
                "at": utc_iso(e.at),
                "balance": e.balance,
                "deficit": micro(f.get("closing_deficit", 0)),
                "by": str(f.get("removed_by", "")),
            }
        if em > month or e.type not in ("funds_added", "credits_expired"):
            continue
        when = "in" if em == month else "before"
        f = e.field_dict()
        amount = micro(f["amount"])
        if e.type == "funds_added":
            covered = micro(f.get("deficit_covered", 0))
            balance[when] += amount
            deficit[when] -= covered
            if when == "in":
                st.fundings.append(
                    {
                        "lot_id": f["lot_id"],
                        "at": utc_iso(e.at),
                        "amount": amount,
                        "invoice_id": f.get("invoice_id") or "",
                        "deficit_covered": covered,
                    }
                )
        else:
            balance[when] -= amount
            if when == "in":
                st.expiries.append({"lot_id": f["lot_id"], "at": utc_iso(e.at), "amount": amount})
    st.opening_balance, st.opening_deficit = balance["before"], deficit["before"]
    st.closing_balance = balance["before"] + balance["in"]
    st.closing_deficit = deficit["before"] + deficit["in"]
    return st


# -- the flat export ---------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "call_id",
    "tenant_id",
    "user_id",
    "call_type",
    "start_time",
    "end_time",
    "duration_s",
    "month",
    "classification",
    "segment",
    "bucket",
    "minutes",
    "amount",
    "currency",
    "pool",
    "rate_id",
    "lots",
    "deficit",
    "capability",
    "destination_country",
    "number_type",
    "domestic",
    "flags",
    "price_per_minute",
    "connection_fee",
    "first_increment",
    "next_increment",
    "rate_card",
    "source_partition",
    "source_offset",
    "charged_at",
)


def export_rows(charges: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One flat row per charge segment, with the lots it drew ("lot:amount;..."), the tariff
    and the rate card: a spreadsheet or a warehouse loader takes it as it is."""
    out = []
    for c in unique_charges(charges):
        t = c.get("tariff") or {}
        for i, s in enumerate(c["segments"]):
            out.append(
                {
                    "call_id": c["call_id"],
                    "tenant_id": c["tenant_id"],
                    "user_id": c["user_id"],
                    "call_type": c["call_type"],
                    "start_time": utc_iso(c["start_time"]),
                    "end_time": utc_iso(c["end_time"]),
                    "duration_s": str(c["duration_s"]),
                    "month": c["month"],
                    "classification": c["classification"],
                    "segment": str(i),
                    "bucket": s["bucket"],
                    "minutes": str(s["minutes"]),
                    "amount": format_money(s["amount"]),
                    "currency": c["currency"],
                    "pool": s["pool"] or "",
                    "rate_id": s["rate"] or "",
                    "lots": ";".join(f"{d['lot_id']}:{format_money(d['amount'])}" for d in s["lots"]),
                    "deficit": format_money(s["deficit"]),
                    "capability": c["capability"],
                    "destination_country": c.get("destination_country") or "",
                    "number_type": c.get("number_type") or "",
                    "domestic": "" if c.get("domestic") is None else str(bool(c["domestic"])).lower(),
                    "flags": ";".join(c.get("flags") or ()),
                    "price_per_minute": format_money(t["price_per_minute"]) if t else "",
                    "connection_fee": format_money(t["connection_fee"]) if t else "",
                    "first_increment": str(t["first_increment"]) if t else "",
                    "next_increment": str(t["next_increment"]) if t else "",
                    "rate_card": c.get("rate_card") or "",
                    "source_partition": str(c["source_partition"]),
                    "source_offset": str(c["source_offset"]),
                    "charged_at": utc_iso(c["charged_at"]),
                }
            )
    return out


# -- the month on a chart -------------------------------------------------------------------------


@dataclass
class ChartData:
    """What `callcharge report chart` draws: the balance after every change in the month (in
    time order), the funding / recharge / expiry / zero marks, and the pool minutes used per
    day (cumulative) against the pools' size."""

    balance: list[tuple[datetime, int]] = field(default_factory=list)
    marks: list[tuple[datetime, str, str]] = field(default_factory=list)  # (at, kind, label)
    pool_used: list[tuple[str, int]] = field(default_factory=list)  # (YYYY-MM-DD, minutes used so far)
    pool_total: int = 0
    opening: int = 0  # the balance at the month's start
    closing: int = 0  # and at its end (the statement's)


def chart_data(
    tenant: Tenant,
    charges: Iterable[Mapping[str, Any]],
    events: Iterable[Event],
    month: str,
    lateness: timedelta = ALLOWED_LATENESS,
    recorded: Mapping[str, datetime] | None = None,
) -> ChartData:
    tz = tenant.time_zone
    events = list(events)
    st = statement(tenant, charges, events, month, lateness, recorded)
    changes: list[tuple[datetime, int]] = []
    data = ChartData()
    pool_by_day: Counter[str] = Counter()
    for c in unique_charges(charges):
        if c["tenant_id"] != tenant.tenant_id or _posted(c, tz, lateness) != month:
            continue
        taken = sum(s["amount"] for s in c["segments"] if s["bucket"] == BILLABLE)
        if taken:
            changes.append((c["end_time"], -taken))
        pooled = sum(s["minutes"] for s in c["segments"] if s["pool"] is not None)
        if pooled:
            pool_by_day[_local_day(c["start_time"], tz)] += pooled
    for e in unique_events(events):
        if e.tenant_id != tenant.tenant_id or _event_posted(e, recorded, tz, lateness) != month:
            continue
        f = e.field_dict()
        at = e.at if month_key(e.at, tz) == month or not recorded else recorded[e.event_id]  # shown when posted
        if e.type == "funds_added":
            changes.append((at, micro(f["amount"])))
            kind = "recharge" if ":recharge:" in str(f.get("lot_id", "")) else "funding"
            data.marks.append((at, kind, f"{kind} {format_money(micro(f['amount']))}"))
        elif e.type == "credits_expired":
            changes.append((at, -micro(f["amount"])))
            data.marks.append((at, "expiry", f"expired {format_money(micro(f['amount']))}"))
        elif e.type == "balance_zero":
            data.marks.append((at, "zero", "balance reached zero"))
    balance = st.opening_balance
    for at, delta in sorted(changes, key=lambda x: x[0]):
        balance += delta
        data.balance.append((at, balance))
    used = 0
    for day in sorted(pool_by_day):
        used += pool_by_day[day]
        data.pool_used.append((day, used))
    data.pool_total = sum(dom + intl for dom, intl in prepare(tenant).pools.values())
    data.marks.sort(key=lambda m: m[0])
    data.opening, data.closing = st.opening_balance, st.closing_balance
    return data


def _local_day(at: datetime, tz: str | None) -> str:
    return at.astimezone(zone(tz)).date().isoformat()
