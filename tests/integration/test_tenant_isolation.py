"""Money stays in its tenant on the real broker and Redis: one tenant past the money range
stops nobody else (two workers, forty other tenants, the control timer), and streaming
charges what offline `rate` charges when Microsoft's ids arrive in another letter case and
for a Direct Routing response."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline import wiring
from processors.money import MAX_BALANCE, format_money
from processors.replay import differences
from tests.integration.conftest import Inbox
from tests.integration.harness import ControlProc, Env, calls, offline, tenant, wait_exit, wait_for

pytestmark = pytest.mark.integration


def test_one_tenant_past_the_money_range_stops_no_other_tenant(env: Env, smtp: Inbox) -> None:
    t = env.tag
    bad = f"{t}bad"
    others = [f"{t}o{i:02d}" for i in range(40)]
    old = datetime.now(UTC) - timedelta(days=300)  # their lots expire in about 65 days
    tenants = [tenant(bad, "100")] + [tenant(o, "100", purchased=old) for o in others]
    env.publish(tenants, calls(bad, 1, 20))
    assert wait_exit(env.worker()) == 0
    # the bad tenant's deficit at the edge of the range we keep (as a tenant that drew on
    # credit for years would have it): its next billable call cannot be represented
    store = wiring.store(env.settings)
    version, state = store.state(bad)
    assert state is not None
    state.deficit = MAX_BALANCE - 1
    assert store.apply([(bad, version, state, {})])[0][0] == 1

    theirs = [c for o in others for c in calls(o, 3, 20, start=1)]
    mine = calls(bad, 2, 20, start=1)
    env.ingest(mine[:1] + theirs[:60] + mine[1:] + theirs[60:])
    workers = [env.worker(idle=4, log_name=f"w{i}") for i in range(2)]
    assert [wait_exit(w) for w in workers] == [0, 0]  # both ran to the end: no worker exit
    for w in workers:
        assert "Traceback" not in env.log(w)

    charges = env.charges(min_count=1 + len(theirs))
    counted = Counter(c["call_id"] for c in charges)
    assert all(counted[c["call_id"]] == 1 for c in theirs), "every other tenant's call charged exactly once"
    expected, _, states = offline([x for x in tenants if x["tenant_id"] != bad], theirs, env.settings.rates_file)
    for c in charges:
        if c["tenant_id"] != bad:
            e = expected[c["call_id"]]
            assert (c["amount"], c["balance_after"]) == (e.amount, e.balance_after), c["call_id"]
    for o in others:
        assert differences(store.state(o)[1], states[o]) == [], o
    assert not [c for c in charges if c["call_id"] in {m["call_id"] for m in mine}]
    letters = env.read(env.settings.topic.dlq, min_count=2)
    assert sorted(d["reason"] for d in letters) == ["money_out_of_range"] * 2
    assert all(f"tenant {bad}" in d["detail"] for d in letters)

    # the control timer, 70 days on: the others' lots expire although one tenant is at the edge
    control = ControlProc(env, smtp, clock_offset_s=70 * 86400).start()
    wait_for(lambda: {e["tenant_id"] for e in events_of(env) if e["type"] == "credits_expired"} >= set(others), 120)
    control.kill()


def events_of(env: Env) -> list[dict[str, Any]]:
    return env.read(env.settings.topic.balance_events)


GUID = "6DC5B4E6-4A1F-4C3B-9F0E-2B7A1D8C9E01"
USERS = ["DB03C14B-06EB-4189-939B-7CBF3A20BA27", "8F2E4A10-77B1-4C0D-A2C3-5E6F7A8B9C0D"]


def test_streaming_charges_what_offline_rate_charges_for_guids_in_any_case_and_direct_routing(
    env: Env, tmp_path: Path
) -> None:
    purchased = datetime.now(UTC) - timedelta(days=3)
    tenants = [
        {
            "tenant_id": GUID,  # upper case in the tenants file
            "country": "US",
            "currency": "USD",
            "channel": "direct",
            "users": [
                {"user_id": USERS[0], "usage_country": "US", "licences": ["MCOPSTN1", "MCOPSTNPP"]},
                {"user_id": USERS[1], "usage_country": "US", "licences": ["PAYG", "MCOPSTNPP"]},
            ],
            "funding": [{"lot_id": "L1", "amount": "50", "purchased_at": purchased.isoformat()}],
        }
    ]
    (tmp_path / "tenants.json").write_text(json.dumps(tenants))
    t0 = datetime.now(UTC) - timedelta(hours=3)
    lines = []
    for i in range(12):  # lower case, mixed case: one tenant, two users with plan minutes or credits
        s = t0 + timedelta(minutes=7 * i)
        user = USERS[i % 2]
        lines.append(
            {
                "call_id": f"call-{i}",
                "tenant_id": GUID.lower() if i % 3 else GUID.title(),
                "user_id": user.lower() if i % 4 < 2 else user,
                "call_type": "user_out",
                "caller_number": "+12125550100",
                "callee_number": "+442071838750" if i % 5 == 0 else "+12125550123",
                "start_time": s.isoformat(),
                "end_time": (s + timedelta(minutes=6)).isoformat(),
                "duration_s": 360,
            }
        )
    (tmp_path / "cdrs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    graph = direct_routing_response(t0)
    rows = graph["value"]
    (tmp_path / "dr.json").write_text(json.dumps(graph))

    loaded = env.cli("tenants", "load", str(tmp_path / "tenants.json"))
    assert loaded.returncode == 0, loaded.stderr
    for args in (
        ["ingest", str(tmp_path / "cdrs.jsonl")],
        ["ingest", str(tmp_path / "dr.json"), "--tenant-id", GUID.lower()],
    ):
        sent = env.cli(*args)
        assert sent.returncode == 0, sent.stderr
    assert wait_exit(env.worker()) == 0
    streamed = {c["call_id"]: c for c in env.charges(min_count=len(lines) + len(rows))}

    rated = env.cli(
        "rate", "--tenants", str(tmp_path / "tenants.json"), "--cdrs", str(tmp_path / "cdrs.jsonl"), str(tmp_path / "dr.json"),  # noqa: E501
        "--tenant-id", GUID.title(), "--rates", str(env.settings.rates_file),
    )  # fmt: skip
    assert rated.returncode == 0, rated.stderr
    offline_rows = [json.loads(x) for x in rated.stdout.splitlines()]
    offline_charges = {c["call_id"]: c for c in offline_rows if "classification" in c}
    assert set(streamed) == set(offline_charges) and len(streamed) == len(lines) + len(rows)
    for call_id, c in streamed.items():
        o = offline_charges[call_id]
        got = (
            c["tenant_id"],
            c["user_id"],
            c["classification"],
            format_money(c["amount"]),
            format_money(c["balance_after"]),
        )
        assert got == (o["tenant_id"], o["user_id"], o["classification"], o["amount"], o["balance_after"]), call_id
        assert c["tenant_id"] == GUID.lower() and "unknown_user" not in c["flags"], call_id
    kinds = Counter(c["classification"] for c in streamed.values())
    assert kinds["not_charged"] >= len(rows) and kinds["included"] > 0 and kinds["billable"] > 0, kinds
    assert not env.read(env.settings.topic.dlq)  # nothing unknown, nothing refused


def direct_routing_response(t0: datetime) -> dict[str, Any]:
    """A getDirectRoutingCalls response in Graph's documented shape: four Byot* call types,
    masked numbers, user ids in lower case."""
    rows = []
    for i, call_type in enumerate(["ByotIn", "ByotOut", "ByotOutUserForwarding", "ByotInOverflow"]):
        s = t0 + timedelta(minutes=5 * i, seconds=30)
        rows.append(
            {
                "id": f"9e8bba57-dc14-533a-a7dd-f0da6575ee{i:02d}",
                "correlationId": "b0e5a1a9-1c55-4b4f-9d55-1b9d52c8b3f1",
                "userId": USERS[i % 2].lower(),
                "userPrincipalName": "richard.malk@contoso.com",
                "userDisplayName": "Richard Malk",
                "startDateTime": s.isoformat().replace("+00:00", "Z"),
                "inviteDateTime": s.isoformat().replace("+00:00", "Z"),
                "failureDateTime": None,
                "endDateTime": (s + timedelta(seconds=43)).isoformat().replace("+00:00", "Z"),
                "duration": 43,
                "callType": call_type,
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
        )
    return {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.callRecords.directRoutingLogRow)",
        "value": rows,
    }
