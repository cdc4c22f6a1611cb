"""`callcharge rate`: offline rating through the pure core with in-memory state."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from pipeline.adapters.files import load_rates, load_tenants, read_cdr_lines
from processors.engine import Engine, charge_to_dict, event_to_dict
from processors.inputs import DURATION_TOLERANCE_S, DeadLetterReason, Rejected, cdr_from_dict
from processors.ledger import ALLOWED_LATENESS


@dataclass
class Summary:
    calls: int = 0
    rejected: int = 0
    duplicates: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)


def rate(
    tenants_path: Path,
    cdrs_paths: Path | Sequence[Path],
    rates_path: Path,
    out: TextIO,
    err: TextIO,
    tenant_id: str | None = None,
    duration_tolerance_s: int = DURATION_TOLERANCE_S,
    latest_start: datetime | None = None,
    as_of: datetime | None = None,
    lateness: timedelta = ALLOWED_LATENESS,
) -> Summary:
    """Rate CDR files through the pure core, writing one JSON line per charge and event.
    A row that cannot be charged is reported on `err` with where it is and why."""
    engine = Engine(load_tenants(tenants_path), load_rates(rates_path), latest_start, lateness)
    summary = Summary()

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")

    for where, obj in read_cdr_lines(cdrs_paths, tenant_id):
        cdr = obj if isinstance(obj, Rejected) else cdr_from_dict(obj, duration_tolerance_s)
        result = cdr if isinstance(cdr, Rejected) else engine.admit_and_charge(cdr)
        if isinstance(result, Rejected):
            if result.reason == DeadLetterReason.DUPLICATE:
                summary.duplicates += 1
            else:
                summary.rejected += 1
            err.write(f"{where}: {result}\n")
            continue
        charge = result.charge
        assert charge is not None
        summary.calls += 1
        summary.by_class[charge.classification] += 1
        emit(charge_to_dict(charge))
        for event in result.events:
            summary.events[event.type] += 1
            emit(event_to_dict(event))
    if as_of is not None:  # lots bought by then, forfeitures due by then
        for event in engine.as_of(as_of):
            summary.events[event.type] += 1
            emit(event_to_dict(event))
    return summary
