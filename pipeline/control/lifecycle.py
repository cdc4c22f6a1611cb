"""The control side: funding commands, auto-recharge through a payment gateway, lot expiry,
service state, admin notifications (topic + email) and transaction history.

Plain synchronous logic returning the records to produce; `pipeline/control/app.py` wires it
into faust agents, timers and web views. Every step is idempotent because faust delivers at
least once: balance changes run through `LedgerOps` (once per operation id, events stored
and re-emitted), a payment is keyed by request id and attempt at the gateway, and a
notification is marked in Redis before and after it is sent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import smtplib
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from pipeline.adapters import keyspace
from pipeline.adapters.codec import Codec
from pipeline.adapters.directory import TenantDirectory
from pipeline.adapters.metrics import ControlMetrics
from pipeline.adapters.records import event_from_avro, event_to_avro, tenant_record
from pipeline.config import Settings
from pipeline.control.clock import Clock, utc_now
from pipeline.control.gateway import PaymentGateway
from pipeline.control.ledger_ops import LedgerOps
from pipeline.errors import GatewayTimeout, Refused, RetriableError, StateUnreadable
from processors.charging import Book
from processors.control import funding_refusal, notifications, retry_at, service_state
from processors.ledger import TenantState, forfeit_due, fund, open_state
from processors.model import Event, event_id
from processors.money import format_money, parse_money

log = logging.getLogger(__name__)

Output = tuple[str, bytes, bytes]  # topic, key, value
RETRY_ZSET = keyspace.RECHARGE_RETRY
EMAIL_RETRY_ZSET = keyspace.EMAIL_RETRY
# Balance events kept in the transaction history, with the sign of their amount. Sign 0:
# no money moved; the history shows amount 0 and what was asked for as `requested`.
HISTORY_SIGN = {
    "funds_added": 1,
    "recharge_succeeded": 1,
    "funding_refused": 0,
    "credits_expired": -1,
    "recharge_failed": 0,
    "tenant_removed": 0,
}
MAX_ATTEMPTS = 5
LOOK_AGAIN_S = 300.0  # the longest the timer goes without reading a tenant's lots
REMOVE = "remove"  # the funding command kind that offboards a tenant (amount 0)


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
        self.s = settings
        self.codec = codec
        self.directory = directory
        self.ledger = ledger
        self.r = client
        self.gateway = gateway
        self.clock = clock
        self.metrics = metrics or ControlMetrics(CollectorRegistry())
        self.topics = settings.topic
        self._announced: dict[str, Book] = {}  # tenants whose service state this process published
        # The timer's next look at a tenant's lots (monotonic): at its nearest expiry, at
        # most LOOK_AGAIN_S on, and at once after a balance event or a config change.
        self._next_look: dict[str, float] = {}

    # -- time ------------------------------------------------------------------------
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

    # -- funding -----------------------------------------------------------------------
    def check_active(self, book: Book) -> None:
        removed = book.tenant.removed_at
        if removed is not None:
            raise Refused(410, f"tenant {book.tenant.tenant_id} was removed at {removed.isoformat()}")

    def check_funding(self, book: Book, kind: str, amount: int) -> None:
        self.check_active(book)
        refusal = funding_refusal(
            book.tenant, kind, amount, parse_money(self.s.minimum_purchase), self.current_state(book).balance
        )
        if refusal is not None:
            raise Refused(*refusal)

    def handle_command(self, value: bytes) -> list[Output]:
        _, cmd = self.codec.decode(value, expect="funding_command")
        if cmd["kind"] == REMOVE:
            return self.remove(cmd)
        try:
            book = self.book(cmd["tenant_id"])
            self.check_active(book)
            self.check_funding(book, cmd["kind"], cmd["amount"])
            if cmd["currency"] != book.tenant.currency:
                raise Refused(400, f"currency {cmd['currency']} is not the tenant's {book.tenant.currency}")
        except Refused as exc:
            event = Event(
                event_id(cmd["tenant_id"], cmd["command_id"], "funding_refused"),
                "funding_refused",
                cmd["tenant_id"],
                self.now(),
                0,
                (("reason", exc.reason), ("amount", cmd["amount"])),
            )
            return [self._event_out(event, cmd.get("currency", ""))]
        at = self.now()
        command_id = cmd["command_id"]

        def apply(state: TenantState) -> list[Event]:
            events = fund(book.tenant, state, command_id, cmd["amount"], at, at)
            for i, e in enumerate(events):
                if e.type == "funds_added":
                    events[i] = Event(
                        e.event_id,
                        e.type,
                        e.tenant_id,
                        e.at,
                        e.balance,
                        (*e.fields, ("invoice_id", f"INV-{command_id}"), ("kind", cmd["kind"])),
                    )
            return events

        values, _ = self.ledger.run(book, f"fund:{command_id}", apply, at)
        return self._after_ledger(book, values)

    # -- offboarding --------------------------------------------------------------------
    def remove(self, cmd: dict[str, Any]) -> list[Output]:
        """Offboard a tenant: its configuration is published again with `removed_at` (every
        charging worker then sends its CDRs to the DLQ as tenant_removed) and the ledger
        gets a `tenant_removed` event carrying the closing balance and deficit. Nothing is
        deleted: the ledger, statements and reports of the tenant stay readable. Idempotent
        on the command id; a tenant already removed keeps its first removal."""
        try:
            book = self.book(cmd["tenant_id"])
        except Refused:
            log.warning("removal %s of unknown tenant %s ignored", cmd["command_id"], cmd["tenant_id"])
            return []
        tenant = book.tenant
        if tenant.removed_at is not None:
            log.info("removal %s: tenant %s was already removed", cmd["command_id"], tenant.tenant_id)
            return []
        at = self.now()
        removed = dataclasses.replace(tenant, removed_at=at)
        # the tenant's own record as it is on the topic (its users stay in theirs)
        raw = self.directory.records.get(tenant.tenant_id) or tenant_record(tenant, at)
        config = self.codec.encode("tenant_config", {**raw, "removed_at": at, "updated_at": at})
        out: list[Output] = [(self.topics.tenant_config, tenant.tenant_id.encode(), config)]

        def apply(state: TenantState) -> list[Event]:
            fields: tuple[tuple[str, Any], ...] = (
                ("closing_deficit", format_money(state.deficit)),
                ("removed_by", cmd.get("requested_by") or ""),
                ("lots_left", sum(1 for lot in state.lots if not lot.expired and lot.remaining)),
            )
            eid = event_id(tenant.tenant_id, cmd["command_id"], "tenant_removed")
            return [Event(eid, "tenant_removed", tenant.tenant_id, at, state.balance, fields)]

        values, _ = self.ledger.run(book, f"remove:{cmd['command_id']}", apply, at)
        out += [(self.topics.balance_events, tenant.tenant_id.encode(), v) for v in values]
        self.directory.books[tenant.tenant_id] = dataclasses.replace(book, tenant=removed)
        log.info("tenant %s removed (command %s); closing balance %s", tenant.tenant_id, cmd["command_id"], at)
        return out

    # -- events --------------------------------------------------------------------------
    def handle_event(self, value: bytes) -> list[Output]:
        _, ev = self.codec.decode(value, expect="balance_event")
        try:
            book = self.book(ev["tenant_id"])
        except Refused:
            log.warning("event for unknown tenant %s", ev["tenant_id"])
            return []
        out: list[Output] = []
        self._next_look.pop(ev["tenant_id"], None)  # lots may have come or gone: look at the next tick
        self._history(ev)
        kind = ev["type"]
        if kind == "recharge_requested" and book.tenant.removed_at is None:
            out += self.pay(book, ev["request_id"], ev["amount"])
        if kind in ("balance_zero", "balance_restored", "funds_added", "credits_expired", "recharge_succeeded"):
            out.append(self._service_state(book))
        out += self.notify(book, event_from_avro(ev))
        return out

    def handle_charge(self, value: bytes) -> None:
        """Keep a short transaction history of money-moving charges (API)."""
        _, c = self.codec.decode(value, expect="charge")
        if c["amount"]:
            doc = {
                "type": "charge",
                "id": c["call_id"],
                "at": c["end_time"].isoformat(),
                "amount": -c["amount"],
                "classification": c["classification"],
                "balance_after": c["balance_after"],
                "lots": [d["lot_id"] for s in c["segments"] for d in s["lots"]],
            }
            self._add_history(c["tenant_id"], doc, c["end_time"])

    # -- auto-recharge -------------------------------------------------------------------
    def pay(self, book: Book, request_id: str, amount: int) -> list[Output]:
        tid = book.tenant.tenant_id
        key = keyspace.payment(tid, request_id)
        rec = {_text(k): _text(v) for k, v in self.r.hgetall(key).items()}
        now = self.now()
        if rec.get("status") == "succeeded":
            return self._credit(book, request_id, int(rec["amount"]), rec["payment_id"])
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
            return self._credit(book, request_id, amount, result.payment_id)
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
            self.ledger.run(book, f"abandon:{request_id}", lambda st: _clear_in_flight(st, request_id), self.now())
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
        out = [self._event_out(event, book.tenant.currency)]
        out += self.notify(book, event)
        return out

    def _credit(self, book: Book, request_id: str, amount: int, payment_id: str) -> list[Output]:
        at = self.now()

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

        values, _ = self.ledger.run(book, f"recharge:{request_id}", apply, self.now())
        return self._after_ledger(book, values)

    # -- timers ------------------------------------------------------------------------
    def tick(self) -> list[Output]:
        out: list[Output] = []
        now = self.now()
        self.retry_emails()
        for member in self.r.zrangebyscore(RETRY_ZSET, "-inf", now.timestamp()):
            tid, _, request_id = _text(member).partition("|")
            rec = {_text(k): _text(v) for k, v in self.r.hgetall(keyspace.payment(tid, request_id)).items()}
            try:
                book = self.book(tid)
                if book.tenant.removed_at is not None:  # offboarded: no more payments
                    self.r.zrem(RETRY_ZSET, _text(member))
                    continue
                out += self.pay(book, request_id, int(rec.get("amount", "0")))
            except Refused:
                continue
            except (StateUnreadable, RetriableError) as exc:  # this tenant waits; the others go on
                log.error("recharge %s: %s", request_id, exc)
            except Exception:
                self._skipped(tid, "recharge retry")
        self.metrics.recharges_pending.set(self.r.zcard(RETRY_ZSET))
        out += self.announce()
        mono = time.monotonic()
        for tid, book in list(self.directory.books.items()):
            if book.tenant.removed_at is not None:  # offboarded: its lots are not worked on
                continue
            if self._next_look.get(tid, 0.0) > mono:  # nothing can be due before then
                continue
            try:
                state = self.ledger.peek(tid)
                self._next_look[tid] = mono + LOOK_AGAIN_S
                if state is None:
                    continue
                clock = max(now, state.watermark) if state.watermark else now
                due = [lot.lot_id for lot in state.lots if not lot.expired and lot.expires_at + book.lateness <= clock]
                if due:
                    values, _ = self.ledger.run(book, "expire:" + ",".join(due), _expiry(book, now), now)
                    self.metrics.lots_expired.inc(len(due))
                    out += self._after_ledger(book, values)
                    self._next_look.pop(tid, None)
                else:
                    nearest = min(
                        (lot.expires_at + book.lateness for lot in state.lots if not lot.expired), default=None
                    )
                    if nearest is not None:
                        wait = (nearest - clock).total_seconds()
                        self._next_look[tid] = mono + max(0.0, min(LOOK_AGAIN_S, wait))
            except (StateUnreadable, RetriableError) as exc:
                log.error("expiry of %s: %s", tid, exc)
            except Exception:
                self._skipped(tid, "expiry")
        return out

    def _skipped(self, tenant_id: str, job: str) -> None:
        """The timer skips a tenant it cannot process (its arithmetic, a record it cannot
        encode, a bug): logged with the traceback and counted
        (`callcharge_control_errors_total{topic="timer"}`), every other tenant goes on."""
        log.exception("timer: %s of tenant %s failed; skipped this tick, the other tenants go on", job, tenant_id)
        self.metrics.errors.labels("timer").inc()

    def announce(self) -> list[Output]:
        """The service state of every tenant configured (or changed) since this process
        last said it: a direct/csp tenant without credits is in the zero state from the
        moment it is loaded, with billable calls and toll-free numbers stopped."""
        out: list[Output] = []
        for tid, book in list(self.directory.books.items()):
            if self._announced.get(tid) is book:
                continue
            try:
                out.append(self._service_state(book))
            except StateUnreadable as exc:
                log.error("service state of %s: %s", tid, exc)
                continue
            self._announced[tid] = book
            self._next_look.pop(tid, None)
        return out

    # -- notifications -------------------------------------------------------------------
    def notify(self, book: Book, event: Event) -> list[Output]:
        out: list[Output] = []
        for n in notifications(book.tenant, event):
            mark = keyspace.notified(n.tenant_id, n.notification_id)
            if self.r.get(mark) == b"sent":
                continue
            self.r.set(mark, "pending", ex=400 * 86400, nx=True)
            record = {
                "notification_id": n.notification_id,
                "tenant_id": n.tenant_id,
                "event_id": n.event_id,
                "kind": n.kind,
                "recipient": n.recipient,
                "role": n.role,
                "subject": n.subject,
                "body": n.body,
                "at": event.at,
            }
            out.append((self.topics.notifications, n.tenant_id.encode(), self.codec.encode("notification", record)))
            self._deliver(mark, n.recipient, n.subject, n.body, n.notification_id)
        return out

    def _deliver(self, mark: str, to: str, subject: str, body: str, notification_id: str) -> None:
        """Email one notification; on SMTP trouble it stays pending and the timer retries."""
        try:
            self._send_email(notification_id, to, subject, body, lambda: self.r.set(mark, "sent", ex=400 * 86400))
        except (OSError, smtplib.SMTPException) as exc:
            self.metrics.emails.labels("failed").inc()
            log.warning("email %s to admin not delivered (%s); will retry", notification_id, type(exc).__name__)
            doc = json.dumps({"mark": mark, "to": to, "subject": subject, "body": body, "id": notification_id})
            self.r.zadd(EMAIL_RETRY_ZSET, {doc: self.now().timestamp() + self.s.recharge_backoff_s})
            return
        self.metrics.emails.labels("sent").inc()

    def retry_emails(self) -> None:
        for raw in self.r.zrangebyscore(EMAIL_RETRY_ZSET, "-inf", self.now().timestamp()):
            self.r.zrem(EMAIL_RETRY_ZSET, _text(raw))
            doc = json.loads(_text(raw))
            if self.r.get(doc["mark"]) != b"sent":
                self._deliver(doc["mark"], doc["to"], doc["subject"], doc["body"], doc["id"])

    def _send_email(
        self, notification_id: str, to: str, subject: str, body: str, sent: Callable[[], object] = lambda: None
    ) -> None:
        """Send one email; `sent` runs as soon as the server has accepted it, before the
        session's QUIT: a crash between the two would mail it again (the Message-ID stays
        the notification's, so a mail system can tell the copy)."""
        msg = EmailMessage()
        msg["From"] = self.s.smtp_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = f"<{notification_id.replace(':', '.')}@callcharge>"
        msg.set_content(body)
        with smtplib.SMTP(self.s.smtp_host, self.s.smtp_port, timeout=10) as smtp:
            smtp.send_message(msg)
            sent()

    # -- helpers -------------------------------------------------------------------------
    def _after_ledger(self, book: Book, values: list[bytes]) -> list[Output]:
        key = book.tenant.tenant_id.encode()
        out: list[Output] = [(self.topics.balance_events, key, v) for v in values]
        out.append(self._service_state(book))
        return out

    def _service_state(self, book: Book) -> Output:
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

    def _event_out(self, event: Event, currency: str) -> Output:
        return (
            self.topics.balance_events,
            event.tenant_id.encode(),
            self.codec.encode("balance_event", event_to_avro(event, currency)),
        )

    def _history(self, ev: dict[str, Any]) -> None:
        sign = HISTORY_SIGN.get(ev["type"])
        if sign is not None:
            amount = ev.get("amount") or 0
            doc = {
                "type": ev["type"],
                "id": ev["event_id"],
                "at": ev["at"].isoformat(),
                "amount": amount * sign,
                "balance_after": ev["balance"],
                "lot_id": ev.get("lot_id"),
                **ev.get("attributes", {}),
            }
            if sign == 0 and amount:
                doc["requested"] = amount
            self._add_history(ev["tenant_id"], doc, ev["at"])

    def _add_history(self, tenant_id: str, doc: dict[str, Any], at: datetime) -> None:
        key = keyspace.history(tenant_id)
        self.r.zadd(key, {json.dumps(doc, sort_keys=True, default=str): at.timestamp()})
        self.r.zremrangebyrank(key, 0, -5001)

    def current_state(self, book: Book) -> TenantState:
        """The tenant's state as the API shows it: Redis state plus configured lots not yet folded in."""
        stored = self.ledger.peek(book.tenant.tenant_id)
        state, _ = open_state(book.tenant, stored.copy() if stored is not None else None, upto=self.now())
        return state

    def history(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.r.zrevrange(keyspace.history(tenant_id), 0, limit - 1)
        return [json.loads(_text(r)) for r in rows]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _expiry(book: Book, now: datetime) -> Callable[[TenantState], list[Event]]:
    def apply(state: TenantState) -> list[Event]:
        return forfeit_due(book.tenant, state, book.lateness, wall=now)

    return apply


def _clear_in_flight(state: TenantState, request_id: str) -> list[Event]:
    if state.recharge_in_flight == request_id:
        state.recharge_in_flight = None
    return []
