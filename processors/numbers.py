"""E.164 number analysis: country and number type, cached (it is on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType, shortnumberinfo
from phonenumbers.phonenumberutil import _number_type_helper

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
    # One region lookup and one type match. phonenumbers' public is_valid_number,
    # region_code_for_number and number_type each repeat both (three region scans over
    # the 25 NANP regions for every +1 number); valid <=> type != UNKNOWN for the
    # number's own region. tests/unit/test_numbers.py checks this against the public API.
    region = phonenumbers.region_code_for_number(parsed)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(parsed.country_code or 0, region) if region else None
    kind = (
        _number_type_helper(phonenumbers.national_significant_number(parsed), metadata)
        if metadata is not None
        else PhoneNumberType.UNKNOWN
    )
    if kind == PhoneNumberType.UNKNOWN:
        region_of_code = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
        return NumberInfo(None if region_of_code == "ZZ" else region_of_code, UNKNOWN, False)
    return NumberInfo(region, _TYPES.get(kind, UNKNOWN), True)


def try_analyze(number: str | None, region: str | None = None) -> NumberInfo | None:
    """Like analyze, but None where the number is absent or unparsable."""
    if not number:
        return None
    try:
        return analyze(number, region)
    except NumberError:
        return None
