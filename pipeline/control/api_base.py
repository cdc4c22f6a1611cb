"""What every view of the control worker's API is built on: the context of one app
(`ApiContext`: the Control, the rate card, the producer, the tokens, readiness) and the
bearer-token base view (`Api`: who may do what on which tenant, metrics per route, errors
as the documented JSON)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import KafkaException, Producer
from faust.web import Request, Response, View

from pipeline.adapters import strict_json
from pipeline.adapters.health import CHECK_TIMEOUT_S, Readiness
from pipeline.config import Settings
from pipeline.control.lifecycle import Control
from pipeline.control.tokens import Principal, Tokens
from pipeline.errors import Refused, StateUnreadable
from processors.inputs import canonical_id
from processors.rating import RateCard

log = logging.getLogger(__name__)
# How long a command waits for the broker's acknowledgement before the API answers 503. The
# record may still be delivered later: the same command_id again is applied once.
ACK_WAIT_S = 5.0
# The token of the request being served (set per request task by Api.dispatch).
PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
COMMAND_ID = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}"


@dataclass
class ApiContext:
    """What the views of one app work with."""

    settings: Settings
    control: Control
    rates: RateCard
    out: Producer  # commands and configuration changes
    tokens: Tokens
    readiness: Readiness = field(init=False)

    def __post_init__(self) -> None:
        self.codec = self.control.codec
        self.store = self.control.ledger.store
        self.metrics = self.control.metrics
        self.readiness = Readiness(
            {
                "redis": self.store.r.ping,
                "broker": lambda: self.out.list_topics(self.settings.topic.commands, timeout=CHECK_TIMEOUT_S),
            }
        )

    async def send_command(self, record: dict[str, Any]) -> str | None:
        """Produce a command and wait for the broker's acknowledgement (acks=all): None once
        it is kept, else why not (answered 503: the same command_id again is the same
        request). 202 means kept."""
        failed: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        try:
            self.out.produce(
                self.settings.topic.commands,
                key=record["tenant_id"].encode(),
                value=self.codec.encode("funding_command", record),
                on_delivery=on_delivery,
            )
            left = await asyncio.get_running_loop().run_in_executor(None, self.out.flush, ACK_WAIT_S)
        except (KafkaException, BufferError) as exc:
            failed.append(str(exc))
            left = 0
        if not (left or failed):
            return None
        why = failed[0] if failed else f"not acknowledged by the broker within {ACK_WAIT_S:.0f} s"
        log.error("command %s for tenant %s not kept: %s", record["command_id"], record["tenant_id"], why)
        return why


class Api(View):
    """A bearer-token view: who may do what on which tenant, metrics per route, errors as
    the documented JSON."""

    ctx: ApiContext  # set on the subclass `register` makes for its app

    async def dispatch(self, request: Request) -> Response:
        started = time.perf_counter()
        resource = getattr(getattr(request.match_info, "route", None), "resource", None)
        route = getattr(resource, "canonical", "other")
        response = await self._dispatch(request)
        self.ctx.metrics.api.labels(route, str(response.status)).inc()
        self.ctx.metrics.api_seconds.labels(route).observe(time.perf_counter() - started)
        return response

    async def _dispatch(self, request: Request) -> Response:
        who = self.ctx.tokens.who(request.headers.get("Authorization", ""))
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
            response = cast(Response, await super().dispatch(request))
        except Refused as exc:
            response = self.json({"error": exc.reason}, status=exc.status)
        except json.JSONDecodeError as exc:  # strict_json: too deep or a key twice as well
            response = self.json({"error": f"body is not valid JSON: {exc.msg}"}, status=400)
        except StateUnreadable as exc:  # no balance to answer from until it is rebuilt
            response = self.json({"error": str(exc)}, status=503)
        return response

    async def kept(self, record: dict[str, Any]) -> Response | None:
        """None once the broker has the command; else the 503 answer, with its reason."""
        why = await self.ctx.send_command(record)
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


class Bound(View):
    ctx: ApiContext  # set on the subclass `register` makes for its app
