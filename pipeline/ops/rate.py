"""`callcharge rate`: offline rating through the pure core with in-memory state."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pipeline.adapters.files import load_rates, load_tenants, read_cdr_lines
from processors.charging import Unchargeable
from processors.engine import Engine, charge_to_dict, event_to_dict
from processors.inputs import DeadLetterReason, Rejected, cdr_from_dict


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
            cdr = Rejected(DeadLetterReason.UNKNOWN_TENANT, f"unknown tenant {cdr.tenant_id!r}")
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
