"""Calendar rules: pool months in the tenant's time zone, 12-month lot expiry."""

from __future__ import annotations

from datetime import datetime
from functools import cache, lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


def month_key(at: datetime, time_zone: str | None) -> str:
    """The pool month ("2026-11") a moment belongs to, in the tenant's time zone."""
    if 3 <= at.day <= 26:
        # UTC offsets span less than two days, so mid-month the zone cannot change the month.
        return _month_text(at.year, at.month)
    local = at.astimezone(zone(time_zone))
    return _month_text(local.year, local.month)


@cache
def _month_text(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"  # formatted once per month: every call asks


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
