"""The error tree of the runtime.

    CallchargeError
    ├── RetriableError   transient: broker or Redis unreachable, transaction to retry,
    │                    Redis version conflict. The worker backs off and retries the batch.
    ├── PoisonError      the input itself is bad: undecodable bytes, unknown schema,
    │   │                invalid fields, unknown tenant. Never raised past the worker:
    │   │                it becomes a dead letter with its reason and the worker goes on.
    │   ├── DecodeError
    │   └── UnknownSchemaError
    └── FatalError       configuration or environment is wrong (port taken, fenced producer,
                         missing binary). The process exits non-zero with the message.

Bad input is a value (`processors.inputs.Rejected`) once decoded; the exceptions below
exist for the codec and infrastructure layers.
"""

from __future__ import annotations


class CallchargeError(Exception):
    """Base of every error callcharge raises on purpose."""


class RetriableError(CallchargeError):
    """Try again later: nothing was applied that a retry would apply twice."""


class PoisonError(CallchargeError):
    """The input is bad; send it to the dead-letter topic with `reason`."""

    reason = "poison"


class DecodeError(PoisonError):
    reason = "undecodable"


class UnknownSchemaError(PoisonError):
    reason = "unknown_schema"


class FatalError(CallchargeError):
    """Stop the process with a clear message and a non-zero exit."""
