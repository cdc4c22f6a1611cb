"""`callcharge report usage|pools|statement` and `callcharge export charges`: finance's view
of the committed ledger (read_committed `charges` and `balance-events`), so they work after
a restart, on any replica, and agree with `rebuild`. Rows come from `processors.reports`;
this module reads the ledger and writes CSV (RFC 4180, UTF-8) or JSON."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import event_from_avro
from pipeline.adapters.directory import configured_tenants
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.reports.readback import read_all
from processors import reports
from processors.calendar import month_key
from processors.ledger import ALLOWED_LATENESS
from processors.model import Event, Tenant

FORMATS = ("csv", "json")


@dataclass
class Ledger:
    tenants: dict[str, Tenant]
    charges: list[dict[str, Any]]
    events: list[Event]
    lateness: timedelta = ALLOWED_LATENESS  # a month closes this long after its end
    recorded: dict[str, datetime] | None = None  # balance event id -> its record's timestamp


def read_ledger(settings: Settings, tenant_id: str | None = None) -> Ledger:
    """Tenant configuration and the committed ledger, of one tenant or of all."""
    codec = Codec(settings.schemas_dir)
    tenants = configured_tenants(settings, codec, tenant_id)
    if tenant_id is not None and not tenants:
        raise InputError(f"unknown tenant {tenant_id!r}: no configuration on {settings.topic.tenant_config}")
    charges = []
    for _, raw in read_all(settings, settings.topic.charges, timeout=120):
        _, rec = codec.decode(raw)
        if tenant_id in (None, rec["tenant_id"]):
            charges.append(rec)
    events = []
    recorded: dict[str, datetime] = {}  # event id -> when its record was written
    stamps: list[datetime] = []
    for (_, raw), stamp in zip(
        read_all(settings, settings.topic.balance_events, timeout=120, stamps=stamps), stamps, strict=True
    ):
        _, rec = codec.decode(raw)
        if tenant_id in (None, rec["tenant_id"]):
            events.append(event_from_avro(rec))
            recorded.setdefault(rec["event_id"], stamp)
    return Ledger(tenants, charges, events, settings.lateness, recorded)


def check_month(text: str | None, tenant: Tenant, now: datetime) -> str:
    """`YYYY-MM`, not in the future of the tenant's calendar; the current month when None."""
    current = month_key(now, tenant.time_zone)
    if text is None:
        return current
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", text):
        raise InputError(f"month {text!r}: expected YYYY-MM, e.g. {current}")
    if text > current:
        raise InputError(f"month {text} is in the future (it is {current} for {tenant.tenant_id})")
    return text


def render(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, headers: dict[str, str] | None = None
) -> str:
    """CSV per RFC 4180 (CRLF, quoted where needed, a header row: the column names, or
    `headers` for them) or a JSON list (keyed by the column names)."""
    if fmt == "json":
        return json.dumps(list(rows), indent=1, ensure_ascii=False) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\r\n", extrasaction="raise")
    writer.writerow({c: (headers or {}).get(c, c) for c in columns})
    writer.writerows(rows)
    return buf.getvalue()


def usage_report(ledger: Ledger, tenant_id: str, month: str, fmt: str) -> str:
    rows = reports.usage(ledger.tenants[tenant_id], ledger.charges, month)
    return render(rows, reports.USAGE_COLUMNS, fmt)


POOL_COLUMNS = ("country", "capability_description", "total_minutes", "used_minutes", "available_minutes", "capability")


# The header row of the Teams admin center's minute-pools export, which finance compares it with.
POOL_HEADERS = {
    "country": "Country or region",
    "capability_description": "Capability description",
    "total_minutes": "Total minutes",
    "used_minutes": "Minutes used",
    "available_minutes": "Minutes available",
    "capability": "Capability",
}


def pools_report(ledger: Ledger, tenant_id: str, month: str, fmt: str) -> str:
    rows = reports.pools(ledger.tenants[tenant_id], ledger.charges, month)
    return render(rows, POOL_COLUMNS, fmt, POOL_HEADERS)


def statement_report(ledger: Ledger, tenant_id: str, month: str, fmt: str) -> tuple[str, reports.Statement]:
    st = reports.statement(
        ledger.tenants[tenant_id], ledger.charges, ledger.events, month, ledger.lateness, ledger.recorded
    )
    text = json.dumps(st.to_dict(), indent=1) + "\n" if fmt == "json" else "\n".join(st.lines()) + "\n"
    return text, st


def chart(ledger: Ledger, tenant_id: str, month: str, out: Path) -> Path:
    from pipeline.reports import chart as charts

    tenant = ledger.tenants[tenant_id]
    data = reports.chart_data(tenant, ledger.charges, ledger.events, month, ledger.lateness, ledger.recorded)
    return charts.write(data, f"{tenant_id}: credits in {month}", tenant.currency, out, month)


def export_charges(ledger: Ledger, start: date, end: date, fmt: str) -> str:
    """Charge segments of the calls that started from `start` to `end` (UTC dates, both
    included), as CSV or JSON lines."""
    chosen = [c for c in ledger.charges if start <= c["start_time"].astimezone(UTC).date() <= end]
    rows = reports.export_rows(chosen)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return render(rows, reports.EXPORT_COLUMNS, "csv")


def parse_day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name} {text!r}: expected a date YYYY-MM-DD") from None
