"""What every job of the control worker shares: its clients, the clock, and the records
a balance change leads to (balance events and the tenant's service state)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import event_to_avro
from pipeline.adapters.directory import TenantDirectory
from pipeline.adapters.metrics import ControlMetrics
from pipeline.config import Settings
from pipeline.control.clock import Clock, utc_now
from pipeline.control.ledger_ops import LedgerOps
from pipeline.errors import Refused
from processors.charging import Book
from processors.control import service_state
from processors.ledger import TenantState, open_state
from processors.model import Event

log = logging.getLogger(__name__)

Output = tuple[str, bytes, bytes]  # topic, key, value


class Desk:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        directory: TenantDirectory,
        ledger: LedgerOps,
        client: redis.Redis,
        clock: Clock = utc_now,
        metrics: ControlMetrics | None = None,
    ):
        self.s = settings
        self.codec = codec
        self.directory = directory
        self.ledger = ledger
        self.r = client
        self.clock = clock
        self.metrics = metrics or ControlMetrics(CollectorRegistry())
        self.topics = settings.topic

    def now(self) -> datetime:
        """The injected clock (the wall clock in production, a fake one in tests)."""
        return self.clock()

    def book(self, tenant_id: str) -> Book:
        book = self.directory.get(tenant_id)
        if book is None:
            self.directory.catch_up(timeout=5)
            book = self.directory.get(tenant_id)
        if book is None:
            raise Refused(404, f"unknown tenant {tenant_id!r}")
        return book

    def check_active(self, book: Book) -> None:
        removed = book.tenant.removed_at
        if removed is not None:
            raise Refused(410, f"tenant {book.tenant.tenant_id} was removed at {removed.isoformat()}")

    def current_state(self, book: Book) -> TenantState:
        """The tenant's state as the API shows it: Redis state plus configured lots not yet folded in."""
        stored = self.ledger.peek(book.tenant.tenant_id)
        state, _ = open_state(book.tenant, stored.copy() if stored is not None else None, upto=self.now())
        return state

    def skipped(self, tenant_id: str, job: str) -> None:
        """The timer skips a tenant it cannot process (its arithmetic, a record it cannot
        encode, a bug): logged with the traceback and counted
        (`callcharge_control_errors_total{topic="timer"}`), every other tenant goes on."""
        log.exception("timer: %s of tenant %s failed; skipped this tick, the other tenants go on", job, tenant_id)
        self.metrics.errors.labels("timer").inc()

    def after_ledger(self, book: Book, values: list[bytes]) -> list[Output]:
        key = book.tenant.tenant_id.encode()
        out: list[Output] = [(self.topics.balance_events, key, v) for v in values]
        out.append(self.service_state(book))
        return out

    def service_state(self, book: Book) -> Output:
        state = self.current_state(book)  # configured lots bought by now count
        ss = service_state(book.tenant, state)
        record = {
            "tenant_id": book.tenant.tenant_id,
            "billable_calls": ss.billable_calls,
            "tollfree_numbers": ss.tollfree_numbers,
            "balance": state.balance,
            "currency": book.tenant.currency,
            "reason": ss.reason,
            "at": self.now(),
        }
        return (self.topics.service_state, book.tenant.tenant_id.encode(), self.codec.encode("service_state", record))

    def event_out(self, event: Event, currency: str) -> Output:
        return (
            self.topics.balance_events,
            event.tenant_id.encode(),
            self.codec.encode("balance_event", event_to_avro(event, currency)),
        )


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
