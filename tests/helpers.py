"""Shared test helpers: build tenants and CDRs from the compact golden notation."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from processors.inputs import parse_time
from processors.rating import RateCard

FIXTURES = Path(__file__).parent / "fixtures"
DEFAULT_START = "2026-11-10T12:00:00Z"


def fixture_rates() -> RateCard:
    return RateCard.from_csv_text((FIXTURES / "rates.csv").read_text())


def tenant_entry(sc: dict[str, Any], tenant_id: str = "T") -> dict[str, Any]:
    users = [
        {"user_id": u[0], "usage_country": u[1], "licences": u[2], **({"dialout_policy": u[3]} if len(u) > 3 else {})}
        for u in sc.get("users", [])
    ]
    if sc.get("conf_licences"):
        users = [{"user_id": "u1", "usage_country": "US", "licences": ["MCOMEETADD", "MCOPSTNPP"]}] + [
            {"user_id": f"x{i}", "usage_country": "US", "licences": ["MCOMEETADD"]}
            for i in range(sc["conf_licences"] - 1)
        ]
    funding = []
    if sc.get("funding"):
        funding.append({"lot_id": "L1", "amount": sc["funding"], "purchased_at": "2026-06-01T00:00:00Z"})
    for lot_id, amount, at in sc.get("lots", []):
        funding.append({"lot_id": lot_id, "amount": amount, "purchased_at": at})
    entry: dict[str, Any] = {
        "tenant_id": tenant_id,
        "country": sc.get("country", "US"),
        "currency": sc.get("currency", "USD"),
        "channel": sc.get("channel", "direct"),
        "users": users,
        "funding": funding,
    }
    if sc.get("time_zone"):
        entry["time_zone"] = sc["time_zone"]
    if sc.get("auto_recharge"):
        entry["auto_recharge"] = sc["auto_recharge"]
    return entry


def cdr_entry(call: dict[str, Any], tenant_id: str = "T") -> dict[str, Any]:
    if "graph" in call:  # a Microsoft Graph row as getPstnCalls / getDirectRoutingCalls give it
        return {"tenantId": tenant_id, **call["graph"]}
    start = parse_time(call.get("at", DEFAULT_START))
    end = start + timedelta(seconds=call["dur"])
    out = {
        "call_id": call["id"],
        "tenant_id": tenant_id,
        "user_id": call["user"],
        "call_type": call["type"],
        "caller_number": call.get("from", "+14155550100"),
        "callee_number": call["to"],
        "start_time": _iso(start),
        "end_time": _iso(end),
        "duration_s": call["dur"],
    }
    if call.get("routing"):
        out["routing"] = call["routing"]
    return out


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")
