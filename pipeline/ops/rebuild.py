"""`callcharge rebuild`: Redis restored from the ledger on Kafka (or checked against it).

Redis is the hot state, not the only record. Each tenant's balance state (lots, deficit,
pools, alerts, recharge in flight, totals) is rebuilt from the committed `charges` and
`balance-events` topics by `processors.replay`, and every call id charged within the dedup
window gets its record back (source offset, the charge and the events it caused), so a
CDR published again is still a `duplicate`, never a second charge. Tenant configuration
needs nothing: every worker re-materializes it from the compacted config topic at start.

`--check` writes nothing: it compares what Redis holds with the ledger, tenant by tenant,
and exits 3 when they differ. Without it, tenants whose stored state differs (or is
missing) get the rebuilt state, with a new version so no writer's compare-and-set can
land on top of it unseen. Run it with the charging and control workers stopped: a batch
applied while it runs would not be in the ledger it read.

Not restored: the control worker's own marks (payment attempts, sent notifications,
transaction history). An unfinished recharge is retried with its gateway idempotency key.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import wiring
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import event_from_avro
from pipeline.adapters.directory import configured_tenants
from pipeline.adapters.store import Store, call_digest, call_ttl_s
from pipeline.config import Settings
from pipeline.errors import FatalError
from pipeline.reports.readback import read_all
from processors.model import Event
from processors.replay import LedgerGap, differences, state_from_ledger


@dataclass
class Report:
    tenants: int = 0
    matching: int = 0
    differing: dict[str, list[str]] = field(default_factory=dict)
    rebuilt: int = 0
    calls_restored: int = 0
    calls_present: int = 0
    unknown_tenants: set[str] = field(default_factory=set)
    # what Redis holds that the ledger lacks: a ledger lost or read short
    unbacked_tenants: set[str] = field(default_factory=set)
    unbacked_calls: dict[str, int] = field(default_factory=dict)

    @property
    def unbacked(self) -> bool:
        return bool(self.unbacked_tenants or self.unbacked_calls)

    @property
    def failed(self) -> bool:
        return bool(self.differing) or self.unbacked

    def lines(self, check: bool) -> list[str]:
        out = [f"{self.tenants} tenants: {self.matching} match the ledger, {len(self.differing)} differ"]
        for tid, diffs in sorted(self.differing.items()):
            out.append(f"  {tid}: " + "; ".join(diffs[:4]) + (f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""))
        if self.unknown_tenants:
            out.append(f"  ledger records of {len(self.unknown_tenants)} tenants with no configuration: left alone")
        if self.unbacked_tenants:
            shown = ", ".join(sorted(self.unbacked_tenants)[:5])
            out.append(
                f"  Redis holds the balance state of {len(self.unbacked_tenants)} tenants the ledger lacks ({shown}): "
                "the ledger topics were lost or read short"
            )
        if self.unbacked_calls:
            n = sum(self.unbacked_calls.values())
            out.append(f"  Redis holds {n} call records of {len(self.unbacked_calls)} tenants the ledger lacks")
        if not check:
            out.append(
                f"rebuilt {self.rebuilt} tenant states; restored {self.calls_restored} call records "
                f"({self.calls_present} already there)"
            )
        return out


def rebuild(settings: Settings, check: bool = False, only: str | None = None, force: bool = False) -> Report:
    """Compare (check) or restore Redis from the ledger. Refuses to write when Redis holds
    tenants or calls the ledger lacks (it would shrink state to a ledger that lost records)
    unless `force`."""
    codec = Codec(settings.schemas_dir)
    configured = configured_tenants(settings, codec)
    tenants = {tid: tenant for tid, tenant in configured.items() if only in (None, tid)}
    if only is not None and not tenants:
        raise FatalError(f"tenant {only!r} has no configuration on {settings.topic.tenant_config}")
    charges: dict[str, list[tuple[dict[str, Any], bytes]]] = defaultdict(list)
    for _, raw in read_all(settings, settings.topic.charges, timeout=120):
        _, rec = codec.decode(raw)
        charges[rec["tenant_id"]].append((rec, raw))
    events: dict[str, list[tuple[Event, bytes]]] = defaultdict(list)
    for _, raw in read_all(settings, settings.topic.balance_events, timeout=120):
        _, rec = codec.decode(raw)
        events[rec["tenant_id"]].append((event_from_avro(rec), raw))

    store = wiring.store(settings)
    report = Report(tenants=len(tenants))
    report.unknown_tenants = (set(charges) | set(events)) - set(
        configured_tenants(settings, codec) if only else tenants
    )
    ledger_tenants = set(charges) | set(events) | set(tenants)
    in_redis = store.admin.stored_tenants() if only is None else ({only} & store.admin.stored_tenants())
    report.unbacked_tenants = in_redis - ledger_tenants
    for tid in sorted(in_redis):
        charged = {call_digest(rec["call_id"]) for rec, _ in charges.get(tid, ())}
        seen = store.admin.seen_calls(tid)  # the control worker's operations (partition -1) aside
        lacking = sum(1 for digest, (partition, _) in seen.items() if partition >= 0 and digest not in charged)
        if lacking:
            report.unbacked_calls[tid] = lacking
    if report.unbacked and not check and not force:
        raise FatalError(
            "\n".join(report.lines(True)[1:])
            + "\nrefusing to rebuild: it would overwrite Redis with a ledger that lacks what Redis holds. "
            "Restore the ledger topics first, or pass --force to rebuild from this ledger anyway"
        )
    ttl = timedelta(seconds=call_ttl_s(settings.dedup_window_days))
    now = datetime.now(UTC)
    for tid, tenant in sorted(tenants.items()):
        try:
            state = state_from_ledger(tenant, [c for c, _ in charges[tid]], [e for e, _ in events[tid]])
        except LedgerGap as exc:
            raise FatalError(f"cannot rebuild from this ledger: {exc}") from None
        snap = store.snapshots({tid: []})[tid]
        if snap.unreadable is not None:
            diffs = [f"stored state unreadable ({snap.unreadable.cause})"]
        else:
            diffs = differences(snap.state, state)
        if not diffs:
            report.matching += 1
        else:
            report.differing[tid] = diffs
            if not check:
                store.admin.put_state(tid, state, snap.version + 1)
                report.rebuilt += 1
        if not check:
            _restore_calls(store, tid, charges[tid], ttl, now, report)
    return report


def _restore_calls(
    store: Store,
    tid: str,
    charges: list[tuple[dict[str, Any], bytes]],
    ttl: timedelta,
    now: datetime,
    report: Report,
) -> None:
    """Each call charged within the dedup window back in the seen index, with its source
    offset, in the epoch it was charged in: a redelivery of it is known again. Its records
    are on the ledger already, so none are kept."""
    calls = [
        (rec["call_id"], rec["source_partition"], rec["source_offset"], rec["charged_at"].timestamp())
        for rec, _ in charges
        if (rec["charged_at"] + ttl - now).total_seconds() >= 1
    ]
    restored = store.admin.restore_seen(tid, calls)
    report.calls_restored += restored
    report.calls_present += len(calls) - restored
