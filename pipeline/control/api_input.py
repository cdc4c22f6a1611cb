"""Strict reading of HTTP API input: every wrong type or range is a 400 naming the field.

Money is a plain decimal string only ("50", "12.5", "0.000001"): digits, at most one point,
at most 6 decimals, within `processors.money.MAX_AMOUNT`. No exponent ("1e3"), no
underscores ("1_000"), no sign, no JSON number (a float cannot carry money exactly).
Booleans are JSON booleans; `"false"` is not false.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.errors import Refused
from processors.money import MAX_AMOUNT, format_money, parse_money

MONEY_TEXT = re.compile(r"(0|[1-9][0-9]{0,15})(\.[0-9]{1,6})?\Z")
TEXT_MAX = 200
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000


def money(body: Mapping[str, Any], name: str, *, positive: bool = True) -> int:
    value = body.get(name)
    if value is None:
        raise Refused(400, f'{name}: required, a decimal string such as "50.00"')
    if not isinstance(value, str):
        raise Refused(400, f'{name}: must be a decimal string such as "50.00", not a JSON {_json_type(value)}')
    if not MONEY_TEXT.match(value):
        if re.fullmatch(r"[0-9]+\.[0-9]{7,}", value):
            raise Refused(400, f"{name}: more than 6 decimal places: {value!r}")
        raise Refused(400, f"{name}: not a plain decimal amount (digits and one point): {value[:40]!r}")
    micro = parse_money(value)
    if positive and micro <= 0:
        raise Refused(400, f"{name}: must be positive")
    if micro > MAX_AMOUNT:
        raise Refused(400, f"{name}: at most {format_money(MAX_AMOUNT)}")
    return micro


def boolean(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise Refused(400, f"{name}: required, true or false (a JSON boolean)")
    return value


def text(body: Mapping[str, Any], name: str, *, required: bool = False, pattern: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise Refused(400, f"{name}: required")
        return None
    if not isinstance(value, str) or not value or len(value) > TEXT_MAX:
        raise Refused(400, f"{name}: must be a non-empty string of at most {TEXT_MAX} characters")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise Refused(400, f"{name}: must match {pattern}")
    return value


def limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return LIMIT_DEFAULT
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= LIMIT_MAX:
        raise Refused(400, f"limit: a whole number from 1 to {LIMIT_MAX}")
    return int(raw)


def only(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Refused(400, f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}.get(type(value), "value")
