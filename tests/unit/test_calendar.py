"""Pool months in the tenant's time zone."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO
from zoneinfo import _common as zoneinfo_common
from zoneinfo import available_timezones

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.calendar import month_key, zone

ZONES = ["Pacific/Kiritimati", "Etc/GMT+12", "Asia/Kathmandu", "America/St_Johns", "Europe/London", None]


@settings(max_examples=2000, deadline=None)
@given(
    st.datetimes(datetime(2020, 1, 1), datetime(2035, 1, 1)),
    st.sampled_from(
        [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)), timezone(timedelta(hours=5, minutes=45))]
    ),
    st.sampled_from(ZONES),
)
def test_month_key_is_the_month_on_the_tenants_wall_clock(at: datetime, given_in: timezone, tz: str | None) -> None:
    moment = at.replace(tzinfo=given_in)
    local = moment.astimezone(zone(tz))
    assert month_key(moment, tz) == f"{local.year:04d}-{local.month:02d}"


def test_month_turns_at_local_midnight() -> None:
    # 2026-11-30 23:30 in Kiritimati (UTC+14) is already December there
    assert month_key(datetime(2026, 11, 30, 10, 0, tzinfo=UTC), "Pacific/Kiritimati") == "2026-12"
    assert month_key(datetime(2026, 12, 1, 3, 0, tzinfo=UTC), "America/New_York") == "2026-11"
    assert month_key(datetime(2026, 12, 1, 3, 0, tzinfo=UTC), None) == "2026-12"


ALL_ZONES = sorted(available_timezones())


@st.composite
def near_a_month_turn(draw: st.DrawFn) -> datetime:
    """A UTC moment within 15 hours of a month's turn, 1960-2110 (past both ends of the
    years month_key's shortcut trusts)."""
    year, month = draw(st.integers(1960, 2110)), draw(st.integers(1, 12))
    turn = datetime(year, month, 1, tzinfo=UTC)
    edge = draw(st.sampled_from([-14 * 3600, 12 * 3600]))  # where the shortcut's bounds lie
    seconds = draw(st.one_of(st.integers(-15 * 3600, 15 * 3600), st.integers(edge - 3700, edge + 3700)))
    return turn + timedelta(seconds=seconds)


# the zones at the ends of the offsets (UTC-12, UTC+14), then any zone
EXTREME_ZONES = ["Etc/GMT+12", "Etc/GMT-14", "Pacific/Kiritimati", "Pacific/Apia"]


@settings(max_examples=3000, deadline=None)
@given(near_a_month_turn(), st.one_of(st.sampled_from(EXTREME_ZONES), st.sampled_from(ALL_ZONES)))
def test_month_key_near_a_turn_in_every_zone(moment: datetime, tz: str) -> None:
    local = moment.astimezone(zone(tz))
    assert month_key(moment, tz) == f"{local.year:04d}-{local.month:02d}"


def test_every_zones_offset_since_1970_is_within_the_shortcuts_bounds() -> None:
    """month_key answers from UTC alone 12 hours into a month and until 14 hours before its
    end: true only while no zone's offset leaves UTC-12..UTC+14. Read from every zone's
    transitions in the tz database (zoneinfo's own TZif reader)."""
    since = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
    outside = []
    for name in ALL_ZONES:
        with _tz_file(name) as f:
            trans_idx, trans_list_utc, utcoff, *_ = zoneinfo_common.load_data(f)
        in_force = {utcoff[i] for t, i in zip(trans_list_utc, trans_idx, strict=True) if t >= since}
        before = [i for t, i in zip(trans_list_utc, trans_idx, strict=True) if t < since]
        in_force.add(utcoff[before[-1]] if before else utcoff[0])  # type 0: before the first
        outside += [(name, o) for o in in_force if not -12 * 3600 <= o <= 14 * 3600]
    assert not outside


def _tz_file(name: str) -> BinaryIO:
    try:
        return zoneinfo_common.load_tzdata(name)
    except (ModuleNotFoundError, FileNotFoundError, zoneinfo.ZoneInfoNotFoundError):
        for root in zoneinfo.TZPATH:
            path = Path(root) / name
            if path.is_file():
                return path.open("rb")
        raise
