"""Steps 3 to 5 of a batch: read each tenant's state, fold its calls, apply the result to
Redis with a compare-and-set (`pipeline.adapters.store`, `lua/apply*.lua`).

A tenant's state this worker wrote last is kept in memory (`StateCache`) and step 3 skips
reading it: step 5's compare-and-set on the version is what makes that safe. Any other
write (the control worker's funding, a rebuild) moved the version, so the apply answers
CONFLICT and the tenant is read and folded again."""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Protocol

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.metrics import ChargingMetrics
from pipeline.adapters.store import Snapshot
from pipeline.charging.fold import Fold
from pipeline.charging.intake import Directory, Item
from pipeline.charging.runtime import Faults
from pipeline.config import Settings
from processors.charging import pool_fields_of
from processors.inputs import DeadLetterReason, Rejected
from processors.ledger import TenantState
from processors.rating import RateCard

log = logging.getLogger(__name__)

MAX_CAS_RETRIES = 20
STATE_CACHE_TENANTS = 50_000  # states kept from this worker's own writes (least recently used go)

Write = tuple[str, int, TenantState, dict[str, bytes]]  # tenant, expected version, state, {call id: result}


class StateStore(Protocol):
    """What the worker asks of the Redis store (`pipeline.adapters.store.Store`)."""

    def snapshots(self, wanted: dict[str, list[str]]) -> dict[str, Snapshot]: ...
    def read(
        self, wanted: dict[str, list[str]], pools: dict[str, list[str]], topups: dict[str, list[str]]
    ) -> tuple[dict[str, Snapshot], dict[str, dict[str, int]]]: ...
    def apply(self, writes: list[Write]) -> list[tuple[int, int]]: ...
    def forget_outputs(self, calls: dict[str, list[str]]) -> None: ...
    def drop_committed_outputs(self) -> None: ...


class Status(IntEnum):
    """What the apply script answers per tenant (with a value: see each)."""

    WRITTEN = 1  # state and calls recorded; the value is the new version
    CONFLICT = 0  # another writer moved the version; the value is the current one
    SEEN = -1  # a call id of the batch is already recorded (a redelivery or a duplicate)


Loaded = set[str] | None  # the pool fields a kept state holds as Redis has them; None: every one


class StateCache:
    """tenant -> (version, state, the pools it holds) as this worker last wrote them, least
    recently used dropped past `limit`. Cleared on every assignment change and every Redis
    error. A state holds the pools its calls could draw since it was read (`pool_fields`),
    not every pool of the tenant: the next batch reads the ones it lacks."""

    def __init__(self, limit: int = STATE_CACHE_TENANTS) -> None:
        self.limit = limit
        self._kept: OrderedDict[str, tuple[int, TenantState, Loaded]] = OrderedDict()

    def __contains__(self, tenant_id: str) -> bool:
        return tenant_id in self._kept

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, tenant_id: str) -> tuple[int, TenantState, Loaded]:
        return self._kept[tenant_id]

    def put(self, tenant_id: str, version: int, state: TenantState, loaded: Loaded) -> None:
        self._kept[tenant_id] = (version, state, loaded)
        self._kept.move_to_end(tenant_id)
        if len(self._kept) > self.limit:
            self._kept.popitem(last=False)

    def drop(self, tenant_id: str) -> bool:
        return self._kept.pop(tenant_id, None) is not None

    def clear(self) -> None:
        self._kept.clear()


