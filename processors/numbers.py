"""E.164 number analysis: country and number type, cached (it is on the hot path).

Most callee numbers on a busy day are new to the cache, so a miss must be cheap too. A
number written as strict E.164 ("+" and digits, no national prefix inside) takes a fast
path over phonenumbers' own metadata: the country code by table, then one match of a
pattern per region and number shape (length, first digit) that joins the rows such a
number can match, in the order of phonenumbers' `number_type` (`_Shape`). Anything else
(spaces, punctuation, extensions, a national prefix after the country code, a leading
zero) takes phonenumbers' full parser. The two paths are checked against each other and
against the public API in tests/unit/test_numbers.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, Final

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    SUPPORTED_SHORT_REGIONS,
    PhoneMetadata,
    PhoneNumberType,
    shortnumberinfo,
)
from phonenumbers.phonenumberutil import _number_type_helper

from .errors import DomainError
from .frozen import written_inits

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


class NumberError(DomainError):
    """A number that cannot be interpreted at all."""


@dataclass(frozen=True)
class NumberInfo:
    country: str | None
    kind: str
    valid: bool

    def __init__(
        self,
        country: str | None,
        kind: str,
        valid: bool,
    ) -> None:
        self.country = country  # type: ignore[misc]
        self.kind = kind  # type: ignore[misc]
        self.valid = valid  # type: ignore[misc]


@lru_cache(maxsize=65536)
def analyze(number: str, region: str | None = None) -> NumberInfo:
    """Country (ISO alpha-2) and kind of a dialed number.

    E.164 numbers start with "+". Emergency short codes are recognised in every shape
    (see below). Anything else raises NumberError.
    """
    text = number.strip()
    if not text:
        raise NumberError("empty number")
    if not text.startswith("+"):
        country = _short_emergency(text, region)
        if country is not None:
            return NumberInfo(country or None, EMERGENCY, True)
        raise NumberError("not an E.164 number")
    country = _plus_emergency(text[1:], region)
    if country is not None:
        return NumberInfo(country, EMERGENCY, True)
    return _fast(text) or _full(text)


# -- emergency short codes, in every shape they reach us -------------------------------
#
# Never charged, never drawing plan minutes, never rejected (DOMAIN.md): the code of the
# user's region ("911" in the US), a code of another country dialled by a roaming user
# ("999" by a US user in London), a short code written with "+" and a country code
# ("+44999", "+1911"). phonenumbers' short-number metadata decides what is an emergency
# code, for the user's region first and then for the number's own region.


def _short_emergency(digits: str, region: str | None) -> str | None:
    """The region whose emergency code `digits` is: the user's, else any region's."""
    if not (2 <= len(digits) <= 6 and digits.isdigit()):
        return None
    if region and shortnumberinfo.is_emergency_number(digits, region):
        return region
    found = _emergency_regions(digits)
    if not found:
        return None
    return found[0] if len(found) == 1 else ""  # a code of several countries: which one is unknown


def _plus_emergency(digits: str, region: str | None) -> str | None:
    """ "+" with a country code and that country's emergency code, or "+" before the
    user's own emergency code."""
    if not (3 <= len(digits) <= 7 and digits.isdigit()):
        return None
    for width in (1, 2, 3):
        rest = digits[width:]
        for code in COUNTRY_CODE_TO_REGION_CODE.get(int(digits[:width]), ()):
            if 2 <= len(rest) <= 4 and shortnumberinfo.is_emergency_number(rest, code):
                return str(code)
    if region and shortnumberinfo.is_emergency_number(digits, region):
        return region
    return None


@cache
def _emergency_regions(digits: str) -> tuple[str, ...]:
    return tuple(sorted(r for r in SUPPORTED_SHORT_REGIONS if shortnumberinfo.is_emergency_number(digits, r)))


# -- fast path: strict E.164 ------------------------------------------------------------

_CALLING_CODES: Final = {str(cc): cc for cc in COUNTRY_CODE_TO_REGION_CODE}
# phonenumbers' number_type order; what a kind counts as for charging.
_DESC_ORDER = (
    ("premium_rate", PREMIUM),
    ("toll_free", TOLLFREE),
    ("shared_cost", FIXED),
    ("voip", FIXED),
    ("personal_number", FIXED),
    ("pager", MOBILE),
    ("uan", FIXED),
    ("voicemail", FIXED),
    ("fixed_line", FIXED),
)

