"""Every Redis key callcharge writes: its pattern, its type, who writes it, and how long it
lives. Every writer spells its keys through this module, so the keyspace has one map.

A tenant's keys carry the tenant id as a hash tag (`{T}`): on a Redis Cluster every key of
one tenant is on one slot, so a script or pipeline of one tenant never crosses slots.

| pattern | type | written by | lives |
|---|---|---|---|
| `cc:{T}` | hash | charging worker (`state`, `ver`, `p:` pools), directory (`config`) | for ever (rebuildable) |
| `cc:{T}:seen:E` | hash | charging worker: call-id digest -> source partition and offset | the dedup window |
| `cc:{T}:outputs:E` | hash | charging worker: call digest -> its output records | until committed |
| `cc:{T}:out:ID` | string | control worker: operation ID's output records | 400 days |
| `cc:{T}:pay:R` | hash | control worker: recharge R's payment attempts | for ever |
| `cc:{T}:notified:N` | string | control worker: notification N pending or mailed | 400 days |
| `cc:{T}:history` | sorted set | control worker: the tenant's transactions (API) | the last 5 000 |
| `cc:{T}:api-command:C` | string | control API: command C's body (idempotency) | 45 days and a day |
| `cc:recharge-retry` | sorted set | control worker: recharges whose payment is retried | while pending |
| `cc:email-retry` | sorted set | control worker: emails to send again | while pending |
| `cc:txn-leases:G` | hash | charging workers of group G: transactional ids leased | while leased |
| `cc:redriven:TOPIC` | hash | `callcharge dlq redrive`: letters re-driven | for ever |
| `cc:ledger-split` | string | `callcharge stack up`: Redis holds state no ledger backs | until chosen |
| `gw:*` | various | the simulated payment gateway (dev and tests only) | for ever |
"""

from __future__ import annotations

PREFIX = "cc:"
TENANT_PATTERN = "cc:{*}"  # every tenant's state hash (SCAN MATCH)
TENANT_KEYS_PATTERN = "cc:{*"  # every key of every tenant
SEEN_PATTERN = "cc:{*}:seen:*"
OUTPUTS_PATTERN = "cc:{*}:outputs:*"
RESULT_PATTERN = "cc:{*}:out:*"

RECHARGE_RETRY = "cc:recharge-retry"
EMAIL_RETRY = "cc:email-retry"
LEDGER_SPLIT = "cc:ledger-split"


def tenant(tenant_id: str) -> str:
    return f"cc:{{{tenant_id}}}"


def outputs(tenant_id: str, epoch: int) -> str:
    return f"cc:{{{tenant_id}}}:outputs:{epoch}"


def result(tenant_id: str, op_id: str) -> str:
    """An operation's outputs under a key of its own: the control worker's (kept 400 days,
    looked up by id) and, until they expire, calls charged before outputs had a hash per
    epoch (2026-12-07)."""
    return f"cc:{{{tenant_id}}}:out:{op_id}"


def seen(tenant_id: str, epoch: int) -> str:
    return f"cc:{{{tenant_id}}}:seen:{epoch}"


def payment(tenant_id: str, request_id: str) -> str:
    return f"cc:{{{tenant_id}}}:pay:{request_id}"


def notified(tenant_id: str, notification_id: str) -> str:
    return f"cc:{{{tenant_id}}}:notified:{notification_id}"


def history(tenant_id: str) -> str:
    return f"cc:{{{tenant_id}}}:history"


def api_command(tenant_id: str, command_id: str) -> str:
    return f"cc:{{{tenant_id}}}:api-command:{command_id}"


def txn_leases(group_id: str) -> str:
    return f"cc:txn-leases:{group_id}"


def redriven(dlq_topic: str) -> str:
    return f"cc:redriven:{dlq_topic}"
