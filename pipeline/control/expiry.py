"""Lot expiry and service state: the timer forfeits what is left of a lot once its expiry
(and the allowed lateness) has passed, looking at a tenant's lots only when one can be
due, and says the service state of every tenant configured or changed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from pipeline.control.desk import Desk, Output
from pipeline.errors import RetriableError, StateUnreadable
from processors.charging import Book
from processors.ledger import TenantState, forfeit_due
from processors.model import Event

log = logging.getLogger(__name__)

LOOK_AGAIN_S = 300.0  # the longest the timer goes without reading a tenant's lots


class Expiry:
    def __init__(self, desk: Desk) -> None:
        self.d = desk
        self.directory, self.ledger, self.metrics = desk.directory, desk.ledger, desk.metrics
        self._announced: dict[str, Book] = {}  # tenants whose service state this process published
        # The timer's next look at a tenant's lots (monotonic): at its nearest expiry, at
        # most LOOK_AGAIN_S on, and at once after a balance event or a config change.
        self._next_look: dict[str, float] = {}

    def look_soon(self, tenant_id: str) -> None:
        """Lots may have come or gone (a balance event): look at the next tick."""
        self._next_look.pop(tenant_id, None)

    def expire_due(self) -> list[Output]:
        out: list[Output] = []
        now = self.d.now()
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
                    out += self.d.after_ledger(book, values)
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
                self.d.skipped(tid, "expiry")
        return out

    def announce(self) -> list[Output]:
        """The service state of every tenant configured (or changed) since this process
        last said it: a direct/csp tenant without credits is in the zero state from the
        moment it is loaded, with billable calls and toll-free numbers stopped."""
        out: list[Output] = []
        for tid, book in list(self.directory.books.items()):
            if self._announced.get(tid) is book:
                continue
            try:
                out.append(self.d.service_state(book))
            except StateUnreadable as exc:
                log.error("service state of %s: %s", tid, exc)
                continue
            self._announced[tid] = book
            self._next_look.pop(tid, None)
        return out


def _expiry(book: Book, now: datetime) -> Callable[[TenantState], list[Event]]:
    def apply(state: TenantState) -> list[Event]:
        return forfeit_due(book.tenant, state, book.lateness, wall=now)

    return apply
