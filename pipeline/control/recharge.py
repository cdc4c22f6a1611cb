"""Auto-recharge: a `recharge_requested` balance event paid through the payment gateway,
keyed by request id and attempt (a retry after a timeout never pays twice), credited as
a lot once paid, retried with backoff after a failure, abandoned after MAX_ATTEMPTS."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from pipeline.adapters import keyspace
from pipeline.control.desk import Desk, Output, text
from pipeline.control.gateway import PaymentGateway
from pipeline.control.notify import Notifier
from pipeline.errors import GatewayTimeout, Refused, RetriableError, StateUnreadable
from processors.charging import Book
from processors.control import retry_at
from processors.ledger import TenantState, fund
from processors.model import Event, event_id

log = logging.getLogger(__name__)

RETRY_ZSET = keyspace.RECHARGE_RETRY
MAX_ATTEMPTS = 5


class Recharge:
    def __init__(self, desk: Desk, gateway: PaymentGateway, notifier: Notifier) -> None:
        self.d = desk
        self.s, self.r, self.ledger, self.metrics = desk.s, desk.r, desk.ledger, desk.metrics
        self.gateway = gateway
        self.notifier = notifier

    def retry_due(self) -> list[Output]:
        """The timer's job: payments whose backoff has run out are tried again."""
        out: list[Output] = []
        now = self.d.now()
        for member in self.r.zrangebyscore(RETRY_ZSET, "-inf", now.timestamp()):
            tid, _, request_id = text(member).partition("|")
            rec = {text(k): text(v) for k, v in self.r.hgetall(keyspace.payment(tid, request_id)).items()}
            try:
                book = self.d.book(tid)
                if book.tenant.removed_at is not None:  # offboarded: no more payments
                    self.r.zrem(RETRY_ZSET, text(member))
                    continue
                out += self.pay(book, request_id, int(rec.get("amount", "0")))
            except Refused:
                continue
            except (StateUnreadable, RetriableError) as exc:  # this tenant waits; the others go on
                log.error("recharge %s: %s", request_id, exc)
            except Exception:
                self.d.skipped(tid, "recharge retry")
        self.metrics.recharges_pending.set(self.r.zcard(RETRY_ZSET))
        self.metrics.recharges_pending.set(self.r.zcard(RETRY_ZSET))
        return out

    def pay(self, book: Book, request_id: str, amount: int) -> list[Output]:
        tid = book.tenant.tenant_id
        key = keyspace.payment(tid, request_id)
        rec = {text(k): text(v) for k, v in self.r.hgetall(key).items()}
        now = self.d.now()
        if rec.get("status") == "succeeded":
            return self.credit(book, request_id, int(rec["amount"]), rec["payment_id"])
        if rec.get("status") == "abandoned":
            return []
        if rec.get("next_at") and float(rec["next_at"]) > now.timestamp():
            return []  # backing off: the timer retries when due
        attempt = int(rec.get("attempt", "1"))
        if rec.get("status") == "failed":
            attempt += 1  # a definite failure took no money: the next try is a new payment
        self.r.hset(key, mapping={"status": "pending", "attempt": attempt, "amount": amount, "tenant": tid})
        method = book.tenant.payment_method or "pm_card_ok"
        self.metrics.recharge_attempts.inc()
        started = time.perf_counter()
        try:
            result = self.gateway.charge(f"{request_id}:{attempt}", tid, amount, book.tenant.currency, method)
        except GatewayTimeout:
            self.metrics.gateway_seconds.observe(time.perf_counter() - started)
            self.metrics.failure("timeout")
            due = now + timedelta(seconds=self.s.recharge_backoff_s)
            self.r.hset(key, mapping={"next_at": due.timestamp()})
            self.r.zadd(RETRY_ZSET, {f"{tid}|{request_id}": due.timestamp()})
            return []  # outcome unknown: retried with the same key
        self.metrics.gateway_seconds.observe(time.perf_counter() - started)
        if result.succeeded:
            self.metrics.recharges_succeeded.inc()
            self.r.hset(key, mapping={"status": "succeeded", "payment_id": result.payment_id, "next_at": ""})
            self.r.zrem(RETRY_ZSET, f"{tid}|{request_id}")
            return self.credit(book, request_id, amount, result.payment_id)
        self.metrics.failure(result.reason)
        final = attempt >= MAX_ATTEMPTS
        if final:
            self.metrics.recharges_abandoned.inc()
        due = retry_at(now, attempt, self.s.recharge_backoff_s, self.s.recharge_backoff_cap_s)
        self.r.hset(
            key,
            mapping={
                "status": "abandoned" if final else "failed",
                "reason": result.reason,
                "next_at": "" if final else due.timestamp(),
            },
        )
        if final:
            self.r.zrem(RETRY_ZSET, f"{tid}|{request_id}")
            self.ledger.run(book, f"abandon:{request_id}", lambda st: _clear_in_flight(st, request_id), self.d.now())
        else:
            self.r.zadd(RETRY_ZSET, {f"{tid}|{request_id}": due.timestamp()})
        fields: tuple[tuple[str, Any], ...] = (
            ("request_id", request_id),
            ("amount", amount),
            ("reason", result.reason),
            ("attempt", attempt),
            ("next_attempt_at", "" if final else due.isoformat()),
        )
        state = self.ledger.peek(tid)
        event = Event(
            event_id(tid, f"{request_id}:{attempt}", "recharge_failed"),
            "recharge_failed",
            tid,
            now,
            state.balance if state else 0,
            fields,
        )
        out = [self.d.event_out(event, book.tenant.currency)]
        out += self.notifier.notify(book, event)
        return out

    def credit(self, book: Book, request_id: str, amount: int, payment_id: str) -> list[Output]:
        at = self.d.now()

        def apply(state: TenantState) -> list[Event]:
            events = fund(book.tenant, state, request_id, amount, at, at)
            _clear_in_flight(state, request_id)
            events.append(
                Event(
                    event_id(book.tenant.tenant_id, request_id, "recharge_succeeded"),
                    "recharge_succeeded",
                    book.tenant.tenant_id,
                    at,
                    state.balance,
                    (
                        ("request_id", request_id),
                        ("amount", amount),
                        ("invoice_id", f"INV-{request_id}"),
                        ("payment_id", payment_id),
                    ),
                )
            )
            return events

        values, _ = self.ledger.run(book, f"recharge:{request_id}", apply, self.d.now())
        return self.d.after_ledger(book, values)


def _clear_in_flight(state: TenantState, request_id: str) -> list[Event]:
    if state.recharge_in_flight == request_id:
        state.recharge_in_flight = None
    return []
