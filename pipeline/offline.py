"""`callcharge rate`: offline rating through the pure core with in-memory state."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from processors.charging import Unchargeable
from processors.engine import Engine, charge_to_dict, event_to_dict
from processors.inputs import Rejected, TenantError, cdr_from_dict, tenant_from_dict
from processors.model import Tenant
from processors.rating import RateCard

log = logging.getLogger(__name__)


class InputError(Exception):
    """The inputs cannot be read at all (exit non-zero)."""


def load_tenants(path: Path) -> list[Tenant]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read tenants file {path}: {exc}") from None
    if isinstance(data, dict) and "tenants" in data:
        data = data["tenants"]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of tenants")
    try:
        return [tenant_from_dict(d) for d in data]
    except TenantError as exc:
        raise InputError(f"{path}: {exc}") from None


def load_rates(path: Path) -> RateCard:
    try:
        return RateCard.from_csv_text(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"cannot read rate card {path}: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def read_cdr_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or a Rejected) for a JSONL file or a Graph response."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read CDR file {path}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("{") and '"value"' in stripped[:400]:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("value"), list):
            tenant = doc.get("tenantId")
            for i, row in enumerate(doc["value"], start=1):
                if tenant and isinstance(row, dict):
                    row = {"tenantId": tenant, **row}
                yield i, row
            return
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as exc:
            yield i, Rejected("undecodable", f"invalid JSON: {exc.msg}")


@dataclass
class Summary:
    calls: int = 0
    rejected: int = 0
    duplicates: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)


def rate(tenants_path: Path, cdrs_path: Path, rates_path: Path, out: TextIO, err: TextIO) -> Summary:
    engine = Engine(load_tenants(tenants_path), load_rates(rates_path))
    summary = Summary()

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")

    for event in engine.opening_events:
        summary.events[event.type] += 1
        emit(event_to_dict(event))
    for line, obj in read_cdr_lines(cdrs_path):
        cdr = obj if isinstance(obj, Rejected) else cdr_from_dict(obj)
        if not isinstance(cdr, Rejected) and cdr.tenant_id not in engine.books:
            cdr = Rejected("unknown_tenant", f"unknown tenant {cdr.tenant_id!r}")
        if isinstance(cdr, Rejected):
            summary.rejected += 1
            err.write(f"line {line}: {cdr}\n")
            continue
        try:
            result = engine.process(cdr)
        except Unchargeable as exc:
            summary.rejected += 1
            err.write(f"line {line}: unparsable_number: {exc}\n")
            continue
        if result is None:
            summary.duplicates += 1
            err.write(f"line {line}: duplicate: call {cdr.call_id} already charged\n")
            continue
        charge, events = result
        summary.calls += 1
        summary.by_class[charge.classification] += 1
        emit(charge_to_dict(charge))
        for event in events:
            summary.events[event.type] += 1
            emit(event_to_dict(event))
    return summary
