"""Funding commands: a tenant's balance funded (manual, invoice, a CSP's order), or the
tenant removed (offboarded). Each is applied once per command id through `LedgerOps`."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline.adapters.avro.records import tenant_record
from pipeline.control.desk import Desk, Output
from pipeline.errors import Refused
from processors.charging import Book
from processors.control import funding_refusal
from processors.ledger import TenantState, fund
from processors.model import Event, event_id
from processors.money import format_money, parse_money

log = logging.getLogger(__name__)

REMOVE = "remove"  # the funding command kind that offboards a tenant (amount 0)


class Funding:
    def __init__(self, desk: Desk) -> None:
        self.d = desk
        self.s, self.codec, self.directory, self.ledger = desk.s, desk.codec, desk.directory, desk.ledger
        self.topics = desk.topics

    def check_funding(self, book: Book, kind: str, amount: int) -> None:
        self.d.check_active(book)
        refusal = funding_refusal(
            book.tenant, kind, amount, parse_money(self.s.minimum_purchase), self.d.current_state(book).balance
        )
        if refusal is not None:
            raise Refused(*refusal)

    def handle_command(self, value: bytes) -> list[Output]:
        _, cmd = self.codec.decode(value, expect="funding_command")
        if cmd["kind"] == REMOVE:
            return self.remove(cmd)
        try:
            book = self.d.book(cmd["tenant_id"])
            self.d.check_active(book)
            self.check_funding(book, cmd["kind"], cmd["amount"])
            if cmd["currency"] != book.tenant.currency:
                raise Refused(400, f"currency {cmd['currency']} is not the tenant's {book.tenant.currency}")
        except Refused as exc:
            event = Event(
                event_id(cmd["tenant_id"], cmd["command_id"], "funding_refused"),
                "funding_refused",
                cmd["tenant_id"],
                self.d.now(),
                0,
                (("reason", exc.reason), ("amount", cmd["amount"])),
            )
            return [self.d.event_out(event, cmd.get("currency", ""))]
        at = self.d.now()
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
        return self.d.after_ledger(book, values)

    def remove(self, cmd: dict[str, Any]) -> list[Output]:
        """Offboard a tenant: its configuration is published again with `removed_at` (every
        charging worker then sends its CDRs to the DLQ as tenant_removed) and the ledger
        gets a `tenant_removed` event carrying the closing balance and deficit. Nothing is
        deleted: the ledger, statements and reports of the tenant stay readable. Idempotent
        on the command id; a tenant already removed keeps its first removal."""
        try:
            book = self.d.book(cmd["tenant_id"])
        except Refused:
            log.warning("removal %s of unknown tenant %s ignored", cmd["command_id"], cmd["tenant_id"])
            return []
        tenant = book.tenant
        if tenant.removed_at is not None:
            log.info("removal %s: tenant %s was already removed", cmd["command_id"], tenant.tenant_id)
            return []
        at = self.d.now()
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
