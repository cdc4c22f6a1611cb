"""Money as integer micro-units of the tenant currency (1 USD = 1 000 000).

Decimal strings are the only external form; floats are refused.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .errors import DomainError

MICRO = 1_000_000
# Range of money callcharge accepts (our rule): one funding or recharge of at most a
# billion currency units, a balance of at most a trillion. Both sit far inside the signed
# 64-bit micro-units every record carries (9.2e12 units), so no sum of accepted amounts can
# overflow a record; anything larger is refused with its reason before it is written.
MAX_AMOUNT = 10**9 * MICRO
MAX_BALANCE = 10**12 * MICRO
# A rate card's price per minute and connection fee (our rule): at most 1 000 currency units
# each. With calls of at most 7 days (inputs.MAX_DURATION_S) and increments of at most an
# hour, one call costs at most about 10 million units: far inside MAX_AMOUNT.
MAX_PRICE = 1000 * MICRO


class MoneyError(DomainError):
    """A money value that cannot be represented exactly in micro-units."""


# The one written form of money in files and on the wire (our rule): an optional minus,
# digits, an optional point with digits. No exponent ("1e3"), no underscores ("1_000"), no
# plus, no JSON number: what a person reads is what is charged.
MONEY_TEXT = re.compile(r"-?[0-9]{1,19}(\.[0-9]{1,19})?\Z")


def parse_money(text: object) -> int:
    """Parse a plain decimal string ("50", "0.012") into micro-units, exactly.

    Refuses anything else (numbers, exponents, underscores, NaN), and more than six decimals.
    """
    if not isinstance(text, str):
        raise MoneyError(f'money must be a decimal string such as "50.00", got {type(text).__name__}')
    # `object`, checked here: the compiled core would otherwise refuse a JSON number with
    # mypyc's own TypeError instead of this message
    if not MONEY_TEXT.match(text.strip()):
        raise MoneyError(f"not a plain decimal amount (digits and one point): {text[:40]!r}")
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits decimals only
        raise MoneyError(f"not a decimal amount: {text!r}") from exc
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise MoneyError(f"more than 6 decimal places: {text!r}")
    return int(micro)


def micro(value: int | str) -> int:
    """Micro-units of a ledger field that is either already micro-units or a decimal string
    (balance-event attributes carry money as decimal strings)."""
    return value if isinstance(value, int) else parse_money(value)


def format_money(micro: int) -> str:
    """Micro-units to a decimal string with at least two decimals: 1234500 -> "1.2345"."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    digits = f"{frac:06d}".rstrip("0")
    if len(digits) < 2:
        digits = digits.ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division for non-negative numerators."""
    return -(-numerator // denominator)


# ISO 4217 minor units of the currencies whose minor unit is not the cent; every other
# currency is shown to two decimals.
MINOR_UNITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}


_TENS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)  # int ** int is not an int to mypy


def minor_unit(currency: str) -> int:
    return MINOR_UNITS.get(currency.upper(), 2)


def round_minor(micro_units: int, currency: str) -> int:
    """Micro-units rounded to the currency's minor unit, half away from zero (our rule for
    documents: the exact figure stays in the JSON and the export)."""
    step = _TENS[6 - minor_unit(currency)]
    sign = -1 if micro_units < 0 else 1
    return sign * ((abs(micro_units) + step // 2) // step) * step


def format_minor(micro_units: int, currency: str) -> str:
    """Micro-units as a decimal string at the currency's minor unit: 177555000 USD -> "177.56"."""
    places = minor_unit(currency)
    rounded = round_minor(micro_units, currency)
    sign = "-" if rounded < 0 else ""
    whole, frac = divmod(abs(rounded), MICRO)
    if not places:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac // _TENS[6 - places]:0{places}d}"
