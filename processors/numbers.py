"""E.164 number analysis: country and number type, cached (it is on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType, shortnumberinfo

FIXED = "fixed"
MOBILE = "mobile"
TOLLFREE = "tollfree"
PREMIUM = "premium"
EMERGENCY = "emergency"
UNKNOWN = "unknown"

_TYPES = {
    PhoneNumberType.FIXED_LINE: FIXED,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: FIXED,
    PhoneNumberType.MOBILE: MOBILE,
    PhoneNumberType.TOLL_FREE: TOLLFREE,
    PhoneNumberType.PREMIUM_RATE: PREMIUM,
    PhoneNumberType.SHARED_COST: FIXED,
    PhoneNumberType.VOIP: FIXED,
    PhoneNumberType.PERSONAL_NUMBER: FIXED,
    PhoneNumberType.UAN: FIXED,
    PhoneNumberType.VOICEMAIL: FIXED,
    PhoneNumberType.PAGER: MOBILE,
}


class NumberError(ValueError):
    """A number that cannot be interpreted at all."""


@dataclass(frozen=True, slots=True)
class NumberInfo:
    country: str | None
    kind: str
    valid: bool


@lru_cache(maxsize=65536)
def analyze(number: str, region: str | None = None) -> NumberInfo:
    """Country (ISO alpha-2) and kind of a dialed number.

    E.164 numbers start with "+". Short emergency codes ("911", "112") are recognised
    in the caller's region. Anything else raises NumberError.
    """
    text = number.strip()
    if not text:
        raise NumberError("empty number")
    if not text.startswith("+"):
        if region and text.isdigit() and shortnumberinfo.is_emergency_number(text, region):
            return NumberInfo(region, EMERGENCY, True)
        raise NumberError("not an E.164 number")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise NumberError(f"unparsable number: {exc.error_type}") from None
    if not phonenumbers.is_valid_number(parsed):
        region_of_code = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
        return NumberInfo(None if region_of_code == "ZZ" else region_of_code, UNKNOWN, False)
    return NumberInfo(
        phonenumbers.region_code_for_number(parsed), _TYPES.get(phonenumbers.number_type(parsed), UNKNOWN), True
    )


def try_analyze(number: str | None, region: str | None = None) -> NumberInfo | None:
    """Like analyze, but None where the number is absent or unparsable."""
    if not number:
        return None
    try:
        return analyze(number, region)
    except NumberError:
        return None
