"""The payment gateway interface, and a simulated gateway with test payment methods.

A real processor plugs in by implementing `PaymentGateway.charge`. The contract: the
idempotency key identifies one payment; calling `charge` again with the same key never
takes money twice and returns the first outcome (Stripe and Adyen work this way).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Protocol

import redis

from pipeline.errors import GatewayTimeout


@dataclass(frozen=True, slots=True)
class PaymentResult:
    succeeded: bool
    payment_id: str
    reason: str = ""  # why it failed: card_expired, card_declined, ...


class PaymentGateway(Protocol):
    def charge(
        self, idempotency_key: str, tenant_id: str, amount: int, currency: str, method: str
    ) -> PaymentResult: ...


TEST_METHODS = {
    "pm_card_ok": None,
    "pm_card_expired": "card_expired",
    "pm_card_declined": "card_declined",
}


class SimulatedGateway:
    """Keeps its ledger of payments in Redis (`gw:payments`), keyed by idempotency key.

    Test payment methods: pm_card_ok (succeeds), pm_card_expired, pm_card_declined (fail),
    pm_card_timeout (times out on the first try of a key, then succeeds: the retry with the
    same key must not charge twice). Unknown methods are declined.
    """

    KEY = "gw:payments"

    def __init__(self, client: redis.Redis):
        self.r = client

    def charge(self, idempotency_key: str, tenant_id: str, amount: int, currency: str, method: str) -> PaymentResult:
        known = self.r.hget(self.KEY, idempotency_key)
        if known is not None:
            return PaymentResult(**json.loads(known))
        if method == "pm_card_timeout" and self.r.hsetnx("gw:timeouts", idempotency_key, "1"):
            self._record(idempotency_key, tenant_id, amount, currency, PaymentResult(True, f"pay_{idempotency_key}"))
            raise GatewayTimeout(f"gateway did not answer for {idempotency_key}")
        reason = TEST_METHODS.get(method, "card_declined") if method in TEST_METHODS else "card_declined"
        result = PaymentResult(reason is None, f"pay_{idempotency_key}", reason or "")
        return self._record(idempotency_key, tenant_id, amount, currency, result)

    def _record(self, key: str, tenant_id: str, amount: int, currency: str, result: PaymentResult) -> PaymentResult:
        doc = {"succeeded": result.succeeded, "payment_id": result.payment_id, "reason": result.reason}
        if self.r.hsetnx(self.KEY, key, json.dumps(doc)):
            if result.succeeded:
                self.r.rpush(
                    "gw:captured",
                    json.dumps(
                        {"key": key, "tenant_id": tenant_id, "amount": amount, "currency": currency, "at": time.time()}
                    ),
                )
            return result
        return PaymentResult(**json.loads(self.r.hget(self.KEY, key) or b"{}"))

    def captured(self) -> list[dict[str, object]]:
        """Every payment that took money (for tests and the demo)."""
        return [json.loads(x) for x in self.r.lrange("gw:captured", 0, -1)]
