"""The whole error tree. Every error callcharge raises on purpose derives from
`CallchargeError` (defined in the pure core, so its own errors share the root).

    CallchargeError
    ├── DomainError (ValueError)   processors.errors: the pure core refuses an input
    │   └── MoneyError, NumberError, RateCardError, TenantError, Unchargeable, LedgerGap
    ├── RetriableError             transient: broker or Redis unreachable, transaction to
    │   │                          retry, Redis version conflict. Back off and retry.
    │   ├── GatewayTimeout         the payment gateway did not answer: retry, same key
    │   └── OutputsNotAcknowledged the broker did not take the outputs in time
    ├── PoisonError                the input itself is bad: undecodable bytes, unknown
    │   │                          schema. Never raised past the worker: it becomes a dead
    │   │                          letter with its reason and the worker goes on.
    │   ├── DecodeError
    │   └── UnknownSchemaError
    ├── StateUnreadable            a tenant's stored state cannot be read: its CDRs wait
    │                              in the DLQ, the API answers 503, nobody else stops
    ├── Refused                    the control worker declines an operation (status + reason)
    ├── Unsupported                a schema part the Avro compiler leaves to fastavro
    ├── InputError                 an input file cannot be read at all (exit 2)
    └── FatalError                 configuration or environment is wrong (port taken, fenced
                                   producer, missing binary). Exit non-zero with the message.

Bad input is a value (`processors.inputs.Rejected` with a `DeadLetterReason`) once decoded;
the exceptions here exist for the codec and infrastructure layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from processors.errors import CallchargeError, DomainError
from processors.inputs import DeadLetterReason

__all__ = [
    "CallchargeError",
    "DecodeError",
    "DomainError",
    "FatalError",
    "GatewayTimeout",
    "InputError",
    "OutputsNotAcknowledged",
    "PoisonError",
    "Refused",
    "RetriableError",
    "StateUnreadable",
    "UnknownSchemaError",
    "Unsupported",
]


class RetriableError(CallchargeError):
    """Try again later: nothing was applied that a retry would apply twice."""


class GatewayTimeout(RetriableError):
    """No answer: the outcome is unknown; retry with the SAME idempotency key."""


class OutputsNotAcknowledged(RetriableError):
    """The broker did not acknowledge outputs in time: send them again (consumers dedupe)."""


class PoisonError(CallchargeError):
    """The input is bad; send it to the dead-letter topic with `reason`."""

    reason: DeadLetterReason = DeadLetterReason.INVALID_FIELD


class DecodeError(PoisonError):
    reason = DeadLetterReason.UNDECODABLE


class UnknownSchemaError(PoisonError):
    reason = DeadLetterReason.UNKNOWN_SCHEMA


class StateUnreadable(CallchargeError, ValueError):
    """A tenant's stored state is not a TenantState (corrupted, or written by hand): no
    balance can be worked out from it. `callcharge rebuild --tenant T` restores it."""

    def __init__(self, tenant_id: str, cause: Exception):
        self.tenant_id = tenant_id
        self.cause = f"{type(cause).__name__}: {cause}"
        super().__init__(
            f"tenant {tenant_id}: stored balance state cannot be read ({self.cause}); "
            f"restore it from the ledger with `callcharge rebuild --tenant {tenant_id}`"
        )


@dataclass(frozen=True)
class Refused(CallchargeError):
    """The control worker declines an operation: `status` is the HTTP answer."""

    status: int
    reason: str


class Unsupported(CallchargeError, ValueError):
    """A schema (or part of one) the Avro compiler does not handle: fastavro serves it."""


class InputError(CallchargeError):
    """An input file cannot be read at all (the command exits non-zero)."""


class FatalError(CallchargeError):
    """Stop the process with a clear message and a non-zero exit."""
