"""The control side: funding commands, auto-recharge through a payment gateway, lot expiry,
service state, admin notifications (topic + email) and transaction history.

Plain synchronous logic returning the records to produce; `pipeline/control/app.py` wires it
into faust agents and the timer, `pipeline/control/api.py` into web views. Each job is a
module of its own, sharing a `desk.Desk` (clients, clock, the records a balance change
leads to): `funding`, `recharge`, `expiry` (with the service state), `notify`, `history`.
`Control` routes the topics and the timer to them. Every step is idempotent because faust delivers at
least once: balance changes run through `LedgerOps` (once per operation id, events stored
and re-emitted), a payment is keyed by request id and attempt at the gateway, and a
notification is marked in Redis before and after it is sent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import event_from_avro
from pipeline.adapters.directory import TenantDirectory
from pipeline.adapters.metrics import ControlMetrics
from pipeline.config import Settings
from pipeline.control.clock import Clock, utc_now
from pipeline.control.desk import Desk, Output
from pipeline.control.expiry import Expiry
from pipeline.control.funding import Funding
from pipeline.control.gateway import PaymentGateway
from pipeline.control.history import History
from pipeline.control.ledger_ops import LedgerOps
from pipeline.control.notify import Notifier
from pipeline.control.recharge import Recharge
from pipeline.errors import Refused
from processors.charging import Book
from processors.ledger import TenantState

log = logging.getLogger(__name__)

__all__ = ["Control", "Output"]

# balance events after which the tenant's service state is said again
SERVICE_STATE_AFTER = frozenset(
    {"balance_zero", "balance_restored", "funds_added", "credits_expired", "recharge_succeeded"}
)


class Control:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        directory: TenantDirectory,
        ledger: LedgerOps,
        client: redis.Redis,
        gateway: PaymentGateway,
        clock: Clock = utc_now,
        metrics: ControlMetrics | None = None,
    ):
        self.desk = Desk(settings, codec, directory, ledger, client, clock, metrics)
        self.s, self.codec, self.directory, self.ledger = settings, codec, directory, ledger
        self.metrics, self.gateway, self.clock = self.desk.metrics, gateway, clock
        self.funding = Funding(self.desk)
        self.notifier = Notifier(self.desk)
        self.recharge = Recharge(self.desk, gateway, self.notifier)
        self.expiry = Expiry(self.desk)
        self.transactions = History(codec, client)

    # -- what the API asks -----------------------------------------------------------
    def now(self) -> datetime:
        return self.desk.now()

    def book(self, tenant_id: str) -> Book:
        return self.desk.book(tenant_id)

    def check_active(self, book: Book) -> None:
        self.desk.check_active(book)

    def check_funding(self, book: Book, kind: str, amount: int) -> None:
        self.funding.check_funding(book, kind, amount)

    def current_state(self, book: Book) -> TenantState:
        return self.desk.current_state(book)

    def history(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.transactions.latest(tenant_id, limit)

    # -- the topics ------------------------------------------------------------------
    def handle_command(self, value: bytes) -> list[Output]:
        return self.funding.handle_command(value)

    def handle_event(self, value: bytes) -> list[Output]:
        _, ev = self.codec.decode(value, expect="balance_event")
        try:
            book = self.book(ev["tenant_id"])
        except Refused:
            log.warning("event for unknown tenant %s", ev["tenant_id"])
            return []
        out: list[Output] = []
        self.expiry.look_soon(ev["tenant_id"])
        self.transactions.add_event(ev)
        kind = ev["type"]
        if kind == "recharge_requested" and book.tenant.removed_at is None:
            out += self.recharge.pay(book, ev["request_id"], ev["amount"])
        if kind in SERVICE_STATE_AFTER:
            out.append(self.desk.service_state(book))
        out += self.notifier.notify(book, event_from_avro(ev))
        return out

    def handle_charge(self, value: bytes) -> None:
        """Keep a short transaction history of money-moving charges (API)."""
        self.transactions.add_charge(value)

    # -- the timer -------------------------------------------------------------------
    def tick(self) -> list[Output]:
        """Emails to retry, payments to retry, service states to say, lots to expire."""
        self.notifier.retry_emails()
        out = self.recharge.retry_due()
        out += self.expiry.announce()
        out += self.expiry.expire_due()
        return out