class StateApply:
    """Steps 3-5 for a batch: every tenant's calls charged against its state, atomically."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        store: StateStore,
        rates: RateCard,
        metrics: ChargingMetrics,
        directory: Directory,
        faults: Faults,
    ) -> None:
        self.codec = codec
        self.store = store
        self.rates = rates
        self.metrics = metrics
        self.directory = directory
        self.faults = faults
        self.window_days = settings.dedup_window_days
        self._window = timedelta(days=settings.dedup_window_days)
        self._skew = timedelta(seconds=settings.clock_skew_s)
        self.folder = Fold(codec, rates, metrics, settings.dedup_window_days)  # step 4
        self.states = StateCache()
        self._loaded: dict[str, Loaded] = {}  # this attempt's tenants: the pools their states hold
        self._batch = 0
        self._applier = ThreadPoolExecutor(1, thread_name_prefix="redis-apply")

    def close(self) -> None:
        self._applier.shutdown()

    def charge(self, items: list[Item], batch: int, while_applying: Callable[[], None] | None = None) -> None:
        """Charge the batch's CDRs: sets each Item's records (or its reject). A tenant that
        cannot be read, or whose state keeps moving under us, has its CDRs rejected; every
        other tenant goes on. `while_applying` runs beside the Redis round trip."""
        self._batch = batch
        pending: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            if item.cdr is not None:
                pending[item.cdr.tenant_id].append(item)
        with_calls: set[str] = set()  # tenants whose batch holds a call id seen before
        now = datetime.now(UTC)  # charged_at of this batch's charges
        window = (now - self._window, now + self._skew)  # the start times admitted (oldest, latest)
        for _attempt in range(MAX_CAS_RETRIES):
            if not pending:
                return
            snaps, wanted = self._read(pending, with_calls)  # step 3
            writes = self._fold_all(pending, snaps, now, window)  # step 4
            results = self._apply(writes, while_applying)  # step 5
            while_applying = None
            pending = self._settle(pending, writes, results, wanted, with_calls)
        # A tenant whose state keeps changing under us (another writer, a hand edit) is set
        # aside: its CDRs wait in the DLQ to be re-driven, every other tenant goes on.
        for tid, its in pending.items():
            log.error("tenant %s: state kept changing under us %d times; its CDRs go to the DLQ", tid, MAX_CAS_RETRIES)
            for item in its:
                item.reject = Rejected(
                    DeadLetterReason.STATE_CONFLICT,
                    f"tenant {tid}: state kept changing during {MAX_CAS_RETRIES} attempts; "
                    "re-drive once a single writer remains",
                )

    def _read(
        self, pending: dict[str, list[Item]], with_calls: set[str]
    ) -> tuple[dict[str, Snapshot], dict[str, list[str]]]:
        """Step 3: one Redis round trip for the tenants not kept (and, for a tenant whose
        batch holds a call id already recorded, the stored result of each of its calls).
        Of a tenant's pools only those its calls can draw are read (`pool_fields`): what a
        read costs grows with the batch, not with the tenant's users."""
        snaps: dict[str, Snapshot] = {}
        wanted: dict[str, list[str]] = {}
        pools: dict[str, list[str]] = {}
        topups: dict[str, list[str]] = {}
        self._loaded = {}
        for t, its in pending.items():
            book = self.directory.get(t)
            assert book is not None
            needed = pool_fields_of(book, [i.cdr for i in its if i.cdr is not None])
            if t in self.states and t not in with_calls:
                version, state, loaded = self.states.get(t)
                snaps[t] = Snapshot(t, version, state, {})
                missing = needed - loaded if loaded is not None else set()
                if missing:
                    topups[t] = sorted(missing)
                    loaded.update(missing)  # type: ignore[union-attr]
                self._loaded[t] = loaded
            else:
                wanted[t] = [i.cdr.call_id for i in its if i.cdr] if t in with_calls else []
                pools[t] = sorted(needed)
        if wanted or topups:
            fresh, topped = self.store.read(wanted, pools, topups)
            snaps.update(fresh)
            for t, found in topped.items():
                kept = snaps[t].state
                assert kept is not None
                kept.pool_used.update(found)
            for t in wanted:
                read = snaps[t].state
                # a state written before pools had fields of their own holds all of them
                self._loaded[t] = None if read is not None and read.pools_dirty else set(pools[t])
        self.faults.after(3, self._batch)
        return snaps, wanted

    def _fold_all(
        self,
        pending: dict[str, list[Item]],
        snaps: dict[str, Snapshot],
        now: datetime,
        window: tuple[datetime, datetime],
    ) -> list[Write]:
        """Step 4 for every tenant; a tenant whose state cannot be read leaves `pending`."""
        writes = []
        for tid, its in list(pending.items()):
            snap = snaps[tid]
            if snap.unreadable is not None:
                # No balance to charge against: this tenant's CDRs wait in the DLQ for
                # `callcharge rebuild` and a redrive; every other tenant goes on.
                log.error("%s", snap.unreadable)
                for item in its:
                    item.reject = Rejected(
                        DeadLetterReason.STATE_UNREADABLE, f"{snap.unreadable}; then re-drive this dead letter"
                    )
                del pending[tid]
                continue
            book = self.directory.get(tid)
            assert book is not None
            folded = self.folder.tenant(
                book, snap.state, snap.calls, its, now, window, functools.partial(self._reread, tid)
            )
            if folded is None:  # its state could not be read again: as above
                del pending[tid]
                continue
            writes.append((tid, snap.version, *folded))
        self.faults.after(4, self._batch)
        return writes

    def _apply(self, writes: list[Write], while_applying: Callable[[], None] | None) -> list[tuple[Status, int]]:
        """Step 5: one round trip (the worker's longest wait), with other work beside it."""
        if while_applying is None:
            results = self.store.apply(writes)
        else:
            pending_apply = self._applier.submit(self.store.apply, writes)
            try:
                while_applying()
            finally:
                results = pending_apply.result()
        return [(Status(status), value) for status, value in results]

    def _settle(
        self,
        pending: dict[str, list[Item]],
        writes: list[Write],
        results: list[tuple[Status, int]],
        wanted: dict[str, list[str]],
        with_calls: set[str],
    ) -> dict[str, list[Item]]:
        """Keep what was written; what was not is read and folded again (returned)."""
        retry = {}
        for (tid, _, state, _), (status, value) in zip(writes, results, strict=True):
            if status is Status.WRITTEN:
                state.pools_dirty.clear()  # its drawn pools are in Redis now
                self.states.put(tid, value, state, self._loaded.get(tid, set()))
                continue
            if self.states.drop(tid) and tid not in wanted:
                self.metrics.state_cache_stale.inc()  # another writer moved it: read it again
            elif status is Status.CONFLICT:
                self.metrics.cas_conflicts.inc()
            retry[tid] = pending[tid]
            if status is Status.SEEN:
                with_calls.add(tid)
        self.faults.after(5, self._batch)
        return retry

    def _reread(self, tenant_id: str) -> Snapshot:
        """The tenant's state as Redis has it (the fold's retry after an unencodable call)."""
        self.states.drop(tenant_id)
        return self.store.snapshots({tenant_id: []})[tenant_id]
