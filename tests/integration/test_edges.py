"""Money at the edges through the streaming path, against offline rating of the same files:
user-less bot rows, a raw Graph response ingested with --tenant-id, a CDR that arrives after
its lot was forfeited, and a tenant that never had credits. Streaming equals offline to the
micro-unit and event for event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.ops.publish import publish_tenants
from processors.money import parse_money
from tests.integration.harness import Env, wait_exit

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def user(uid: str, *licences: str) -> dict[str, Any]:
    return {"user_id": uid, "usage_country": "US", "licences": list(licences)}


def cdr(tid: str, cid: str, start: datetime, minutes: int, to: str, **extra: Any) -> dict[str, Any]:
    return {
        "call_id": cid,
        "tenant_id": tid,
        "user_id": "u1",
        "call_type": "user_out",
        "caller_number": "+12125550100",
        "callee_number": to,
        "start_time": iso(start),
        "end_time": iso(start + timedelta(minutes=minutes)),
        "duration_s": minutes * 60,
        **extra,
    }


def test_edges_stream_exactly_as_offline_rating_says(env: Env) -> None:
    t = env.tag
    tenants, lines, graph_rows = edge_inputs(t)
    work = env.work
    (work / "tenants.json").write_text(json.dumps(tenants))
    (work / "cdrs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    page = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#...pstnCallLogRow)", "value": graph_rows}
    (work / "graph.json").write_text(json.dumps(page))

    publish_tenants(env.settings, tenants)
    plain = env.cli("ingest", str(work / "cdrs.jsonl"))
    assert plain.returncode == 0, plain.stderr
    refused = env.cli("ingest", str(work / "graph.json"))  # no tenant anywhere: every row refused, said why
    assert refused.returncode == 3 and "missing field tenantId" in refused.stderr, refused
    typo = env.cli("ingest", str(work / "graph.json"), "--tenant", f"{t}graph")  # no prefix matching
    assert typo.returncode == 2 and "unrecognized arguments" in typo.stderr
    raw = env.cli("ingest", str(work / "graph.json"), "--tenant-id", f"{t}graph")
    assert raw.returncode == 0 and "produced 2 CDRs" in raw.stdout, raw
    assert wait_exit(env.worker()) == 0

    offline = env.cli(
        "rate",
        "--tenants",
        str(work / "tenants.json"),
        "--cdrs",
        str(work / "cdrs.jsonl"),
        str(work / "graph.json"),
        "--tenant-id",
        f"{t}graph",
        "--rates",
        str(env.settings.rates_file),
    )
    assert offline.returncode == 0, offline.stderr
    rows = [json.loads(x) for x in offline.stdout.splitlines()]
    want = {
        r["call_id"]: (r["classification"], parse_money(r["amount"]), parse_money(r["balance_after"]), r["flags"])
        for r in rows
        if "classification" in r
    }
    want_events = {(r["event_id"], r["type"]) for r in rows if "type" in r}

    charges = env.charges(min_count=len(want))
    got = {c["call_id"]: (c["classification"], c["amount"], c["balance_after"], c["flags"]) for c in charges}
    assert got == want
    got_events = {(e["event_id"], e["type"]) for e in env.read(env.settings.topic.balance_events)}
    assert got_events == want_events

    # what each class must show, beyond streaming == offline
    assert "late_after_expiry" in got["late-2"][3] and got["late-1"][3] == []
    # event ids are scoped by tenant: "<tenant>:<cause>:<type>"
    expired = [e[0].split(":", 1)[1] for e in got_events if e[1] == "credits_expired"]
    assert expired == ["expire:old:credits_expired"]
    zero = [e[0].split(":", 1)[1] for e in got_events if e[1] == "balance_zero"]
    assert zero == ["never-1:balance_zero"]  # once, on the first billable charge
    assert got["bot-in"][:2] == ("billable", parse_money("0.104"))  # 4 min toll-free from a US fixed line x 0.026
    assert got["graph-aa"][0] == "billable" and got["graph-aa"][3] == []
    assert got["graph-out"][0] == "billable"


def edge_inputs(t: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The edge scenario's tenants, CDR lines and Graph rows (tenant ids prefixed by `t`)."""
    expired_at = NOW - timedelta(days=5)  # 5 days ago: past the 72 h lateness once a call ends now
    tenants = [
        {
            "tenant_id": f"{t}late",
            "country": "US",
            "currency": "USD",
            "channel": "direct",
            "users": [user("u1", "PAYG", "MCOPSTNPP")],
            "funding": [
                {"lot_id": "old", "amount": "2.00", "purchased_at": iso(expired_at - timedelta(days=365))},
                {"lot_id": "new", "amount": "10.00", "purchased_at": iso(NOW - timedelta(days=100))},
            ],
        },
        {
            "tenant_id": f"{t}never",
            "country": "US",
            "currency": "USD",
            "channel": "direct",
            "users": [user("u1", "PAYG", "MCOPSTNPP")],
        },
        {
            "tenant_id": f"{t}bots",
            "country": "US",
            "currency": "USD",
            "channel": "csp",
            "users": [user("u1", "MCOPSTN1", "MCOPSTNPP")],
            "funding": [{"lot_id": "b1", "amount": "5.00", "purchased_at": iso(NOW - timedelta(days=30))}],
        },
        {
            "tenant_id": f"{t}graph",
            "country": "US",
            "currency": "USD",
            "channel": "direct",
            "users": [user("u1", "SPE_E5", "MCOPSTNC", "MCOPSTN1")],
            "funding": [{"lot_id": "g1", "amount": "20.00", "purchased_at": iso(NOW - timedelta(days=10))}],
        },
    ]
    lines = [
        # after the old lot's expiry: paid by "new"; its end moves the data's clock past the lateness
        cdr(f"{t}late", "late-1", NOW - timedelta(hours=1), 3, "+12125550123"),
        # made while "old" was valid, delivered after it was forfeited: current lots, flagged
        cdr(f"{t}late", "late-2", expired_at - timedelta(days=1), 2, "+12125550123"),
        cdr(f"{t}never", "never-1", NOW - timedelta(hours=3), 1, "+12125550123"),
        cdr(f"{t}never", "never-2", NOW - timedelta(hours=2), 1, "+447700900123"),
        {
            **cdr(f"{t}bots", "bot-in", NOW - timedelta(hours=4), 4, "+18005550199"),
            "call_type": "ucap_in",
            "user_id": None,
            "caller_number": "+12125550123",
        },
        {**cdr(f"{t}bots", "bot-out", NOW - timedelta(hours=3), 2, "+33142685300"), "call_type": "ucap_out"},
    ]
    del lines[-1]["user_id"]  # a row without the field at all
    graph_rows = [
        {  # an auto attendant's toll-free number: Graph leaves the user fields null
            "id": "graph-aa",
            "callId": "1835317186_112562680@61.221.3.176",
            "userId": None,
            "userPrincipalName": None,
            "userDisplayName": None,
            "startDateTime": iso(NOW - timedelta(hours=6)),
            "endDateTime": iso(NOW - timedelta(hours=6) + timedelta(seconds=300)),
            "duration": 300,
            "callType": "ucap_in",
            "calleeNumber": "+18005550123",
            "callerNumber": "+12065550100",
            "usageCountryCode": "US",
            "licenseCapability": "MCOPSTNPP",
        },
        {
            "id": "graph-out",
            "callId": "1835317186_112562680@61.221.3.176",  # Microsoft's callId repeats: not the key
            "userId": "u1",
            "userPrincipalName": "u1@contoso.com",
            "userDisplayName": "U One",
            "startDateTime": iso(NOW - timedelta(hours=5)),
            "endDateTime": iso(NOW - timedelta(hours=5) + timedelta(seconds=90)),
            "duration": 90,
            "callType": "user_out",
            "calleeNumber": "+442071234567",
            "callerNumber": "+12125550100",
            "usageCountryCode": "US",
        },
    ]
    return tenants, lines, graph_rows
