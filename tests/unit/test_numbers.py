"""Number analysis: our single-pass analysis agrees with phonenumbers' public API."""

from __future__ import annotations

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.numbers import _TYPES, EMERGENCY, FIXED, MOBILE, PREMIUM, TOLLFREE, UNKNOWN, NumberError, analyze

CODES = ["1", "44", "49", "33", "81", "61", "55", "234", "86", "39", "34", "31", "46", "91", "7", "1441"]


@settings(max_examples=1500, deadline=None)
@given(code=st.sampled_from(CODES), rest=st.text("0123456789", min_size=4, max_size=12))
def test_agrees_with_the_public_api(code: str, rest: str) -> None:
    number = f"+{code}{rest}"
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        try:
            analyze(number)
        except NumberError:
            return
        raise AssertionError(f"{number} parsed by us but not by phonenumbers") from None
    info = analyze.__wrapped__(number)
    assert info.valid == phonenumbers.is_valid_number(parsed), number
    if info.valid:
        assert info.country == phonenumbers.region_code_for_number(parsed), number
        assert info.kind == _TYPES.get(phonenumbers.number_type(parsed), UNKNOWN), number


def test_known_numbers() -> None:
    assert analyze("+12125550123").kind == FIXED and analyze("+12125550123").country == "US"
    assert analyze("+18005550123").kind == TOLLFREE
    assert analyze("+19005550123").kind == PREMIUM
    assert analyze("+447400123456").kind == MOBILE and analyze("+447400123456").country == "GB"
    assert analyze("+14165550123").country == "CA"
    assert analyze("+17875550123").country == "PR"
    assert analyze("911", "US").kind == EMERGENCY and analyze("112", "DE").kind == EMERGENCY
    assert not analyze("+1234567890").valid
