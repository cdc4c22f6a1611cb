"""Calendar rules: pool months in the tenant's time zone, 12-month lot expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


def month_key(at: datetime, time_zone: str | None) -> str:
    """The pool month ("2026-11") a moment belongs to, in the tenant's time zone."""
    day = at.day
    if 3 <= day <= 26:
        # UTC offsets span less than two days, so mid-month the zone cannot change the month.
        return _month_text(at.year, at.month)
    if at.tzinfo is UTC and _OFFSETS_KNOWN[0] <= at.year <= _OFFSETS_KNOWN[1]:
        # Every zone's offset from 1970 to 2099 is within UTC-12 and UTC+14 (held by
        # tests/unit/test_calendar.py over the tz database): a moment 12 hours or more
        # into its month's first UTC day, or more than 14 hours before the end of its
        # month's last, is in that month on every wall clock: of the calls from the 27th to
        # the 2nd, only those in the 26 hours around the month's turn ask the zone.
        if day == 1:
            if at.hour >= 12:
                return _month_text(at.year, at.month)
        elif at.hour < 10 or day < _days_in(at.year, at.month):
            return _month_text(at.year, at.month)
    local = at.astimezone(zone(time_zone))
    return _month_text(local.year, local.month)


_OFFSETS_KNOWN = (1970, 2099)  # years whose UTC offsets, in every zone, are within -12h and +14h


_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_in(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS[month]


_MONTHS: dict[int, str] = {}


def _month_text(year: int, month: int) -> str:
    """Formatted once per month: every call asks (a dict on an int, not a cache's tuple)."""
    key = year * 16 + month
    text = _MONTHS.get(key)
    if text is None:
        text = _MONTHS[key] = f"{year:04d}-{month:02d}"
    return text


@lru_cache(maxsize=4096)
def month_closes(month: str, time_zone: str | None, lateness: timedelta) -> datetime:
    """When a tenant's month closes (our rule): the allowed lateness after the month's end in
    the tenant's time zone. Until then a late call still joins its month; after it the month's
    statement is final, and money that arrives later (a re-rating, a call later than the
    lateness) is posted in the month it arrives in, naming its call's month."""
    year, mon = int(month[:4]), int(month[5:7])
    year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    end = datetime(year, mon, 1, tzinfo=zone(time_zone))
    return end.astimezone(UTC) + lateness


def posted_month(month: str, charged_at: datetime | None, time_zone: str | None, lateness: timedelta) -> str:
    """The month a record whose call is in `month` is posted in: its call's month while
    that month is open when it is charged, the month it is charged in after that."""
    if charged_at is None or charged_at < month_closes(month, time_zone, lateness):
        return month
    return max(month, month_key(charged_at, time_zone))


def add_months(at: datetime, months: int) -> datetime:
    """Same wall-clock moment `months` later; the 31st becomes the month's last day."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    for day in (at.day, 30, 29, 28):
        try:
            return at.replace(year=year, month=month, day=min(at.day, day))
        except ValueError:
            continue
    raise ValueError(f"cannot add {months} months to {at}")
