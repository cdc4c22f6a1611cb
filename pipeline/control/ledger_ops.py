"""Balance operations outside the charging hot path (funding, recharge credit, expiry):
the same fold and the same Lua compare-and-set as the charging worker, idempotent on an
operation id whose emitted events are stored with it and re-emitted on a retry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import event_to_avro
from pipeline.adapters.store import EVENTS, Snapshot, Store, StoredCall
from pipeline.errors import RetriableError
from processors.charging import Book
from processors.ledger import TenantState, open_state
from processors.model import Event

TTL_S = 400 * 86400


class LedgerOps:
    def __init__(self, store: Store, codec: Codec):
        self.store = store
        self.codec = codec

    def run(
        self, book: Book, op_id: str, fn: Callable[[TenantState], list[Event]], at: datetime
    ) -> tuple[list[bytes], bool]:
        """Apply `fn` to the tenant's state once per op_id: (encoded events, newly applied)."""
        currency = book.tenant.currency

        def records(state: TenantState) -> list[tuple[int, bytes]]:
            return [(EVENTS, self.codec.encode("balance_event", event_to_avro(e, currency))) for e in fn(state)]

        out, new = self.apply(book, op_id, records, at)
        return [v for _, v in out], new

    def apply(
        self, book: Book, op_id: str, fn: Callable[[TenantState], list[tuple[int, bytes]]], at: datetime
    ) -> tuple[list[tuple[int, bytes]], bool]:
        """Apply `fn` (which folds into the state and returns its encoded records, as
        (topic code, value)) once per op_id: (records, newly applied). A retry after the
        operation was applied gets the records it stored, byte for byte."""
        tid = book.tenant.tenant_id
        currency = book.tenant.currency
        for _ in range(50):
            snap = self._snapshot(tid, [op_id])
            if snap.unreadable is not None:  # never fold onto a state that is not there
                raise RetriableError(str(snap.unreadable))
            prior = snap.calls.get(op_id)
            if prior is not None:
                return list(prior.records), False
            state = snap.state.copy() if snap.state is not None else TenantState()
            _, opening = open_state(book.tenant, state, upto=at)  # configured lots bought by now
            records = [(EVENTS, self.codec.encode("balance_event", event_to_avro(e, currency))) for e in opening]
            records += fn(state)
            status, _ = self.store.apply(
                [(tid, snap.version, state, {op_id: StoredCall(-1, -1, tuple(records)).pack()})], keep_s=TTL_S
            )[0]
            if status == 1:
                return records, True
        raise RetriableError(f"tenant {tid} state kept changing under operation {op_id}")

    def peek(self, tenant_id: str) -> TenantState | None:
        """The tenant's state without its pools (none of the control worker's rules reads
        them): what a read costs does not grow with the tenant's users."""
        snap = self._snapshot(tenant_id, [])
        if snap.unreadable is not None:
            raise snap.unreadable
        return snap.state

    def _snapshot(self, tenant_id: str, op_ids: list[str]) -> Snapshot:
        """State and version, no pool fields: a balance operation draws no pool, and the
        store writes only the pools a state drew (`pools_dirty`), so none is lost."""
        return self.store.read({tenant_id: op_ids}, {tenant_id: []}, {})[0][tenant_id]
