"""The API's tenant views: balance, transactions, funding, offboarding, auto-recharge,
reports and call authorization. Each is bound to its app's `ApiContext` by
`pipeline.control.api.register`."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from faust.web import Request, Response

from pipeline.adapters.avro.records import tenant_to_avro
from pipeline.control import api_input
from pipeline.control.api_base import COMMAND_ID, PRINCIPAL, Api
from pipeline.control.funding import REMOVE
from pipeline.control.openapi import NUMBER
from pipeline.errors import InputError, Refused
from pipeline.reports import finance
from processors.control import authorize
from processors.inputs import Rejected, check
from processors.model import Cdr
from processors.money import format_money

log = logging.getLogger(__name__)


class Balance(Api):
    async def get(self, request: Request, tenant_id: str) -> Response:
        book = self.ctx.control.book(tenant_id)
        state = self.ctx.control.current_state(book)
        cur = book.tenant.currency
        lots = state.lots
        return self.json(
            {
                "tenant_id": tenant_id,
                "currency": cur,
                "balance": format_money(state.balance),
                "deficit": format_money(state.deficit),
                "recharge_in_flight": state.recharge_in_flight,
                "lots": [
                    {
                        "lot_id": lot.lot_id,
                        "amount": format_money(lot.amount),
                        "remaining": format_money(lot.remaining),
                        "purchased_at": lot.purchased_at.isoformat(),
                        "expires_at": lot.expires_at.isoformat(),
                        "expired": lot.expired,
                    }
                    for lot in lots
                ],
            }
        )


class Transactions(Api):
    async def get(self, request: Request, tenant_id: str) -> Response:
        self.ctx.control.book(tenant_id)
        rows = self.ctx.control.history(tenant_id, api_input.limit(request.query))
        for row in rows:
            for key in ("amount", "balance_after", "requested"):
                if isinstance(row.get(key), int):
                    row[key] = format_money(row[key])
        return self.json({"tenant_id": tenant_id, "transactions": rows})


class TenantView(Api):
    async def delete(self, request: Request, tenant_id: str) -> Response:
        """Offboard the tenant (write scope): its calls stop being charged, the ledger
        gets the removal with the closing balance, nothing is deleted."""
        body = await self.body(request, optional=True)
        api_input.only(body, {"command_id", "requested_by"})
        book = self.ctx.control.book(tenant_id)
        self.ctx.control.check_active(book)
        command_id = api_input.text(body, "command_id", pattern=COMMAND_ID) or str(uuid.uuid4())
        record = {
            "command_id": command_id,
            "tenant_id": tenant_id,
            "kind": REMOVE,
            "amount": 0,
            "currency": book.tenant.currency,
            "requested_by": api_input.text(body, "requested_by") or PRINCIPAL.get().name,
            "at": self.ctx.control.now(),
        }
        refused = await self.kept(record)
        if refused is not None:
            return refused
        log.info("removal %s of tenant %s accepted from token %r", command_id, tenant_id, PRINCIPAL.get().name)
        return self.json({"command_id": command_id, "status": "accepted"}, status=202)


class Funds(Api):
    async def post(self, request: Request, tenant_id: str) -> Response:
        body = await self.body(request)
        api_input.only(body, {"amount", "command_id", "kind", "requested_by"})
        book = self.ctx.control.book(tenant_id)
        amount = api_input.money(body, "amount")
        kind = api_input.text(body, "kind") or ("partner" if book.tenant.channel == "csp" else "manual")
        if kind not in ("manual", "partner"):
            raise Refused(400, "kind: 'manual' or 'partner'")
        requested_by = api_input.text(body, "requested_by")
        self.ctx.control.check_funding(book, kind, amount)
        command_id = api_input.text(body, "command_id", pattern=COMMAND_ID) or str(uuid.uuid4())
        # A command id names one request: the same body again is the same request
        # (accepted, funded once); another body under it is a conflict, answered with
        # the original.
        asked = {"amount": format_money(amount), "kind": kind, "requested_by": requested_by}
        original = self.ctx.store.remember_command(tenant_id, command_id, asked)
        if original is not None and original != asked:
            return self.json(
                {"error": f"command_id {command_id!r} was used with another body", "original": original},
                status=409,
            )
        record = {
            "command_id": command_id,
            "tenant_id": tenant_id,
            "kind": kind,
            "amount": amount,
            "currency": book.tenant.currency,
            "requested_by": requested_by or PRINCIPAL.get().name,
            "at": self.ctx.control.now(),
        }
        refused = await self.kept(record)
        if refused is not None:
            return refused
        log.info(
            "funding %s of %s %s for tenant %s accepted from token %r",
            command_id,
            format_money(amount),
            book.tenant.currency,
            tenant_id,
            PRINCIPAL.get().name,
        )
        return self.json({"command_id": command_id, "status": "accepted"}, status=202)


class AutoRecharge(Api):
    async def get(self, request: Request, tenant_id: str) -> Response:
        ar = self.ctx.control.book(tenant_id).tenant.auto_recharge
        return self.json(
            {
                "enabled": bool(ar and ar.enabled),
                "amount": format_money(ar.amount) if ar else None,
                "trigger": format_money(ar.trigger) if ar else None,
            }
        )

    async def put(self, request: Request, tenant_id: str) -> Response:
        body = await self.body(request)
        api_input.only(body, {"enabled", "amount", "trigger"})
        enabled = api_input.boolean(body, "enabled")
        given = {  # turning it off keeps the amounts unless given
            k: format_money(api_input.money(body, k, positive=(k == "amount")))
            for k in ("amount", "trigger")
            if enabled or body.get(k) is not None
        }
        self.ctx.control.check_active(self.ctx.control.book(tenant_id))  # 404 nobody configured it, 410 removed
        raw = self.ctx.store.load_config(tenant_id)
        if raw is None:
            raise Refused(503, f"tenant {tenant_id!r}: configuration not materialized yet; try again")
        entry = _entry_from_config(raw)
        current = raw.get("auto_recharge") or {}
        settings_now = {
            k: format_money(int(current[k])) if current.get(k) is not None else "0" for k in ("amount", "trigger")
        }
        settings_now.update(given)
        entry["auto_recharge"] = {"enabled": enabled, **settings_now}
        if not enabled and settings_now["amount"] == "0":  # off, and never set: nothing to keep
            entry["auto_recharge"] = None
        try:
            record = tenant_to_avro(entry, self.ctx.control.now())
        except (ValueError, KeyError, TypeError) as exc:
            raise Refused(409 if "must be off" in str(exc) else 400, str(exc)) from None
        self.ctx.out.produce(
            self.ctx.settings.topic.tenant_config,
            key=tenant_id.encode(),
            value=self.ctx.codec.encode("tenant_config", record),
        )
        self.ctx.out.flush(10)
        shown = entry["auto_recharge"] or {"enabled": False, "amount": None, "trigger": None}
        return self.json({"status": "accepted", "auto_recharge": shown}, status=202)


class Report(Api):
    """The tenant's reports, byte for byte what `callcharge report` writes (read from
    the committed ledger on every request)."""

    kind = "usage"

    async def get(self, request: Request, tenant_id: str) -> Response:
        self.ctx.control.book(tenant_id)  # 404 for an unknown tenant
        want_json = "application/json" in request.headers.get("Accept", "")
        month_arg = request.query.get("month")
        loop = asyncio.get_running_loop()
        try:
            ledger = await loop.run_in_executor(None, finance.read_ledger, self.ctx.settings, tenant_id)
            month = finance.check_month(month_arg, ledger.tenants[tenant_id], self.ctx.control.now())
        except InputError as exc:  # a month that has not begun: a rule, not the document (422)
            raise Refused(422 if "in the future" in str(exc) else 400, f"month: {exc}") from None
        if self.kind == "statement":
            fmt = "json" if want_json else "text"
            text, _ = finance.statement_report(ledger, tenant_id, month, fmt)
            content_type = "application/json" if want_json else "text/plain"
        else:
            fmt = "json" if want_json else "csv"
            build = finance.usage_report if self.kind == "usage" else finance.pools_report
            text = build(ledger, tenant_id, month, fmt)
            content_type = "application/json" if want_json else "text/csv"
        ext = "json" if want_json else ("txt" if self.kind == "statement" else "csv")
        name = f"{self.kind}-{tenant_id}-{month}.{ext}"  # tenant ids hold no quote or path character
        headers = {
            "Content-Type": f"{content_type}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',  # a download keeps its name
        }
        return self.bytes(text.encode("utf-8"), headers=headers)


class Authorize(Api):
    async def post(self, request: Request, tenant_id: str) -> Response:
        body = await self.body(request)
        book = self.ctx.control.book(tenant_id)
        api_input.only(body, {"user_id", "number", "call_type", "caller"})
        api_input.text(body, "user_id", required=True)
        api_input.text(body, "number", required=True, pattern=NUMBER)
        call_type = api_input.text(body, "call_type") or "user_out"
        caller = api_input.text(body, "caller", pattern=NUMBER) or ""  # null and absent alike: no caller
        now = self.ctx.control.now()
        cdr = Cdr("authorize", tenant_id, body["user_id"], call_type, caller, body["number"], now, now, 0)
        checked = check(cdr)
        if isinstance(checked, Rejected):
            raise Refused(400, checked.detail)
        a = authorize(book, self.ctx.control.current_state(book), checked, self.ctx.rates)
        return self.json({"allowed": a.allowed, "bucket": a.bucket, "max_minutes": a.max_minutes, "reason": a.reason})


class UsageReport(Report):
    kind = "usage"


class PoolsReport(Report):
    kind = "pools"


class StatementReport(Report):
    kind = "statement"


def _entry_from_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored tenant_config record back to the tenants-file shape."""
    return {
        "tenant_id": raw["tenant_id"],
        "country": raw["country"],
        "currency": raw["currency"],
        "channel": raw["channel"],
        "time_zone": raw.get("time_zone"),
        "payment_method": raw.get("payment_method"),
        "users": raw["users"],
        "funding": [
            {"lot_id": f["lot_id"], "amount": format_money(int(f["amount"])), "purchased_at": f["purchased_at"]}
            for f in raw["funding"]
        ],
    }
