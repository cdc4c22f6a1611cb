"""The control worker's HTTP API: the bearer-token views on the faust app's web server,
/health (readiness), /livez, /openapi.json and /metrics.

`register` puts every view on the app `pipeline.control.app.build_app` builds, each bound to
one `ApiContext` (the Control, the rate card, the producer, the tokens). The tenant views
are in `pipeline.control.api_views`; the rules they apply are the Control's
(`pipeline.control.lifecycle`) and the pure core's.
Errors are the documented JSON `{"error": ...}` (`json_errors` covers aiohttp's own)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from aiohttp import web as aiohttp_web
from confluent_kafka import Producer
from faust.web import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.config import Settings
from pipeline.control import api_views as v
from pipeline.control import openapi
from pipeline.control.api_base import Api, ApiContext, Bound
from pipeline.control.lifecycle import Control
from pipeline.control.tokens import Tokens
from processors.rating import RateCard

log = logging.getLogger(__name__)


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


class Health(Bound):
    async def get(self, request: Request) -> Response:
        """Readiness: Redis answers a ping (balances come from it) and the broker a metadata
        request (commands go through it), each within 2 s. 503 with what is wrong
        otherwise, so a probe or a load balancer takes the worker out."""
        checks = await asyncio.get_running_loop().run_in_executor(None, self.ctx.readiness.answer)
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ok else "unavailable", **checks, "tenants": len(self.ctx.control.directory.books)}
        return self.json(body, status=200 if ok else 503)


class Livez(Bound):
    async def get(self, request: Request) -> Response:
        """Liveness: the event loop answers (Redis or the broker away does not fail it: a
        restart would not bring them back)."""
        return self.json({"status": "ok"})


class OpenApi(Bound):
    async def get(self, request: Request) -> Response:
        return self.json(openapi.document())


class Metrics(Bound):
    async def get(self, request: Request) -> Response:
        registry = self.ctx.metrics.registry
        return self.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def register(app: faust.App, settings: Settings, control: Control, rates: RateCard, out: Producer) -> None:
    """Every view of the API on `app`'s web server, bound to this app's context."""
    ctx = ApiContext(settings, control, rates, out, Tokens.load(settings.api_tokens_file, settings.api_token))
    routes: list[tuple[str, type[Bound] | type[Api]]] = [
        ("/health", Health),
        ("/livez", Livez),
        ("/openapi.json", OpenApi),
        ("/metrics", Metrics),
        ("/v1/tenants/{tenant_id}", v.TenantView),
        ("/v1/tenants/{tenant_id}/balance", v.Balance),
        ("/v1/tenants/{tenant_id}/transactions", v.Transactions),
        ("/v1/tenants/{tenant_id}/funds", v.Funds),
        ("/v1/tenants/{tenant_id}/auto-recharge", v.AutoRecharge),
        ("/v1/tenants/{tenant_id}/reports/usage", v.UsageReport),
        ("/v1/tenants/{tenant_id}/reports/pools", v.PoolsReport),
        ("/v1/tenants/{tenant_id}/reports/statement", v.StatementReport),
        ("/v1/tenants/{tenant_id}/authorize", v.Authorize),
    ]
    for path, view in routes:
        app.page(path)(type(view.__name__, (view,), {"ctx": ctx}))
