"""Number analysis: our fast and full paths agree with each other and with phonenumbers'
public API, over every country calling code and numbers of every type."""

from __future__ import annotations

import phonenumbers
from hypothesis import example, given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberType, shortnumberinfo

from processors.numbers import (
    _TYPES,
    EMERGENCY,
    FIXED,
    MOBILE,
    PREMIUM,
    TOLLFREE,
    UNKNOWN,
    NumberError,
    _fast,
    _full,
    analyze,
    first_digits,
)

CODES = ["1", "44", "49", "33", "81", "61", "55", "234", "86", "39", "34", "31", "46", "91", "7", "1441"]


def plus_emergency(digits: str) -> bool:
    """Our rule (processors/numbers.py, from DOMAIN.md): "+", a country calling code and an emergency
    code of that country ("+44999", "+1911") is an emergency call, which phonenumbers'
    is_valid_number does not know; its short-number metadata says what is an emergency code."""
    return len(digits) <= 7 and any(
        2 <= len(digits[w:]) <= 4 and shortnumberinfo.is_emergency_number(digits[w:], region)
        for w in (1, 2, 3)
        for region in COUNTRY_CODE_TO_REGION_CODE.get(int(digits[:w]), ())
    )


@settings(max_examples=1500, deadline=None)
@given(code=st.sampled_from(CODES), rest=st.text("0123456789", min_size=4, max_size=12))
@example(code="91", rest="2611")  # India's emergency code 2611 after +91: found by this test in CI
def test_agrees_with_the_public_api(code: str, rest: str) -> None:
    number = f"+{code}{rest}"
    if plus_emergency(code + rest):
        assert analyze.__wrapped__(number).kind == EMERGENCY, number
        return
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


ALL_CODES = sorted(str(c) for c in COUNTRY_CODE_TO_REGION_CODE)


def _examples() -> list[str]:
    """Every example number phonenumbers knows, for every region (and non-geographic
    code) and every type: valid numbers of each kind, to mutate."""
    out = set()
    for cc, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            for kind in PhoneNumberType.values():
                if region == "001":
                    example = phonenumbers.example_number_for_non_geo_entity(cc)
                else:
                    example = phonenumbers.example_number_for_type(region, kind)
                if example is not None:
                    out.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    return sorted(out)


EXAMPLES = _examples()


def _same(number: str) -> None:
    fast = _fast(number)
    if fast is None:
        return
    assert fast == _full(number), number


@settings(max_examples=3000, deadline=None)
@given(code=st.sampled_from(ALL_CODES), rest=st.text("0123456789", min_size=1, max_size=15))
def test_fast_path_agrees_with_the_full_parser_on_any_code(code: str, rest: str) -> None:
    _same(f"+{code}{rest}")


@settings(max_examples=3000, deadline=None)
@given(example=st.sampled_from(EXAMPLES), keep=st.integers(2, 8), tail=st.text("0123456789", max_size=4))
def test_fast_path_agrees_near_valid_numbers_of_every_type(example: str, keep: int, tail: str) -> None:
    """Variations of real example numbers (same prefix, other digits, other lengths)
    hit every type pattern of every region, where random digits rarely would."""
    digits = example[1:]
    varied = digits[: len(digits) - keep] + "".join(str((int(d) * 7 + 3) % 10) for d in digits[-keep:])
    _same(f"+{varied}{tail}")
    _same(example)


def test_every_example_number_is_analysed_like_the_public_api() -> None:
    fast_taken = 0
    for number in EXAMPLES:
        parsed = phonenumbers.parse(number, None)
        info = analyze.__wrapped__(number)
        fast_taken += _fast(number) is not None
        assert info.valid == phonenumbers.is_valid_number(parsed), number
        if info.valid:
            assert info.kind == _TYPES.get(phonenumbers.number_type(parsed), UNKNOWN), number
            assert info.country == phonenumbers.region_code_for_number(parsed), number
    # The fast path is the one taken for strict E.164 (the few left are national
    # prefixes or leading zeros after the country code).
    assert fast_taken > 0.9 * len(EXAMPLES)


def test_first_digits_of_a_pattern_is_every_digit_a_match_can_start_with() -> None:
    assert first_digits(r"8(?:00|33|44)[2-9]\d{6}|9\d{2}") == frozenset("89")
    assert first_digits(r"(?:5|6)?7\d") == frozenset("567")  # optional prefix: what follows counts too
    assert first_digits(r"[13-5]\d{4}") == frozenset("1345")
    assert first_digits(r"\d{3}") == frozenset("0123456789")
    assert first_digits(r"(?=1)1\d") == frozenset("0123456789")  # not understood: every digit
