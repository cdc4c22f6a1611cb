"""Money at the edges of real input, one class at a time, on the pure core (and the file
reader in front of it): user-less Graph rows, raw Graph responses, event-time lots, funding
at purchase time, never-funded tenants, licences, emergency shapes, channel messages and the
minimum purchase. Every expected amount is worked out by hand from tests/fixtures/rates.csv."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import cdr_from_avro, cdr_to_avro
from pipeline.adapters.files import read_cdr_lines
from pipeline.config import Settings
from processors.charging import charge_call, prepare
from processors.control import authorize, funding_refusal, notifications, service_state
from processors.engine import Engine
from processors.inputs import Rejected, TenantError, cdr_from_dict, tenant_from_dict
from processors.ledger import TenantState, forfeit_due, fund
from processors.model import Cdr, Event
from processors.money import parse_money
from processors.numbers import EMERGENCY, analyze
from tests.helpers import FIXTURES, fixture_rates, tenant_entry

RATES = fixture_rates()
T0 = datetime(2026, 11, 10, 12, tzinfo=UTC)


def tenant(**sc: Any) -> Any:
    sc.setdefault("users", [["u1", "US", ["MCOPSTN1", "MCOPSTNPP"]]])
    return tenant_from_dict(tenant_entry(sc))


def call(
    call_id: str,
    to: str = "+12125550123",
    start: datetime = T0,
    minutes: int = 1,
    user: str = "u1",
    kind: str = "user_out",
    caller: str = "+14155550100",
) -> Cdr:
    return Cdr(call_id, "T", user, kind, caller, to, start, start + timedelta(minutes=minutes), minutes * 60)


def graph_row(**over: Any) -> dict[str, Any]:
    doc = json.loads((FIXTURES / "graph_getpstncalls_example.json").read_text())
    return {**doc["value"][0], **over}


# -- 1. rows without user information ---------------------------------------------------------


def test_a_user_less_toll_free_inbound_row_is_charged_to_the_tenant() -> None:
    row = graph_row(
        userId=None,
        userPrincipalName=None,
        userDisplayName=None,
        callType="ucap_in",
        calleeNumber="+18005550199",  # the auto attendant's toll-free number
        callerNumber="+12125550123",
        startDateTime="2026-11-10T12:00:00Z",
        endDateTime="2026-11-10T12:03:00Z",
        duration=180,
    )
    cdr = cdr_from_dict({"tenantId": "T", **row})
    assert isinstance(cdr, Cdr) and cdr.user_id == ""
    book = prepare(tenant(funding="10"))
    state = TenantState()
    charge, _ = charge_call(book, state, cdr, RATES)
    # toll-free inbound from the US: 3 min x 0.03 = 0.09 from credits, no user, no flag
    assert (charge.classification, charge.amount, charge.user_id, charge.flags) == ("billable", 90_000, "", ())
    assert state.balance == parse_money("10") - 90_000


def test_a_user_less_bot_outbound_call_is_billed_like_any_outbound_call() -> None:
    cdr = call("b1", to="+442071234567", minutes=2, user="", kind="ucap_out")
    charge, _ = charge_call(prepare(tenant(funding="10")), TenantState(), cdr, RATES)
    assert (charge.classification, charge.amount, charge.flags) == ("billable", 200_000, ())  # 2 x 0.10


def test_a_user_less_cdr_goes_through_avro_with_the_user_empty() -> None:
    codec = Codec(Settings().schemas_dir)
    cdr = call("b2", user="", kind="ucap_in", to="+18005550199")
    _, record = codec.decode(codec.encode("cdr", cdr_to_avro(cdr)), expect="cdr")
    assert cdr_from_avro(record) == cdr
    # a reader of the first CDR schema version reads it too: the field stays a string
    old = json.loads((Settings().schemas_dir / "cdr.v1.avsc").read_text())
    assert next(f for f in old["fields"] if f["name"] == "user_id")["type"] == "string"


def test_authorize_does_not_ask_a_resource_account_for_a_user_licence() -> None:
    book = prepare(tenant(funding="10"))
    state = TenantState()
    fund(book.tenant, state, "L1", parse_money("10"), T0, T0)
    inbound = call("a1", to="+18005550199", user="ra-autoattendant", kind="ucap_in")
    assert authorize(book, state, inbound, RATES).allowed
    empty = TenantState()
    assert not authorize(book, empty, inbound, RATES).allowed  # only a positive balance counts


# -- 2. raw Graph responses --------------------------------------------------------------------


def test_a_raw_graph_response_takes_the_tenant_from_the_command_line(tmp_path: Path) -> None:
    raw = FIXTURES / "graph_getpstncalls_example.json"
    rows = list(read_cdr_lines(raw, tenant_id="contoso"))
    assert len(rows) == 1
    cdr = cdr_from_dict(rows[0][1])
    assert isinstance(cdr, Cdr) and cdr.tenant_id == "contoso"
    without = cdr_from_dict(next(iter(read_cdr_lines(raw)))[1])
    assert isinstance(without, Rejected) and "tenantId" in without.detail


def test_page_files_of_one_response_are_read_as_one(tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "graph_getpstncalls_example.json").read_text())
    pages = []
    for i in range(3):
        page = {**doc, "value": [{**doc["value"][0], "id": f"row-{i}"}]}
        if i < 2:
            page["@odata.nextLink"] = f"https://graph.microsoft.com/v1.0/next?page={i + 1}"
        path = tmp_path / f"page{i}.json"
        path.write_text(json.dumps(page))
        pages.append(path)
    got = [(where, cdr_from_dict(obj)) for where, obj in read_cdr_lines(pages, tenant_id="contoso")]
    assert [w for w, _ in got] == ["page0.json row 1", "page1.json row 1", "page2.json row 1"]
    assert [c.call_id for _, c in got if isinstance(c, Cdr)] == ["row-0", "row-1", "row-2"]


def test_files_as_windows_tools_and_exports_write_them_are_read(tmp_path: Path) -> None:
    # A Graph response saved by PowerShell starts with a UTF-8 byte order mark; an export
    # can be one JSON array of CDRs, pretty-printed over many lines. Before, the first was
    # read as JSON lines (every line bad) and so was the second.
    doc = json.loads((FIXTURES / "graph_getpstncalls_example.json").read_text())
    (tmp_path / "graph.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(doc, indent=2).encode())
    rows = [obj for _, obj in read_cdr_lines(tmp_path / "graph.json", tenant_id="contoso")]
    assert [cdr_from_dict(r).call_id for r in rows] == [r["id"] for r in doc["value"]]
    calls = [{**json.loads(line), "call_id": f"arr-{i}"} for i, line in enumerate(_jsonl_calls()[:3])]
    (tmp_path / "calls.json").write_text(json.dumps(calls, indent=1))
    got = list(read_cdr_lines(tmp_path / "calls.json"))
    assert [w for w, _ in got] == ["row 1", "row 2", "row 3"]
    assert [cdr_from_dict(o).call_id for _, o in got] == ["arr-0", "arr-1", "arr-2"]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(_jsonl_calls()[:2]).encode())
    assert all(isinstance(cdr_from_dict(o), Cdr) for _, o in read_cdr_lines(tmp_path / "bom.jsonl"))
    (tmp_path / "junk.json").write_text('[1, {"call_id": "z"}]')
    assert [type(cdr_from_dict(o)) for _, o in read_cdr_lines(tmp_path / "junk.json")] == [Rejected, Rejected]


def test_tenant_id_fills_the_tenant_of_any_row_that_names_none(tmp_path: Path) -> None:
    calls = [json.loads(line) for line in _jsonl_calls()[:2]]
    del calls[0]["tenant_id"]
    (tmp_path / "calls.jsonl").write_text("\n".join(json.dumps(c) for c in calls) + "\n")
    got = [cdr_from_dict(o) for _, o in read_cdr_lines(tmp_path / "calls.jsonl", tenant_id="contoso")]
    assert [c.tenant_id for c in got if isinstance(c, Cdr)] == ["contoso", calls[1]["tenant_id"]]
    unnamed = [cdr_from_dict(o) for _, o in read_cdr_lines(tmp_path / "calls.jsonl")]
    assert isinstance(unnamed[0], Rejected) and "tenant_id" in unnamed[0].detail


def _jsonl_calls() -> list[str]:
    return [
        line for line in (Path(__file__).parents[2] / "pipeline/examples/cdrs.jsonl").read_text().splitlines() if line
    ]


def test_direct_routing_rows_are_recognised_and_not_charged(tmp_path: Path) -> None:
    row = {
        "id": "dr-1",
        "userId": "u1",
        "startDateTime": "2026-11-10T12:00:00Z",
        "endDateTime": "2026-11-10T12:05:00Z",
        "duration": 300,
        "callType": "ByotOut",
        "calleeNumber": "+442071234567",
        "callerNumber": "+12125550100",
        "successfulCall": True,
        "finalSipCode": 0,
        "trunkFullyQualifiedDomainName": "sbc.contoso.com",
        "mediaBypassEnabled": False,
    }
    doc = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#...directRoutingLogRow)", "value": [row]}
    path = tmp_path / "dr.json"
    path.write_text(json.dumps(doc))
    ((_, obj),) = list(read_cdr_lines(path, tenant_id="T"))
    assert obj["routing"] == "direct_routing"
    cdr = cdr_from_dict({**obj, "callType": "user_out"})
    assert isinstance(cdr, Cdr) and cdr.routing == "direct_routing"
    charge, _ = charge_call(prepare(tenant(funding="10")), TenantState(), cdr, RATES)
    assert (charge.classification, charge.amount) == ("not_charged", 0)


# -- 3. credit lots follow the time of the call --------------------------------------------------

LOTS = [["old", "2.00", "2025-11-20T00:00:00Z"], ["new", "10.00", "2026-11-01T00:00:00Z"]]
EXPIRY = datetime(2026, 11, 20, tzinfo=UTC)  # "old" expires 12 months after purchase


def test_a_late_cdr_pays_with_the_lot_valid_when_the_call_was_made() -> None:
    engine = Engine([tenant(users=[["u1", "US", ["PAYG", "MCOPSTNPP"]]], lots=LOTS)], RATES)
    after = engine.process(call("after", start=EXPIRY + timedelta(hours=10), minutes=5))
    assert after is not None  # the data's clock is 10 h past the expiry: "old" is not forfeited yet
    late = engine.process(call("late", start=EXPIRY - timedelta(hours=2), minutes=5))
    assert late is not None
    charge, _ = late
    assert [(d.lot_id, d.amount) for s in charge.segments for d in s.lots] == [("old", 500_000)]
    assert "late_after_expiry" not in charge.flags


def test_a_call_across_the_expiry_instant_draws_its_lot_and_leaves_no_false_deficit() -> None:
    engine = Engine([tenant(users=[["u1", "US", ["PAYG", "MCOPSTNPP"]]], lots=[LOTS[0]])], RATES)
    result = engine.process(call("across", start=EXPIRY - timedelta(minutes=3), minutes=10))
    assert result is not None
    charge, events = result
    assert [(d.lot_id, d.amount) for s in charge.segments for d in s.lots] == [("old", 1_000_000)]
    assert charge.balance_after == 1_000_000 and charge.segments[0].deficit == 0
    assert "balance_zero" not in [e.type for e in events]


def test_a_lot_is_forfeited_once_its_expiry_is_older_than_the_allowed_lateness() -> None:
    engine = Engine([tenant(users=[["u1", "US", ["PAYG", "MCOPSTNPP"]]], lots=LOTS)], RATES)
    engine.process(call("c1", start=EXPIRY + timedelta(hours=71), minutes=1))
    assert not engine.states["T"].lots[0].expired
    _, events = engine.process(call("c2", start=EXPIRY + timedelta(hours=72), minutes=1)) or (None, [])
    assert [(e.type, e.field_dict().get("amount")) for e in events] == [("credits_expired", 2_000_000)]
    late = engine.process(call("late", start=EXPIRY - timedelta(days=1), minutes=1))
    assert late is not None
    charge, _ = late
    assert "late_after_expiry" in charge.flags  # charged to the current lots
    assert [d.lot_id for s in charge.segments for d in s.lots] == ["new"]


def test_the_control_timer_forfeits_on_the_later_of_the_data_clock_and_the_wall_clock() -> None:
    t = tenant(users=[["u1", "US", ["PAYG", "MCOPSTNPP"]]], lots=[LOTS[0]])
    state = TenantState()
    fund(t, state, "old", 2_000_000, EXPIRY - timedelta(days=365), EXPIRY - timedelta(days=365))
    assert forfeit_due(t, state, timedelta(hours=72), wall=EXPIRY + timedelta(hours=71)) == []
    events = forfeit_due(t, state, timedelta(hours=72), wall=EXPIRY + timedelta(hours=72))
    assert [e.type for e in events] == ["credits_expired", "balance_zero"] and state.balance == 0


# -- 4. offline rating funds nothing from the future ---------------------------------------------


def test_a_february_call_does_not_draw_on_a_lot_bought_in_march() -> None:
    lots = [["march", "20.00", "2026-03-01T00:00:00Z"]]
    engine = Engine([tenant(users=[["u1", "US", ["PAYG", "MCOPSTNPP"]]], lots=lots)], RATES)
    feb = engine.process(call("feb", start=datetime(2026, 2, 10, tzinfo=UTC), minutes=3))
    assert feb is not None
    charge, events = feb
    assert charge.segments[0].deficit == 300_000 and charge.balance_after == -300_000
    assert [e.type for e in events] == ["balance_zero"]
    apr = engine.process(call("apr", start=datetime(2026, 4, 10, tzinfo=UTC), minutes=1))
    assert apr is not None
    _, events = apr
    funded = [e for e in events if e.type == "funds_added"]
    assert funded[0].field_dict()["deficit_covered"] == 300_000 and funded[0].at == datetime(2026, 3, 1, tzinfo=UTC)


def test_as_of_applies_the_lots_bought_by_then_and_forfeits_what_expired() -> None:
    lots = [["a", "5.00", "2025-01-01T00:00:00Z"], ["b", "7.00", "2026-01-01T00:00:00Z"]]
    engine = Engine([tenant(users=[["u1", "US", ["PAYG", "MCOPSTNPP"]]], lots=lots)], RATES)
    events = engine.as_of(datetime(2026, 1, 10, tzinfo=UTC))
    types = [(e.type, e.field_dict().get("lot_id")) for e in events]
    assert types == [("funds_added", "a"), ("balance_restored", None), ("funds_added", "b"), ("credits_expired", "a")]
    assert engine.states["T"].balance == 7_000_000


# -- 5. tenants that never had credits ------------------------------------------------------------


def test_a_never_funded_tenant_raises_balance_zero_once_and_is_stopped_from_the_start() -> None:
    t = tenant(users=[["u1", "US", ["PAYG", "MCOPSTNPP"]]])
    assert not service_state(t, TenantState()).billable_calls
    engine = Engine([t], RATES)
    kinds = []
    for i in range(3):
        result = engine.process(call(f"c{i}", start=T0 + timedelta(minutes=10 * i)))
        assert result is not None
        kinds += [e.type for e in result[1]]
    assert kinds == ["balance_zero"] and engine.states["T"].balance == -300_000


def test_an_mca_tenant_without_credits_is_not_in_the_zero_state() -> None:
    engine = Engine([tenant(channel="mca", users=[["u1", "US", ["PAYG", "MCOPSTNPP"]]])], RATES)
    result = engine.process(call("c1"))
    assert result is not None and result[0].classification == "overage" and result[1] == []


# -- 6. licences ----------------------------------------------------------------------------------


def test_a_call_needing_credits_by_a_user_without_conferencing_or_plan_is_flagged() -> None:
    book = prepare(tenant(funding="10", users=[["u1", "US", ["MCOPSTNPP"]]]))
    charge, _ = charge_call(book, TenantState(), call("c1"), RATES)
    assert charge.amount == 100_000 and charge.flags == ("no_licence",)


def test_microsoft_sku_names_grant_their_capabilities() -> None:
    t = tenant(users=[["u1", "US", ["SPE_E5", "MCOPSTNC", "ENTERPRISEPACK"]]])
    assert t.users["u1"].licences == frozenset({"MCOMEETADD", "MCOPSTNPP"})
    # so the E5 user's dial-out draws the Zone A pool (60 minutes), as MCOMEETADD does
    book = prepare(t)
    charge, _ = charge_call(book, TenantState(), call("d1", to="+442071234567", kind="conf_out"), RATES)
    assert charge.classification == "pooled_zone_a"


@pytest.mark.parametrize(
    ("user", "named"),
    [(["u1", "US", ["E5_TYPO"]], "E5_TYPO"), (["u1", "US", ["MCOPSTNPP"], "NoSuchPolicy"], "NoSuchPolicy")],
)
def test_an_unknown_licence_or_policy_is_refused_with_the_user_and_the_name(user: list, named: str) -> None:
    with pytest.raises(TenantError, match=f"user u1: unknown .*{named}"):
        tenant(users=[user])


# -- 7. emergency numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "region"),
    [("911", "US"), ("112", "US"), ("999", "US"), ("+44999", "US"), ("+1911", "GB"), ("+33112", "US"), ("15", "FR")],
)
def test_emergency_codes_in_every_shape_are_never_charged_nor_drawn_from_plans(number: str, region: str) -> None:
    assert analyze(number, region).kind == EMERGENCY
    users = [["u1", region, ["MCOPSTN1", "MCOPSTNPP"]]]
    book = prepare(tenant(funding="10", country=region, users=users))
    state = TenantState()
    cdr = cdr_from_dict(
        {
            "call_id": "e1",
            "tenant_id": "T",
            "user_id": "u1",
            "call_type": "user_out",
            "caller_number": "+12125550100",
            "callee_number": number,
            "start_time": "2026-11-10T12:00:00Z",
            "end_time": "2026-11-10T12:10:00Z",
            "duration_s": 600,
        }
    )
    assert isinstance(cdr, Cdr), cdr  # never rejected
    charge, _ = charge_call(book, state, cdr, RATES)
    assert (charge.classification, charge.amount, state.pool_used) == ("not_charged", 0, {})


# -- 8. messages that fit the channel ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "says", "never"),
    [
        ("direct", "until funds are added", "overage"),
        ("csp", "until your partner adds funds", "overage"),
        ("mca", "post-paid as overage", "stopped"),
        ("nce", "post-paid as overage", "funds are added"),
    ],
)
def test_the_zero_notification_says_what_is_true_for_the_channel(channel: str, says: str, never: str) -> None:
    users = [{"user_id": "a", "usage_country": "US", "licences": [], "email": "a@x", "roles": ["Global Administrator"]}]
    t = tenant_from_dict({**tenant_entry({"channel": channel}), "users": users})
    event = Event("c1:balance_zero", "balance_zero", "T", T0, 0, ())
    (n,) = notifications(t, event)
    assert says in n.body and never not in n.body


# -- 9. minimum purchase ---------------------------------------------------------------------------


def test_a_manual_purchase_below_the_minimum_is_refused_with_the_reason() -> None:
    minimum = parse_money("50")
    direct = tenant(channel="direct")
    assert funding_refusal(direct, "manual", parse_money("49.99"), minimum, 0) == (
        422,
        "below the minimum purchase of 50.00 USD for a manual funding",
    )
    assert funding_refusal(direct, "manual", parse_money("50"), minimum, 0) is None
    csp = tenant(channel="csp")  # the minimum is the direct purchase's; partners fund as agreed
    assert funding_refusal(csp, "partner", parse_money("10"), minimum, 0) is None
    assert funding_refusal(direct, "manual", parse_money("100"), minimum, 10**18)[0] == 409  # type: ignore[index]
