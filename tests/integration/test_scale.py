"""A tenant as Microsoft's largest customers have them: 300 000 users, loaded on a broker
with Kafka's default message size, charged by streaming exactly as offline `rate` charges
them; a change to one user publishes one record."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processors.money import format_money
from tests.integration.harness import Env, wait_exit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = 300_000
PLANS = [["MCOPSTN1", "MCOPSTNPP"], ["PAYG", "MCOPSTNPP"], ["MCOPSTN2"], ["MCOMEETADD", "MCOPSTNPP"]]


def big_tenant(tid: str, rng: random.Random) -> dict[str, Any]:
    users = [
        {
            "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "usage_country": "US",
            "licences": PLANS[i % len(PLANS)],
            "email": f"user{i}@contoso.example",
            "display_name": f"User {i}",
        }
        for i in range(USERS)
    ]
    users[0]["roles"] = ["Teams Administrator"]
    purchased = datetime.now(UTC) - timedelta(days=2)
    return {
        "tenant_id": tid,
        "country": "US",
        "currency": "USD",
        "channel": "direct",
        "users": users,
        "funding": [{"lot_id": "L1", "amount": "5000", "purchased_at": purchased.isoformat()}],
    }


def test_a_300_000_user_tenant_loads_charges_as_offline_and_changes_by_one_record(env: Env, tmp_path: Path) -> None:
    rng = random.Random(20261206)
    tid = f"{env.tag}big"
    big = big_tenant(tid, rng)
    small = {**big_tenant(f"{env.tag}small", rng), "users": big["users"][:3]}
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps([big, small]))
    assert path.stat().st_size > 10 * 1024 * 1024  # far past one Kafka message (1 MB)

    loaded = env.cli("tenants", "load", str(path), timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert f"{USERS + 3 + 2} records published (2 tenant records, {USERS + 3} user records" in loaded.stdout
    again = env.cli("tenants", "load", str(path), timeout=600)
    assert "0 records published" in again.stdout, again.stdout  # nothing changed, nothing sent

    t0 = datetime.now(UTC) - timedelta(hours=3)
    picked = rng.sample(big["users"], 400)
    cdrs = []
    for i, u in enumerate(picked * 2):
        s = t0 + timedelta(seconds=13 * i)
        cdrs.append(
            {
                "call_id": f"c{i}",
                "tenant_id": tid,
                "user_id": u["user_id"].upper() if i % 2 else u["user_id"],
                "call_type": "user_out",
                "caller_number": "+12125550100",
                "callee_number": "+442071838750" if i % 7 == 0 else "+12125550123",
                "start_time": s.isoformat(),
                "end_time": (s + timedelta(minutes=3 + i % 40)).isoformat(),
                "duration_s": (3 + i % 40) * 60,
            }
        )
    cdr_file = tmp_path / "cdrs.jsonl"
    cdr_file.write_text("".join(json.dumps(c) + "\n" for c in cdrs))
    assert env.cli("ingest", str(cdr_file)).returncode == 0
    assert wait_exit(env.worker(idle=5), timeout=600) == 0
    streamed = {c["call_id"]: c for c in env.charges(min_count=len(cdrs))}
    rated = env.cli(
        "rate", "--tenants", str(path), "--cdrs", str(cdr_file), "--rates", str(env.settings.rates_file), timeout=600
    )
    assert rated.returncode == 0, rated.stderr[-2000:]
    offline = {c["call_id"]: c for c in map(json.loads, rated.stdout.splitlines()) if "classification" in c}
    assert set(streamed) == set(offline) == {c["call_id"] for c in cdrs}
    for call_id, c in streamed.items():
        o = offline[call_id]
        assert (c["classification"], format_money(c["amount"]), format_money(c["balance_after"])) == (
            o["classification"],
            o["amount"],
            o["balance_after"],
        ), call_id
        assert "unknown_user" not in c["flags"], call_id
    kinds = {c["classification"] for c in streamed.values()}
    assert {"included", "billable"} <= kinds, kinds

    # one user's licence changes: one record; the next call of that user follows it
    payg = next(u for u in picked if u["licences"] == ["PAYG", "MCOPSTNPP"])
    payg["licences"] = ["MCOPSTN1", "MCOPSTNPP"]
    path.write_text(json.dumps([big, small]))
    changed = env.cli("tenants", "load", str(path), timeout=600)
    assert "1 records published (0 tenant records, 1 user records" in changed.stdout, changed.stdout
    s = t0 + timedelta(hours=2)
    later = {**cdrs[0], "call_id": "after", "user_id": payg["user_id"], "start_time": s.isoformat()}
    later.update(end_time=(s + timedelta(minutes=5)).isoformat(), duration_s=300, callee_number="+12125550123")
    env.ingest([later])
    assert wait_exit(env.worker(idle=5), timeout=600) == 0
    after = [c for c in env.charges(min_count=len(cdrs) + 1) if c["call_id"] == "after"]
    assert [c["classification"] for c in after] == ["included"]  # from the calling plan now
