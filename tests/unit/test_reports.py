"""Finance's reports from the ledger, on a small month worked out by hand: the PSTN usage
report byte for byte (masking for France and Germany, a split call, a toll-free call to an
auto attendant, a FREECALL call), the minute pools report, a statement that adds up and
whose closing state is the replay's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st_

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import charge_to_avro, event_from_avro, event_to_avro
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.reports.finance import POOL_COLUMNS, POOL_HEADERS, check_month, render
from processors import reports
from processors.engine import Engine
from processors.inputs import cdr_from_dict, tenant_from_dict
from processors.model import Cdr, Event
from processors.rating import RateCard
from processors.replay import state_from_ledger

CARD = RateCard.from_csv_text(
    "currency,service,origin,destination,number_type,price_per_minute,connection_fee,first_increment,next_increment\n"
    "EUR,calling,*,*,fixed,0.10,0.02,60,60\n"
    "EUR,dialout,*,*,fixed,0.05,0,60,60\n"
    "EUR,tollfree,*,FR,fixed,0.03,0,60,60\n"
)


def tenant(tid: str, country: str, tz: str, licences: list[str]) -> Any:
    return tenant_from_dict(
        {
            "tenant_id": tid,
            "country": country,
            "currency": "EUR",
            "channel": "direct",
            "time_zone": tz,
            "users": [{"user_id": "u1", "usage_country": country, "licences": licences}],
            "funding": [{"lot_id": f"{tid}-L1", "amount": "100", "purchased_at": "2026-10-01T00:00:00Z"}],
        }
    )


FR = tenant("fr", "FR", "Europe/Paris", ["MCOMEETADD", "MCOPSTNPP"])
DE = tenant("de", "DE", "Europe/Berlin", ["MCOPSTNPP"])


def cdr(tid: str, cid: str, kind: str, frm: str, to: str, start: str, dur: int, **kw: Any) -> Cdr:
    s = datetime.fromisoformat(start)
    d = {
        "call_id": cid,
        "tenant_id": tid,
        "user_id": "u1",
        "call_type": kind,
        "caller_number": frm,
        "callee_number": to,
        "start_time": start,
        "end_time": (s + timedelta(seconds=dur)).isoformat(),
        "duration_s": dur,
        **kw,
    }
    c = cdr_from_dict(d)
    assert isinstance(c, Cdr), c
    return c


CALLS = [
    cdr("fr", "fr-1", "user_out", "+33170000001", "+33142685300", "2026-11-10T09:00:00+00:00", 90,
        usage_country="FR", user_principal_name="u1@fr.example", user_display_name="Anne, Dupont", graph_call_id="g-1"),
    cdr("fr", "fr-2", "conf_out", "+33170000001", "+442071234567", "2026-11-11T10:00:00+00:00", 3660,
        conference_id="conf-9", usage_country="FR"),
    cdr("fr", "fr-3", "ucap_in", "+33142685301", "+33800123456", "2026-11-12T11:00:00+00:00", 60, user_id=None),
    cdr("fr", "fr-4", "user_out", "+33170000001", "+33612345678", "2026-11-13T12:00:00+00:00", 30, usage_country="FR"),
    cdr("de", "de-1", "user_out", "+4930000001", "+4930123456", "2026-11-14T13:00:00+00:00", 60, usage_country="DE"),
]  # fmt: skip


def ledger() -> tuple[list[dict[str, Any]], list[Event]]:
    """The month charged through the engine and read back as the ledger holds it (Avro)."""
    engine = Engine([FR, DE], CARD)
    codec = Codec(Settings().schemas_dir)
    charges, events = [], []
    for i, c in enumerate(CALLS):
        result = engine.process(c)
        assert result is not None
        charge, evs = result
        raw = codec.encode("charge", charge_to_avro(charge, 0, i, datetime(2026, 11, 20, tzinfo=UTC)))
        charges.append(codec.decode(raw)[1])
        for e in evs:
            events.append(event_from_avro(codec.decode(codec.encode("balance_event", event_to_avro(e, "EUR")))[1]))
    return charges, events


HEADER = (
    "UsageId,Call ID,Conference ID,User Location,AAD ObjectId,UPN,User Display Name,Caller ID,Call Type,Number Type,"
    "Domestic/International,Destination Dialed,Destination Number,Start Time,End Time,Duration Seconds,"
    "Connection Fee,Charge,Currency,Capability\r\n"
)
# Worked out by hand from CARD. fr-1: 90 s bills 2 minutes x 0.10 + 0.02 fee = 0.22, the
# dialled French number masked to 4 trailing digits. fr-2: 61 minutes, 60 from the Zone A
# pool (1 licence) and 1 at 0.05. fr-3: the auto attendant's toll-free number, 1 minute at
# 0.03, no user, the caller masked. fr-4: no mobile tariff: free, FREECALL. de-1: 1 minute
# at 0.10 + 0.02, masked to 3 digits (Germany).
FR_CSV = HEADER + (
    'fr-1,g-1,,FR,u1,u1@fr.example,"Anne, Dupont",+33170000001,user_out,User geographic,Domestic,France,'
    "+3314268****,2026-11-10T09:00:00Z,2026-11-10T09:01:30Z,90,0.02,0.22,EUR,MCOPSTNPP\r\n"
    "fr-2,,conf-9,FR,u1,,,+33170000001,conf_out,User geographic,International,United Kingdom,"
    "+44207123****,2026-11-11T10:00:00Z,2026-11-11T11:01:00Z,3660,0.00,0.05,EUR,MCOPSTNPP\r\n"
    "fr-3,,,,,,,+3314268****,ucap_in,Toll free,Domestic,France,"
    "+33800123456,2026-11-12T11:00:00Z,2026-11-12T11:01:00Z,60,0.00,0.03,EUR,MCOPSTNPP\r\n"
    "fr-4,,,FR,u1,,,+33170000001,user_out,User geographic,Domestic,France,"
    "+3361234****,2026-11-13T12:00:00Z,2026-11-13T12:00:30Z,30,0.00,0.00,EUR,FREECALL\r\n"
)
DE_CSV = HEADER + (
    "de-1,,,DE,u1,,,+4930000001,user_out,User geographic,Domestic,Germany,"
    "+4930123***,2026-11-14T13:00:00Z,2026-11-14T13:01:00Z,60,0.02,0.12,EUR,MCOPSTNPP\r\n"
)


def test_the_usage_report_is_the_hand_computed_csv_byte_for_byte() -> None:
    charges, _ = ledger()
    assert render(reports.usage(FR, charges, "2026-11"), reports.USAGE_COLUMNS, "csv").encode() == FR_CSV.encode()
    assert render(reports.usage(DE, charges, "2026-11"), reports.USAGE_COLUMNS, "csv") == DE_CSV
    assert reports.usage(FR, charges, "2026-10") == []


def test_the_pools_report_for_the_same_month() -> None:
    charges, _ = ledger()
    assert render(reports.pools(FR, charges, "2026-11"), POOL_COLUMNS, "csv", POOL_HEADERS) == (
        "Country or region,Capability description,Total minutes,Minutes used,Minutes available,Capability\r\n"
        "Zone A,Audio Conferencing dial-out to Zone A,60,60,0,MCOMEETADD\r\n"
    )


def test_per_user_pools_are_summed_per_country_of_their_users() -> None:
    users = [
        {"user_id": "de1", "usage_country": "DE", "licences": ["MCOPSTN8"]},
        {"user_id": "de2", "usage_country": "DE", "licences": ["MCOPSTN8"]},
        {"user_id": "fr1", "usage_country": "FR", "licences": ["MCOPSTN8"]},
    ]
    t = tenant_from_dict(
        {
            "tenant_id": "mix",
            "country": "DE",
            "currency": "EUR",
            "channel": "direct",
            "time_zone": "UTC",
            "users": users,
        }
    )
    assert render(reports.pools(t, [], "2026-11"), POOL_COLUMNS, "csv", POOL_HEADERS) == (
        "Country or region,Capability description,Total minutes,Minutes used,Minutes available,Capability\r\n"
        'DE,"Domestic Calling Plan (120 minutes, per user)",240,0,240,MCOPSTN8\r\n'
        'FR,"Domestic Calling Plan (120 minutes, per user)",120,0,120,MCOPSTN8\r\n'
    )


def test_the_statement_adds_up_and_closes_on_the_replayed_state() -> None:
    charges, events = ledger()
    st = reports.statement(FR, charges, events, "2026-11")
    # the lot bought in October is the opening; November's charges 0.22 + 0.05 + 0.03 + 0
    assert (st.opening_balance, st.funding, st.charges, st.expired) == (100_000_000, 0, 300_000, 0)
    assert st.closing_balance == 99_700_000 and st.adds_up
    assert st.charges_by_bucket == {"billable": 300_000} and st.charges_by_capability == {"MCOPSTNPP": 300_000}
    replayed = state_from_ledger(FR, charges, events)
    assert (replayed.balance, replayed.deficit) == (st.closing_balance, st.closing_deficit)
    october = reports.statement(FR, charges, events, "2026-10")
    assert october.fundings[0]["lot_id"] == "fr-L1" and october.closing_balance == st.opening_balance


def test_a_month_is_checked() -> None:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    assert check_month("2026-11", FR, now) == "2026-11"
    for bad in ("2026-13", "11-2026", "2026-1", "2027-01"):
        with pytest.raises(InputError):
            check_month(bad, FR, now)


def test_masking_follows_the_tenant_country_table() -> None:
    assert reports.mask("+33142685300", "FR") == "+3314268****"
    assert reports.mask("+4930123456", "de") == "+4930123***"
    assert reports.mask("+12125550123", "US") == "+12125550123"  # not in the table: shown whole
    assert reports.mask("", "FR") == ""


def test_the_chart_is_a_png_of_the_stated_size_plotting_the_ledgers_series(tmp_path: Any) -> None:
    import struct

    from pipeline.reports import chart

    charges, events = ledger()
    data = reports.chart_data(FR, charges, events, "2026-11")
    # the balance after each change in time order: 100.00 - 0.22 - 0.05 - 0.03 (fr-4 is free)
    assert [b for _, b in data.balance] == [99_780_000, 99_730_000, 99_700_000]
    assert data.pool_used == [("2026-11-11", 60)] and data.pool_total == 60  # the Zone A pool
    fig = chart.figure(data, "fr", "EUR")
    drawn = chart.series(fig)
    assert drawn["balance"] == [99.78, 99.73, 99.70] and drawn["pool_used"] == [60] and drawn["pool_total"] == [60]
    month = chart.series(chart.figure(data, "fr", "EUR", "2026-11"))  # from the opening to the month's end
    assert month["balance"] == [100.0, 99.78, 99.73, 99.70, 99.70]
    out = chart.write(data, "fr", "EUR", tmp_path / "fr.png")
    raw = out.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])  # the IHDR chunk
    assert (width, height) == (1000, 600)


def test_the_chart_marks_funding_expiry_and_zero() -> None:
    t = tenant_from_dict(
        {
            "tenant_id": "z",
            "country": "US",
            "currency": "USD",
            "channel": "direct",
            "users": [{"user_id": "u1", "usage_country": "US", "licences": ["PAYG", "MCOPSTNPP"]}],
            "funding": [{"lot_id": "z-L1", "amount": "0.10", "purchased_at": "2026-11-01T00:00:00Z"}],
        }
    )
    usd = RateCard.from_csv_text(
        "currency,service,origin,destination,number_type,price_per_minute,connection_fee,first_increment,"
        "next_increment\nUSD,calling,*,*,fixed,0.10,0,60,60\n"
    )
    engine = Engine([t], usd)
    codec = Codec(Settings().schemas_dir)
    charges, events = [], []
    for i in range(2):
        at = f"2026-11-0{2 + i}T10:00:00+00:00"
        result = engine.process(cdr("z", f"z-{i}", "user_out", "+12125550100", "+12125550123", at, 60))
        assert result is not None
        charge, evs = result
        charges.append(
            codec.decode(codec.encode("charge", charge_to_avro(charge, 0, i, datetime(2026, 11, 20, tzinfo=UTC))))[1]
        )
        events += evs
    data = reports.chart_data(t, charges, events, "2026-11")
    assert [k for _, k, _ in data.marks] == ["funding", "zero"]
    assert [b for _, b in data.balance] == [100_000, 0, -100_000]


@given(
    st_.lists(st_.integers(0, 10**12), min_size=6, max_size=6),
    st_.sampled_from(["USD", "EUR", "JPY", "KWD"]),
    st_.integers(0, 3),
)
@example([177_555_000, 60_000_000, 22_204_500, 0, 5_000_000, 140_000], "USD", 1)
def test_the_statement_text_reads_as_money_and_each_printed_column_adds_up(
    amounts: list[int], currency: str, fundings: int
) -> None:
    """One precision in the amount column (the currency's minor unit), every line aligned,
    no empty field; the printed balance and deficit columns add up to their printed closing
    figures (a rounding line says by how much rounding each line moved them)."""
    import re
    from decimal import Decimal

    from processors.money import MICRO, minor_unit

    opening, funded, charged, adjusted, expired, taken = amounts
    s = reports.Statement("t1", "2026-11", currency, opening_balance=opening, opening_deficit=taken // 3)
    for i in range(fundings):
        covered = min(taken, funded) if i == 0 else 0
        s.fundings.append({"lot_id": f"L{i}", "at": "2026-11-0{i+1}T00:00:00Z", "amount": funded, "invoice_id": "",
                           "deficit_covered": covered})  # fmt: skip
    s.charges, s.adjustments, s.deficit_taken = charged, adjusted, taken
    s.expiries = [{"lot_id": "L9", "at": "2026-11-30T00:00:00Z", "amount": expired}]
    s.closing_balance = opening + s.funding - charged - adjusted - expired
    s.closing_deficit = s.opening_deficit + taken - s.deficit_covered
    lines = s.lines()
    places = minor_unit(currency)
    amount = r"-?\d+" + (rf"\.\d{{{places}}}" if places else "")
    rows = [x for x in lines if x.startswith("  ") and re.search(rf"\s{amount}(  .*)?$", x)]
    assert rows and all(re.match(rf"^  .{{46}}\s*{amount}(  \S.*)?$", x) for x in rows), rows
    ends = {len(re.match(rf"^(  .{{46}}\s*{amount})", x).group(1)) for x in rows}  # type: ignore[union-attr]
    assert len(ends) == 1  # one column: every amount ends in the same place
    assert not any(re.search(r"\b(invoice|by)\s*[,)]|  ,|\(\)", x) for x in lines)  # no empty field

    def value(line: str) -> int:
        text = re.search(rf"({amount})(  .*)?$", line).group(1)  # type: ignore[union-attr]
        return int(Decimal(text) * MICRO)

    def column(first: str, last: str) -> tuple[int, int]:
        start = next(i for i, x in enumerate(lines) if x.startswith(f"  {first}"))
        end = next(i for i, x in enumerate(lines) if x.startswith(f"  {last}"))
        total = sum(value(x) * (-1 if x.startswith("  - ") else 1) for x in lines[start:end])
        return total, value(lines[end])

    printed, closing = column("Opening balance", "Closing balance")
    assert printed == closing
    printed, closing = column("Opening deficit", "Closing deficit")
    assert printed == closing
