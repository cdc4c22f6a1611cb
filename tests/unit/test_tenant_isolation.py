"""Money stays in its tenant: bounded arithmetic, ids scoped by tenant, GUIDs in any letter
case, Direct Routing and masked numbers, strict JSON and money text (issue 27)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import schemas
from pipeline.adapters import strict_json
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import tenant_from_avro, tenant_record, tenant_to_avro
from processors.admission import Origin, fold_batch
from processors.charging import prepare
from processors.control import authorize, service_state
from processors.engine import Engine
from processors.inputs import DeadLetterReason, Rejected, TenantError, cdr_from_dict, tenant_from_dict
from processors.ledger import TenantState, fund, open_state
from processors.model import Cdr, Event
from processors.money import MAX_BALANCE, MoneyError, parse_money
from processors.rating import RateCard, RateCardError
from processors.replay import state_from_ledger
from processors.reports import statement
from tests.helpers import FIXTURES, cdr_entry, fixture_rates, tenant_entry

GUID = "0A1B2C3D-0000-4000-8000-00000000ABCD"
USER = "DB03C14B-06EB-4189-939B-7CBF3A20BA27"
HEADER = "currency,service,origin,destination,number_type,price_per_minute,connection_fee\n"


def cdr(call_id: str, tenant: str = "T", user: str = "u1", to: str = "+12125550123", dur: int = 600) -> Cdr:
    c = cdr_from_dict(cdr_entry({"id": call_id, "user": user, "type": "user_out", "to": to, "dur": dur}, tenant))
    assert isinstance(c, Cdr), c
    return c


# -- 2. one tenant's arithmetic never stops another -------------------------------------------
def test_a_charge_past_the_money_range_is_refused_for_its_tenant_only() -> None:
    rich = tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "10"}, "rich"))
    other = tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "10"}, "other"))
    engine = Engine([rich, other], fixture_rates())
    engine.states["rich"].deficit = MAX_BALANCE - 1  # one more call would leave the range
    refused = engine.admit_and_charge(cdr("c1", "rich"))
    assert isinstance(refused, Rejected) and refused.reason is DeadLetterReason.MONEY_OUT_OF_RANGE
    assert "tenant rich: call c1" in refused.detail
    assert engine.states["rich"].deficit == MAX_BALANCE - 1  # nothing of the call was applied
    charged = engine.admit_and_charge(cdr("c1", "other"))
    assert not isinstance(charged, Rejected) and charged.charge is not None and charged.charge.amount == 1_000_000


def test_a_rate_card_price_without_bound_is_refused_by_line() -> None:
    for row in (
        "USD,calling,*,*,fixed,1000.000001,0",
        "USD,calling,*,*,fixed,0.10,5000",
        "USD,calling,*,*,fixed,1e3,0",
    ):
        with pytest.raises(RateCardError, match="rate card line 2"):
            RateCard.from_csv_text(HEADER + row + "\n")
    card = RateCard.from_csv_text(HEADER + "USD,calling,*,*,fixed,1000,1000\n")  # the maximum itself is a price
    assert card.lookup("USD", "calling", "US", "US", "fixed") is not None


def test_configured_lots_past_the_balance_range_are_refused_on_the_ledger_and_rebuild_alike() -> None:
    # load after load adds lots, each file within its cap: the one that would overflow is refused
    lots = [(f"L{i}", "1000000000", f"2026-0{i}-01T00:00:00Z") for i in range(1, 4)]
    tenant = tenant_from_dict(tenant_entry({"lots": lots}))
    state = TenantState()
    events = fund(
        tenant,
        state,
        "big",
        MAX_BALANCE - 1_500 * 10**12,
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    _, opened = open_state(tenant, state)
    events += opened
    refused = [e for e in events if e.type == "funding_refused"]
    assert [e.field_dict()["lot_id"] for e in refused] == ["L2", "L3"]
    assert state.balance <= MAX_BALANCE
    assert open_state(tenant, state)[1] == []  # refused once, not again on every call
    assert state_from_ledger(tenant, [], events).to_dict() == state.to_dict()


# -- 3. ids unique where consumers use them ----------------------------------------------------
def test_the_same_command_id_in_two_tenants_gives_two_event_ids() -> None:
    at = datetime(2026, 11, 10, tzinfo=UTC)
    ids = []
    for tid in ("A", "B"):
        tenant = tenant_from_dict(tenant_entry({}, tid))
        ids += [e.event_id for e in fund(tenant, TenantState(), "c1", 60_000_000, at, at) if e.type == "funds_added"]
    assert ids == ["A:fund:c1:funds_added", "B:fund:c1:funds_added"]


def test_pool_alerts_of_two_tenants_for_one_call_id_differ() -> None:
    ids = set()
    for tid in ("A", "B"):
        engine = Engine([tenant_from_dict(tenant_entry({"conf_licences": 1}, tid))], fixture_rates())
        c = cdr_from_dict(
            cdr_entry({"id": "c1", "user": "u1", "type": "conf_out", "to": "+442071234567", "dur": 3600}, tid)
        )
        result = engine.process(c)  # type: ignore[arg-type]
        assert result is not None
        ids |= {e.event_id for e in result[1] if e.type == "pool_threshold"}
    assert len(ids) == 4 and all(i.split(":")[0] in ("A", "B") for i in ids)


# -- 4. GUIDs compare case-insensitively -------------------------------------------------------
def test_a_guid_in_another_letter_case_is_the_same_tenant_and_user() -> None:
    entry = tenant_entry({"users": [[USER, "US", ["MCOPSTN1", "MCOPSTNPP"]]], "funding": "10"}, GUID)
    engine = Engine([tenant_from_dict(entry)], fixture_rates())
    for i, (tid, uid) in enumerate([(GUID.lower(), USER.lower()), (GUID, USER), (GUID.lower(), USER)]):
        outcome = engine.admit_and_charge(cdr(f"c{i}", tid, uid))
        assert not isinstance(outcome, Rejected), outcome
        assert outcome.charge is not None and outcome.charge.classification == "included", outcome.charge
        assert "unknown_user" not in outcome.charge.flags
        assert outcome.charge.tenant_id == GUID.lower()


def test_ids_that_differ_only_by_case_are_refused_by_name() -> None:
    users = [["Alice", "US", ["PAYG"]], ["alice", "US", ["PAYG"]]]
    with pytest.raises(TenantError, match="users 'Alice' and 'alice' differ only by letter case"):
        tenant_from_dict(tenant_entry({"users": users}))
    users = [[USER, "US", ["PAYG"]], [USER.lower(), "US", ["PAYG"]]]
    with pytest.raises(TenantError, match="listed twice"):
        tenant_from_dict(tenant_entry({"users": users}))


def test_graph_rows_and_tenant_id_option_in_another_case_are_rated(tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "graph_getpstncalls_example.json").read_text())
    (tmp_path / "g.json").write_text(json.dumps(doc))
    entry = tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "10"}, GUID)
    (tmp_path / "t.json").write_text(json.dumps([entry]))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "rate", "--tenants", str(tmp_path / "t.json"), "--cdrs", str(tmp_path / "g.json"), "--tenant-id", GUID.lower()],  # noqa: E501
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "unknown_tenant" not in proc.stderr
    assert any('"call_id"' in x for x in proc.stdout.splitlines())


# -- 5. Direct Routing and masked numbers ------------------------------------------------------
DR_ROW = {
    "id": "9e8bba57-dc14-533a-a7dd-f0da6575eed1",
    "correlationId": "b0e5a1a9-1c55-4b4f-9d55-1b9d52c8b3f1",
    "userId": USER,
    "userPrincipalName": "richard.malk@contoso.com",
    "userDisplayName": "Richard Malk",
    "startDateTime": "2026-11-10T01:46:07Z",
    "inviteDateTime": "2026-11-10T01:45:59Z",
    "failureDateTime": None,
    "endDateTime": "2026-11-10T01:46:50Z",
    "duration": 43,
    "callType": "ByotIn",
    "successfulCall": True,
    "callerNumber": "+12345678***",
    "calleeNumber": "+01234567***",
    "mediaPathLocation": "USWE",
    "signalingLocation": "EUNO",
    "finalSipCode": 0,
    "callEndSubReason": 540000,
    "finalSipCodePhrase": "BYE",
    "trunkFullyQualifiedDomainName": "tll-audiocodes01.adatum.biz",
    "mediaBypassEnabled": False,
}


@pytest.mark.parametrize(
    "call_type", ["ByotIn", "ByotOut", "ByotOutUserForwarding", "ByotOutUserTransfer", "ByotInOverflow"]
)
def test_direct_routing_rows_in_graphs_shape_are_on_the_ledger_not_charged(call_type: str) -> None:
    c = cdr_from_dict({**DR_ROW, "callType": call_type, "tenantId": GUID})
    assert isinstance(c, Cdr), c
    engine = Engine([tenant_from_dict(tenant_entry({"users": [[USER, "US", ["PAYG"]]]}, GUID))], fixture_rates())
    outcome = engine.admit_and_charge(c)
    assert not isinstance(outcome, Rejected) and outcome.charge is not None
    assert outcome.charge.classification == "not_charged" and outcome.charge.amount == 0


def test_a_masked_number_is_refused_only_where_charging_needs_its_digits() -> None:
    row = {
        k: v
        for k, v in DR_ROW.items()
        if k not in ("trunkFullyQualifiedDomainName", "finalSipCode", "mediaBypassEnabled")
    }
    out = cdr_from_dict({**row, "callType": "user_out", "tenantId": "T"})
    assert isinstance(out, Rejected) and out.reason is DeadLetterReason.MASKED_NUMBER and "+01234567***" in out.detail
    inbound = cdr_from_dict({**row, "callType": "user_in", "calleeNumber": "+12125550123", "tenantId": "T"})
    assert isinstance(inbound, Cdr)  # a masked caller is fine: nothing needs its digits
    garbage = cdr_from_dict({**row, "callType": "ByotIn", "calleeNumber": "+1*2*3", "tenantId": "T"})
    assert isinstance(garbage, Rejected) and garbage.reason is DeadLetterReason.UNPARSABLE_NUMBER


# -- 6. strict input ---------------------------------------------------------------------------
def test_strict_json_refuses_deep_nesting_and_duplicate_keys_by_name() -> None:
    with pytest.raises(json.JSONDecodeError, match="nested deeper than 32 levels"):
        strict_json.loads("[" * 20000 + "]" * 20000)
    with pytest.raises(json.JSONDecodeError, match="key 'amount' appears twice"):
        strict_json.loads('{"amount":"60","amount":"1000000000"}')
    doc = {"a": ['x\\"[[[[' * 20, {"b": "{" * 50}], "c": [[[1]]]}
    assert strict_json.loads(json.dumps(doc)) == doc  # brackets in strings do not count


def test_a_deeply_nested_line_is_one_bad_line_and_the_rest_is_rated(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(
        json.dumps([tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "10"})])
    )
    good = json.dumps(cdr_entry({"id": "c1", "user": "u1", "type": "user_out", "to": "+12125550123", "dur": 60}))
    (tmp_path / "c.jsonl").write_text("[" * 30000 + "]" * 30000 + "\n" + good + "\n" + '{"a":1,"a":2}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "rate", "--tenants", str(tmp_path / "t.json"), "--cdrs", str(tmp_path / "c.jsonl")],  # noqa: E501
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr
    assert any(line.startswith("line 1: undecodable: invalid JSON: nested deeper") for line in proc.stderr.splitlines())
    assert any(
        line.startswith("line 3: undecodable: invalid JSON: key 'a' appears twice") for line in proc.stderr.splitlines()
    )
    assert [json.loads(x)["call_id"] for x in proc.stdout.splitlines() if '"call_id"' in x] == ["c1"]


@pytest.mark.parametrize("text", ["1e3", "1_000", "+5", " 5e0", "Infinity", "NaN", "0x10", "١٢"])
def test_money_in_files_is_a_plain_decimal_string_only(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_money(text)
    with pytest.raises(TenantError, match="plain decimal"):
        tenant_from_dict(tenant_entry({"funding": text}))


def test_money_as_a_json_number_is_refused() -> None:
    with pytest.raises(TenantError, match="decimal string"):
        tenant_from_dict(tenant_entry({"funding": 50}))
    assert parse_money("50") == 50_000_000 and parse_money("-1.50") == -1_500_000


def test_fold_of_a_batch_with_an_out_of_range_call_charges_the_rest() -> None:
    tenant = tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]]}))
    state = TenantState()
    state.deficit = MAX_BALANCE - 500_000  # room for a 0.10 call, not for a 10-minute one
    batch = [
        (cdr("small", dur=60), Origin(0, 1)),
        (cdr("big", dur=600), Origin(0, 2)),
        (cdr("next", dur=60), Origin(0, 3)),
    ]
    folded = fold_batch(prepare(tenant), state, batch, {}, fixture_rates())
    reasons = [o.reject.reason if o.reject else "charged" for o in folded.outcomes]
    assert reasons == ["charged", DeadLetterReason.MONEY_OUT_OF_RANGE, "charged"]


# -- 7. closed months stay closed ----------------------------------------------------------------
def test_a_rerating_after_the_month_closed_is_posted_in_the_open_month() -> None:
    from pipeline.adapters.avro.records import charge_to_avro
    from processors import rerate
    from processors.reports import statement

    entry = tenant_entry(
        {"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "100", "time_zone": "Europe/Paris"}
    )
    tenant = tenant_from_dict(entry)
    engine = Engine([tenant], RateCard.from_csv_text(HEADER + "USD,calling,*,*,mobile,0.20,0\n"))  # no fixed tariff
    outcome = engine.admit_and_charge(cdr("c1"))  # 10 minutes on 10 November to a fixed line: FREECALL
    assert not isinstance(outcome, Rejected) and outcome.charge is not None
    assert outcome.charge.classification == "free_unrated"
    charges = [charge_to_avro(outcome.charge, 0, 1, datetime(2026, 11, 10, 12, 11, tzinfo=UTC))]
    events = list(outcome.events)
    november = statement(tenant, charges, events, "2026-11").lines()

    c = charges[0]
    priced = rerate.price(prepare(tenant), c, fixture_rates())
    assert priced is not None
    on_6_december = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    adjustment, more = rerate.adjust(prepare(tenant), engine.states["T"], c, priced, fixture_rates(), on_6_december)
    charges.append(charge_to_avro(adjustment, -1, -1, on_6_december))
    assert adjustment.month == "2026-11"  # it names its call's month
    assert statement(tenant, charges, events + more, "2026-11").lines() == november
    december = statement(tenant, charges, events + more, "2026-12")
    assert december.adjustments == 1_000_000  # 10 min x 0.10, posted on 6 December
    # within the allowed lateness (72 h after the month's end in Paris) it joins its month
    on_2_december = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    early = [charges[0], charge_to_avro(adjustment, -1, -1, on_2_december)]
    assert statement(tenant, early, events + more, "2026-11").adjustments == 1_000_000


def test_a_lot_recorded_after_its_month_closed_is_funding_of_the_open_month() -> None:
    tenant = tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG"]]], "funding": "10"}))
    in_october = Event(
        "T:fund:L9:funds_added",
        "funds_added",
        "T",
        datetime(2026, 10, 1, 9, 0, tzinfo=UTC),  # its purchase time, in a month long closed
        50_000_000,
        (("amount", 50_000_000), ("lot_id", "L9"), ("deficit_covered", 0)),
    )
    filed = statement(tenant, [], [], "2026-11").lines()
    recorded = {in_october.event_id: datetime(2026, 12, 6, 9, 0, tzinfo=UTC)}  # loaded on 6 December
    assert statement(tenant, [], [in_october], "2026-11", recorded=recorded).lines() == filed
    december = statement(tenant, [], [in_october], "2026-12", recorded=recorded)
    assert (december.opening_balance, december.funding, december.closing_balance) == (0, 50_000_000, 50_000_000)
    assert december.adds_up
    # recorded while October was still open, it is October's
    on_time = {in_october.event_id: datetime(2026, 10, 1, 9, 5, tzinfo=UTC)}
    assert statement(tenant, [], [in_october], "2026-11", recorded=on_time).opening_balance == 50_000_000


def test_reports_keep_two_tenants_calls_with_one_call_id_apart() -> None:
    from processors.reports import unique_charges

    rows = [{"tenant_id": t, "call_id": "c1"} for t in ("A", "B", "A")]
    assert unique_charges(rows) == rows[:2]


# -- 9. offboarding -------------------------------------------------------------------------
def test_a_removed_tenants_calls_are_refused_with_their_own_reason_and_the_others_charged() -> None:
    entry = {"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "10"}
    gone = dataclasses.replace(
        tenant_from_dict(tenant_entry(entry, "gone")), removed_at=datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    )
    stays = tenant_from_dict(tenant_entry(entry, "stays"))
    engine = Engine([gone, stays], fixture_rates())
    refused = engine.admit_and_charge(cdr("c1", "gone"))
    assert isinstance(refused, Rejected) and refused.reason is DeadLetterReason.TENANT_REMOVED
    assert "removed at 2026-12-06T09:00:00+00:00" in refused.detail
    charged = engine.admit_and_charge(cdr("c1", "stays"))
    assert not isinstance(charged, Rejected) and charged.charge is not None


def test_a_removal_survives_the_config_topic_and_old_configs_read_as_active() -> None:
    codec = Codec(Path(schemas.__file__).parent)
    entry = tenant_entry({"users": [["u1", "US", ["PAYG"]]], "funding": "10"}, GUID)
    at = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    record = tenant_to_avro(entry, at)
    old = {k: v for k, v in record.items() if k != "removed_at"}  # written before removals existed
    _, back = codec.decode(codec.encode("tenant_config", old, version=2), expect="tenant_config")
    assert tenant_from_avro(back).removed_at is None
    removed = dataclasses.replace(tenant_from_avro(record), removed_at=at)
    _, back = codec.decode(codec.encode("tenant_config", tenant_record(removed, at)), expect="tenant_config")
    assert tenant_from_avro(back) == removed


def test_the_statement_of_the_removal_month_shows_the_closing_balance() -> None:
    tenant = tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG"]]], "funding": "10"}, "gone"))
    at = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    removal = Event(
        "gone:off-1:tenant_removed",
        "tenant_removed",
        "gone",
        at,
        7_250_000,
        (("closing_deficit", "0.00"), ("removed_by", "ops@example.com"), ("lots_left", 1)),
    )
    st = statement(tenant, [], [removal], "2026-12")
    assert st.removed == {"at": "2026-12-06T09:00:00Z", "balance": 7_250_000, "deficit": 0, "by": "ops@example.com"}
    assert (
        st.lines()[-1] == "Tenant removed at 2026-12-06T09:00:00Z by ops@example.com: balance then 7.25 (deficit 0.00)"
    )
    assert statement(tenant, [], [removal], "2026-11").removed is None


def test_a_removed_tenant_is_never_authorized_nor_in_service() -> None:
    tenant = tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "10"}, "gone"))
    gone = dataclasses.replace(tenant, removed_at=datetime(2026, 12, 6, 9, 0, tzinfo=UTC))
    state, _ = open_state(gone, TenantState(), upto=datetime(2026, 12, 6, 9, 0, tzinfo=UTC))
    a = authorize(prepare(gone), state, cdr("probe", "gone", dur=0), fixture_rates())
    assert (a.allowed, a.bucket) == (False, "not_charged") and "removed" in a.reason
    assert service_state(gone, state).billable_calls is False
    assert service_state(tenant, state).billable_calls is True


def test_a_funding_without_invoice_says_so_on_the_statement() -> None:
    tenant = tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG"]]], "funding": "10"}))
    lot = Event(
        "T:fund:L1:funds_added",
        "funds_added",
        "T",
        datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
        10_000_000,
        (("amount", 10_000_000), ("lot_id", "L1"), ("deficit_covered", 0)),
    )
    lines = statement(tenant, [], [lot], "2026-12").lines()
    funding = next(line for line in lines if "+ Funding L1" in line)
    assert "no invoice (configured lot)" in funding and "invoice ," not in funding
