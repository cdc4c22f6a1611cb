"""The root of every error callcharge raises on purpose, and the pure core's branch of it.

    CallchargeError                      (this module; pipeline.errors builds on it)
    ├── DomainError (also a ValueError)  an input the pure core cannot use
    │   ├── MoneyError, NumberError, RateCardError, TenantError, Unchargeable, LedgerGap
    └── ... the runtime's branches, in pipeline/errors.py

Bad CDRs are values (`processors.inputs.Rejected` with a `DeadLetterReason`), not exceptions.
"""

from __future__ import annotations


class CallchargeError(Exception):
    """Base of every error callcharge raises on purpose."""


class DomainError(CallchargeError, ValueError):
    """The pure core refuses an input (a ValueError, so callers parsing input catch it as one)."""
