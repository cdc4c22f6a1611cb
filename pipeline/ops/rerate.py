"""`callcharge rerate --rates NEW.csv [--tenant T] [--since D] [--dry-run]`: price the
`FREECALL` calls a newer rate card now has a tariff for, and charge each exactly once.

Each call is one operation `rerate:<call id>` through the same atomic Redis path as the
control worker's balance operations (compare-and-set on the tenant's state, the operation
recorded with the records it produced), then its adjustment record and balance events go
to the ledger. A call re-rated before is refused as already adjusted: by its adjustment on
the ledger, or by its operation in Redis, whose stored records are produced again (a run
killed between Redis and Kafka loses nothing and doubles nothing). Run it with the charging
worker of the tenant quiet or not: the compare-and-set orders them.
"""

from __future__ import annotations

import functools
import os
import signal
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline import wiring
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import charge_to_avro, event_to_avro
from pipeline.adapters.files import load_rates
from pipeline.adapters.kafka import producer
from pipeline.adapters.store import CHARGES, EVENTS
from pipeline.config import Settings
from pipeline.control.ledger_ops import LedgerOps
from pipeline.errors import FatalError
from pipeline.reports.finance import read_ledger
from processors import rerate
from processors.charging import Book, prepare
from processors.ledger import TenantState
from processors.money import format_money
from processors.rating import RateCard, Tariff


@dataclass
class Summary:
    per_tenant: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # calls, amount
    already: int = 0
    still_unrated: int = 0
    currency: dict[str, str] = field(default_factory=dict)

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would charge" if dry_run else "charged"
        out = []
        for tid, (n, amount) in sorted(self.per_tenant.items()):
            out.append(f"  {tid:<24} {verb} {n} calls, {format_money(amount)} {self.currency.get(tid, '')}")
        total = sum(n for n, _ in self.per_tenant.values())
        out.insert(0, f"re-rating: {total} FREECALL calls {'to charge' if dry_run else 'charged'}; "
                      f"{self.already} already adjusted; {self.still_unrated} still without a tariff")  # fmt: skip
        return out


def _adjustment(
    codec: Codec,
    book: Book,
    c: dict[str, Any],
    priced: tuple[Tariff, int, int],
    rates: RateCard,
    now: datetime,
    state: TenantState,
) -> list[tuple[int, bytes]]:
    """Fold the adjustment of charge `c` into `state`; its encoded records."""
    charge, events = rerate.adjust(book, state, c, priced, rates, now)
    records = [(CHARGES, codec.encode("charge", charge_to_avro(charge, -1, -1, now)))]
    currency = book.tenant.currency
    records += [(EVENTS, codec.encode("balance_event", event_to_avro(e, currency))) for e in events]
    return records


def rerate_calls(
    settings: Settings, rates_path: Path, tenant_id: str | None, since: date | None, dry_run: bool
) -> Summary:
    rates = load_rates(rates_path)  # a card that does not parse changes nothing
    ledger = read_ledger(settings, tenant_id)
    # calls are named by (tenant, call id): call ids are unique only within a tenant
    adjusted = {
        (c["tenant_id"], c["call_id"][: -len(rerate.SUFFIX)]) for c in ledger.charges if rerate.ADJUSTS in c["flags"]
    }
    summary = Summary()
    codec = wiring.codec(settings)
    ops = LedgerOps(wiring.store(settings), codec)
    out = producer(settings)
    crash_after = int(settings.crash_after.split(":")[1]) if settings.crash_after.startswith("rerate:") else 0
    done = 0
    seen: set[tuple[str, str]] = set()
    for c in ledger.charges:
        call = (c["tenant_id"], c["call_id"])
        if call in seen or not rerate.needs_rerating(c) or c["tenant_id"] not in ledger.tenants:
            continue
        seen.add(call)
        if since is not None and c["start_time"].astimezone(UTC).date() < since:
            continue
        if call in adjusted:
            summary.already += 1
            continue
        tenant = ledger.tenants[c["tenant_id"]]
        book = prepare(tenant, settings.lateness)
        priced = rerate.price(book, c, rates)
        if priced is None:
            summary.still_unrated += 1
            continue
        summary.currency[tenant.tenant_id] = tenant.currency
        if dry_run:
            row = summary.per_tenant[tenant.tenant_id]
            row[0] += 1
            row[1] += priced[2]
            continue
        now = datetime.now(UTC)

        # applied before by a run killed before the ledger got it: its stored records are
        # produced now, and it is charged on the ledger by this run
        fold = functools.partial(_adjustment, codec, book, c, priced, rates, now)
        records, _ = ops.apply(book, f"rerate:{c['call_id']}", fold, now)
        row = summary.per_tenant[tenant.tenant_id]
        row[0] += 1
        row[1] += priced[2]
        done += 1
        if crash_after and done == crash_after:  # fault injection for the kill test
            os.kill(os.getpid(), signal.SIGKILL)
        key = tenant.tenant_id.encode()
        topics = {CHARGES: settings.topic.charges, EVENTS: settings.topic.balance_events}
        for code, value in records:
            out.produce(topics[code], key=key, value=value)
        out.poll(0)
    if out.flush(60):
        raise FatalError("re-rating records not acknowledged by the broker; run it again (nothing is charged twice)")
    return summary
