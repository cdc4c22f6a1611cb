"""The control worker's HTTP API: the bearer-token views on the faust app's web server,
/health (readiness), /livez, /openapi.json and /metrics.

Every view is registered by `register` on the app `pipeline.control.app.build_app` builds;
the rules they apply are the Control's (`pipeline.control.lifecycle`) and the pure core's.
Errors are the documented JSON `{"error": ...}` (`json_errors` covers aiohttp's own)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from typing import Any, cast

import faust
from aiohttp import web as aiohttp_web
from confluent_kafka import KafkaException, Producer
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.adapters import reports, strict_json
from pipeline.adapters.health import CHECK_TIMEOUT_S, Readiness
from pipeline.adapters.records import tenant_to_avro
from pipeline.config import Settings
from pipeline.control import api_input, openapi
from pipeline.control.funding import REMOVE
from pipeline.control.lifecycle import Control
from pipeline.control.openapi import NUMBER
from pipeline.control.tokens import Principal, Tokens
from pipeline.errors import InputError, Refused, StateUnreadable
from processors.control import authorize
from processors.inputs import Rejected, canonical_id, check
from processors.model import Cdr
from processors.money import format_money
from processors.rating import RateCard

log = logging.getLogger(__name__)
# How long a command waits for the broker's acknowledgement before the API answers 503. The
# record may still be delivered later: the same command_id again is applied once.
ACK_WAIT_S = 5.0
# The token of the request being served (set per request task by Api.dispatch).
PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
COMMAND_ID = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}"


@aiohttp_web.middleware
async def json_errors(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
    """Every error the API answers is the documented JSON `{"error": ...}`, also the ones
    aiohttp raises itself (404 no such route, 405 method, 413 too large) and a crash (500,
    logged with its traceback)."""
    try:
        return cast(aiohttp_web.StreamResponse, await handler(request))
    except aiohttp_web.HTTPException as exc:
        if exc.status < 400:
            raise
        return aiohttp_web.json_response(
            {"error": exc.reason},
            status=exc.status,
            headers={"Allow": exc.headers.get("Allow", "")} if exc.status == 405 else None,
        )
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return aiohttp_web.json_response({"error": "internal error: see the control worker's log"}, status=500)


def register(app: faust.App, settings: Settings, control: Control, rates: RateCard, out: Producer) -> None:
    """Every view of the API on `app`'s web server."""
    codec = control.codec
    store = control.ledger.store
    directory = control.directory
    metrics = control.metrics
    registry = metrics.registry
    t = settings.topic
    tokens = Tokens.load(settings.api_tokens_file, settings.api_token)

    class Api(View):
        async def dispatch(self, request: Request) -> Response:
            started = time.perf_counter()
            resource = getattr(getattr(request.match_info, "route", None), "resource", None)
            route = getattr(resource, "canonical", "other")
            response = await self._dispatch(request)
            metrics.api.labels(route, str(response.status)).inc()
            metrics.api_seconds.labels(route).observe(time.perf_counter() - started)
            return response

        async def _dispatch(self, request: Request) -> Response:
            who = tokens.who(request.headers.get("Authorization", ""))
            if who is None:
                return self.json({"error": "missing or wrong bearer token"}, status=401)
            tenant_id = request.match_info.get("tenant_id", "")
            if tenant_id:  # a GUID in any letter case is the same tenant: the views see one form
                tenant_id = canonical_id(tenant_id)
                cast(dict[str, str], request.match_info)["tenant_id"] = tenant_id  # aiohttp's is a dict
            scope = "read" if request.method in ("GET", "HEAD") else "write"
            if not who.may(tenant_id, scope):
                denied = f"token {who.name!r} has no {scope} access to tenant {tenant_id!r}"
                return self.json({"error": denied}, status=403)
            PRINCIPAL.set(who)
            try:
                response = await super().dispatch(request)
            except Refused as exc:
                response = self.json({"error": exc.reason}, status=exc.status)
            except json.JSONDecodeError as exc:  # strict_json: too deep or a key twice as well
                response = self.json({"error": f"body is not valid JSON: {exc.msg}"}, status=400)
            except StateUnreadable as exc:  # no balance to answer from until it is rebuilt
                response = self.json({"error": str(exc)}, status=503)
            return response

        async def kept(self, record: dict[str, Any]) -> Response | None:
            """None once the broker has the command; else the 503 answer, with its reason."""
            why = await send_command(record)
            if why is None:
                return None
            return self.json(
                {
                    "error": f"command not kept: {why}; send it again with the same command_id",
                    "command_id": record["command_id"],
                },
                status=503,
            )

        async def body(self, request: Request, optional: bool = False) -> dict[str, Any]:
            try:
                text = (await request.read()).decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(400, "body is not UTF-8 text") from None
            if optional and not text.strip():
                return {}
            data = strict_json.loads(text or "null")
            if not isinstance(data, dict):
                raise Refused(400, "body must be a JSON object")
            return data

    readiness = Readiness(
        {"redis": store.r.ping, "broker": lambda: out.list_topics(settings.topic.commands, timeout=CHECK_TIMEOUT_S)}
    )

    @app.page("/health")
    async def health(web: Any, request: Request) -> Response:
        """Readiness: Redis answers a ping (balances come from it) and the broker a metadata
        request (commands go through it), each within 2 s. 503 with what is wrong
        otherwise, so a probe or a load balancer takes the worker out."""
        checks = await asyncio.get_running_loop().run_in_executor(None, readiness.answer)
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ok else "unavailable", **checks, "tenants": len(directory.books)}
        return web.json(body, status=200 if ok else 503)

    @app.page("/livez")
    async def livez(web: Any, request: Request) -> Response:
        """Liveness: the event loop answers (Redis or the broker away does not fail it: a
        restart would not bring them back)."""
        return web.json({"status": "ok"})

    @app.page("/openapi.json")
    async def openapi_view(web: Any, request: Request) -> Response:
        return web.json(openapi.document())

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Request) -> Response:
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/v1/tenants/{tenant_id}/balance")
    class Balance(Api):
        async def get(self, request: Request, tenant_id: str) -> Response:
            book = control.book(tenant_id)
            state = control.current_state(book)
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

    @app.page("/v1/tenants/{tenant_id}/transactions")
    class Transactions(Api):
        async def get(self, request: Request, tenant_id: str) -> Response:
            control.book(tenant_id)
            rows = control.history(tenant_id, api_input.limit(request.query))
            for row in rows:
                for key in ("amount", "balance_after", "requested"):
                    if isinstance(row.get(key), int):
                        row[key] = format_money(row[key])
            return self.json({"tenant_id": tenant_id, "transactions": rows})

    async def send_command(record: dict[str, Any]) -> str | None:
        """Produce a command and wait for the broker's acknowledgement (acks=all): None once
        it is kept, else why not (answered 503: the same command_id again is the same
        request). 202 means kept."""
        failed: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        try:
            out.produce(
                t.commands,
                key=record["tenant_id"].encode(),
                value=codec.encode("funding_command", record),
                on_delivery=on_delivery,
            )
            left = await asyncio.get_running_loop().run_in_executor(None, out.flush, ACK_WAIT_S)
        except (KafkaException, BufferError) as exc:
            failed.append(str(exc))
            left = 0
        if not (left or failed):
            return None
        why = failed[0] if failed else f"not acknowledged by the broker within {ACK_WAIT_S:.0f} s"
        log.error("command %s for tenant %s not kept: %s", record["command_id"], record["tenant_id"], why)
        return why

    @app.page("/v1/tenants/{tenant_id}")
    class TenantView(Api):
        async def delete(self, request: Request, tenant_id: str) -> Response:
            """Offboard the tenant (write scope): its calls stop being charged, the ledger
            gets the removal with the closing balance, nothing is deleted."""
            body = await self.body(request, optional=True)
            api_input.only(body, {"command_id", "requested_by"})
            book = control.book(tenant_id)
            control.check_active(book)
            command_id = api_input.text(body, "command_id", pattern=COMMAND_ID) or str(uuid.uuid4())
            record = {
                "command_id": command_id,
                "tenant_id": tenant_id,
                "kind": REMOVE,
                "amount": 0,
                "currency": book.tenant.currency,
                "requested_by": api_input.text(body, "requested_by") or PRINCIPAL.get().name,
                "at": control.now(),
            }
            refused = await self.kept(record)
            if refused is not None:
                return refused
            log.info("removal %s of tenant %s accepted from token %r", command_id, tenant_id, PRINCIPAL.get().name)
            return self.json({"command_id": command_id, "status": "accepted"}, status=202)

    @app.page("/v1/tenants/{tenant_id}/funds")
    class Funds(Api):
        async def post(self, request: Request, tenant_id: str) -> Response:
            body = await self.body(request)
            api_input.only(body, {"amount", "command_id", "kind", "requested_by"})
            book = control.book(tenant_id)
            amount = api_input.money(body, "amount")
            kind = api_input.text(body, "kind") or ("partner" if book.tenant.channel == "csp" else "manual")
            if kind not in ("manual", "partner"):
                raise Refused(400, "kind: 'manual' or 'partner'")
            requested_by = api_input.text(body, "requested_by")
            control.check_funding(book, kind, amount)
            command_id = api_input.text(body, "command_id", pattern=COMMAND_ID) or str(uuid.uuid4())
            # A command id names one request: the same body again is the same request
            # (accepted, funded once); another body under it is a conflict, answered with
            # the original.
            asked = {"amount": format_money(amount), "kind": kind, "requested_by": requested_by}
            original = store.remember_command(tenant_id, command_id, asked)
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
                "at": control.now(),
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

    @app.page("/v1/tenants/{tenant_id}/auto-recharge")
    class AutoRecharge(Api):
        async def get(self, request: Request, tenant_id: str) -> Response:
            ar = control.book(tenant_id).tenant.auto_recharge
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
            control.check_active(control.book(tenant_id))  # 404 nobody configured it, 410 removed
            raw = store.load_config(tenant_id)
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
                record = tenant_to_avro(entry, control.now())
            except (ValueError, KeyError, TypeError) as exc:
                raise Refused(409 if "must be off" in str(exc) else 400, str(exc)) from None
            out.produce(t.tenant_config, key=tenant_id.encode(), value=codec.encode("tenant_config", record))
            out.flush(10)
            shown = entry["auto_recharge"] or {"enabled": False, "amount": None, "trigger": None}
            return self.json({"status": "accepted", "auto_recharge": shown}, status=202)

    class Report(Api):
        """The tenant's reports, byte for byte what `callcharge report` writes (read from
        the committed ledger on every request)."""

        kind = "usage"

        async def get(self, request: Request, tenant_id: str) -> Response:
            control.book(tenant_id)  # 404 for an unknown tenant
            want_json = "application/json" in request.headers.get("Accept", "")
            month_arg = request.query.get("month")
            loop = asyncio.get_running_loop()
            try:
                ledger = await loop.run_in_executor(None, reports.read_ledger, settings, tenant_id)
                month = reports.check_month(month_arg, ledger.tenants[tenant_id], control.now())
            except InputError as exc:  # a month that has not begun: a rule, not the document (422)
                raise Refused(422 if "in the future" in str(exc) else 400, f"month: {exc}") from None
            if self.kind == "statement":
                fmt = "json" if want_json else "text"
                text, _ = reports.statement_report(ledger, tenant_id, month, fmt)
                content_type = "application/json" if want_json else "text/plain"
            else:
                fmt = "json" if want_json else "csv"
                build = reports.usage_report if self.kind == "usage" else reports.pools_report
                text = build(ledger, tenant_id, month, fmt)
                content_type = "application/json" if want_json else "text/csv"
            ext = "json" if want_json else ("txt" if self.kind == "statement" else "csv")
            name = f"{self.kind}-{tenant_id}-{month}.{ext}"  # tenant ids hold no quote or path character
            headers = {
                "Content-Type": f"{content_type}; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}"',  # a download keeps its name
            }
            return self.bytes(text.encode("utf-8"), headers=headers)

    @app.page("/v1/tenants/{tenant_id}/reports/usage")
    class UsageReport(Report):
        kind = "usage"

    @app.page("/v1/tenants/{tenant_id}/reports/pools")
    class PoolsReport(Report):
        kind = "pools"

    @app.page("/v1/tenants/{tenant_id}/reports/statement")
    class StatementReport(Report):
        kind = "statement"

    @app.page("/v1/tenants/{tenant_id}/authorize")
    class Authorize(Api):
        async def post(self, request: Request, tenant_id: str) -> Response:
            body = await self.body(request)
            book = control.book(tenant_id)
            api_input.only(body, {"user_id", "number", "call_type", "caller"})
            api_input.text(body, "user_id", required=True)
            api_input.text(body, "number", required=True, pattern=NUMBER)
            call_type = api_input.text(body, "call_type") or "user_out"
            caller = api_input.text(body, "caller", pattern=NUMBER) or ""  # null and absent alike: no caller
            now = control.now()
            cdr = Cdr("authorize", tenant_id, body["user_id"], call_type, caller, body["number"], now, now, 0)
            checked = check(cdr)
            if isinstance(checked, Rejected):
                raise Refused(400, checked.detail)
            a = authorize(book, control.current_state(book), checked, rates)
            return self.json(
                {"allowed": a.allowed, "bucket": a.bucket, "max_minutes": a.max_minutes, "reason": a.reason}
            )


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
