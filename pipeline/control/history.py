"""The transaction history the API shows: money-moving charges and balance events, the
latest 5 000 per tenant, in a sorted set."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis

from pipeline.adapters import keyspace
from pipeline.adapters.avro.codec import Codec
from pipeline.control.desk import text

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
KEEP = 5000


class History:
    def __init__(self, codec: Codec, client: redis.Redis) -> None:
        self.codec, self.r = codec, client

    def add_charge(self, value: bytes) -> None:
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
            self._add(c["tenant_id"], doc, c["end_time"])

    def add_event(self, ev: dict[str, Any]) -> None:
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
            self._add(ev["tenant_id"], doc, ev["at"])

    def _add(self, tenant_id: str, doc: dict[str, Any], at: datetime) -> None:
        key = keyspace.history(tenant_id)
        self.r.zadd(key, {json.dumps(doc, sort_keys=True, default=str): at.timestamp()})
        self.r.zremrangebyrank(key, 0, -KEEP - 1)

    def latest(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.r.zrevrange(keyspace.history(tenant_id), 0, limit - 1)
        return [json.loads(text(r)) for r in rows]
