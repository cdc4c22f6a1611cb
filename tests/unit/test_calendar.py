"""Pool months in the tenant's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

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