# (possible lengths or None, pattern, kind, digits a match can start with)
Row = tuple[frozenset[int] | None, re.Pattern[str], str, frozenset[str]]


@dataclass(frozen=True)
class _Region:
    code: str
    general: Row | None
    rows: tuple[Row, ...]
    leading: re.Pattern[str] | None
    # (length, first digit) -> one pattern for the rows a number of that shape can match
    # (built on first use; see `_shape`)
    shapes: dict[int, _Shape | None] = field(default_factory=dict, compare=False, repr=False)

    def kind(self, nsn: str) -> str:
        """phonenumbers' number type of `nsn` in this region, as a charging kind: the
        general description must match, then the first row (in `_DESC_ORDER`) that does."""
        key = len(nsn) * 16 + ord(nsn[0]) - 48
        shape = self.shapes.get(key, _UNBUILT)
        if shape is _UNBUILT:
            shape = self.shapes[key] = _shape(self, nsn[0], len(nsn))
        if shape is None:
            return UNKNOWN
        m = shape.pattern.fullmatch(nsn)
        return UNKNOWN if m is None else shape.kinds[m.lastgroup or ""]


@dataclass(frozen=True)
class _Shape:
    """Every row a number of one length and first digit can match, as one pattern: the
    general description as a lookahead, then one named alternative per run of rows of the
    same kind, in row order. A regular expression's alternation takes the first
    alternative that matches the whole number, which is phonenumbers' first matching row,
    so one match replaces a match per row (and per-row call overhead, most of the cost
    for a number never seen before)."""

    pattern: re.Pattern[str]
    kinds: dict[str, str]


_UNBUILT: Final = _Shape(re.compile(""), {})


def _shape(region: _Region, first: str, n: int) -> _Shape | None:
    """The `_Shape` of numbers of length `n` starting with `first` in `region` (None: no
    row can match one, so its kind is unknown)."""
    if region.general is None or not _fits(region.general, first, n):
        return None
    alternatives: list[str] = []
    kinds: dict[str, str] = {}
    last_kind = ""
    for row in region.rows:
        if not _fits(row, first, n):
            continue
        _, pattern, kind, _ = row
        if kind == last_kind:  # a run of one kind: one alternative (the kind is the same)
            alternatives[-1] += f"|(?:{pattern.pattern})"
        else:
            alternatives.append(f"(?:{pattern.pattern})")
            last_kind = kind
            kinds[f"k{len(alternatives) - 1}"] = kind
    if not alternatives:
        return None
    body = "|".join(f"(?P<k{i}>{a})" for i, a in enumerate(alternatives))
    return _Shape(re.compile(rf"(?=(?:{region.general[1].pattern})\Z)(?:{body})"), kinds)


def _fits(row: Row, first: str, n: int) -> bool:
    lengths, _, _, starts = row
    return first in starts and (lengths is None or n in lengths)


@dataclass(frozen=True)
class _Code:
    regions: tuple[_Region, ...]
    national_prefix: re.Pattern[str] | None
    fallback_country: str | None
    # the digits a national prefix can start with (every digit where it may be empty)
    national_prefix_starts: frozenset[str]

    def national_prefix_at(self, nsn: str) -> bool:
        """A national prefix written after the country code (the full parser strips it)."""
        return (
            self.national_prefix is not None
            and nsn[0] in self.national_prefix_starts
            and self.national_prefix.match(nsn) is not None
        )


def _row(desc: object, kind: str) -> Row | None:
    pattern = getattr(desc, "national_number_pattern", None)
    if not pattern:
        return None
    lengths = getattr(desc, "possible_length", None) or ()
    return (frozenset(lengths) or None, re.compile(pattern), kind, first_digits(pattern))


DIGITS = frozenset("0123456789")


def first_digits(pattern: str) -> frozenset[str]:
    """The digits a full match of `pattern` can start with: a superset, never less (any
    construct not understood counts as every digit), read off the regex's parse tree."""
    return _first(pattern)[0]


def _first(pattern: str) -> tuple[frozenset[str], bool]:
    """`first_digits(pattern)`, and whether the pattern can match the empty string (then a
    prefix match needs no digit at all; any construct not understood counts as both)."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser  # type: ignore[attr-defined]
    except ImportError:  # another Python's internals: no filtering, still exact
        return DIGITS, True

    def seq(items: object) -> tuple[set[str], bool]:
        found: set[str] = set()
        for op, av in items:  # type: ignore[attr-defined]
            chars, nullable = item(op, av)
            found |= chars
            if not nullable:
                return found, False
        return found, True

    def item(op: object, av: Any) -> tuple[set[str], bool]:
        if op is c.LITERAL:
            return {chr(av)} & DIGITS, False
        if op is c.IN:
            chars: set[str] = set()
            for kind, value in av:
                if kind is c.LITERAL:
                    chars.add(chr(value))
                elif kind is c.RANGE:
                    chars |= {chr(x) for x in range(value[0], value[1] + 1)}
                else:  # a category, a negation, ...
                    return set(DIGITS), False
            return chars & DIGITS, False
        if op is c.BRANCH:
            parts = [seq(branch) for branch in av[1]]
            return set().union(*(p[0] for p in parts)), any(p[1] for p in parts)
        if op is c.SUBPATTERN:
            return seq(av[-1])
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            chars, nullable = seq(av[2])
            return chars, nullable or av[0] == 0
        return set(DIGITS), True

    try:
        chars, nullable = seq(_parser.parse(pattern))
        return frozenset(chars), nullable
    except Exception:  # any surprise in the internals: no filtering
        return DIGITS, True


def _region(code: str, metadata: PhoneMetadata) -> _Region:
    rows = [_row(getattr(metadata, name), kind) for name, kind in _DESC_ORDER]
    if not metadata.same_mobile_and_fixed_line_pattern:
        rows.append(_row(metadata.mobile, MOBILE))
    leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
    return _Region(code, _row(metadata.general_desc, UNKNOWN), tuple(r for r in rows if r), leading)


@cache
def _code(cc: int) -> _Code | None:
    names = COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if not names:
        return None
    regions = []
    for name in names:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, name)
        if metadata is not None:
            regions.append(_region(name, metadata))
    main = PhoneMetadata.metadata_for_region_or_calling_code(cc, names[0])
    prefix = main.national_prefix_for_parsing if main is not None else None
    starts = _first(prefix) if prefix else (frozenset[str](), False)
    return _Code(
        tuple(regions),
        re.compile(prefix) if prefix else None,
        None if names[0] == "ZZ" else names[0],
        DIGITS if starts[1] else starts[0],
    )


def warm() -> None:
    """Prepare every country calling code's metadata now (about 0.3 s) rather than on the
    first number of each country, which would stall that call's batch."""
    for cc in COUNTRY_CODE_TO_REGION_CODE:
        _code(cc)


def _fast(text: str) -> NumberInfo | None:
    """The analysis of a strict E.164 number, or None where only the full parser can say."""
    digits = text[1:]  # "+" and 4 to 17 ASCII digits, the first not 0
    if not (4 <= len(digits) <= 17 and digits.isascii() and digits.isdigit() and digits[0] != "0"):
        return None
    for width in (1, 2, 3):
        cc = _CALLING_CODES.get(digits[:width])
        if cc is not None:
            break
    else:
        return None
    code = _code(cc)
    nsn = digits[width:]
    if code is None or len(nsn) < 2 or nsn[0] == "0" or code.national_prefix_at(nsn):
        return None
    found: _Region | None = None
    kind = UNKNOWN
    if len(code.regions) == 1:
        found = code.regions[0]
    else:
        for r in code.regions:
            if r.leading is not None:
                if r.leading.match(nsn) is not None:
                    found = r
                    break
            else:
                kind = r.kind(nsn)  # the region is the first whose kind is known: keep it
                if kind != UNKNOWN:
                    found = r
                    break
    if found is not None and kind == UNKNOWN:
        kind = found.kind(nsn)
    if found is None or kind == UNKNOWN:
        return NumberInfo(code.fallback_country, UNKNOWN, False)
    return NumberInfo(found.code, kind, True)


# -- full path: phonenumbers' parser ----------------------------------------------------


def _full(text: str) -> NumberInfo:
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


written_inits(NumberInfo)
