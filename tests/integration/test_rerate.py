"""Re-rating the FREECALL calls once the operator adds their tariff: each charged exactly
once as an adjustment on the ledger (a second run charges nothing, a run killed half way
and run again charges the same), and the statement shows the adjustments."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.ops.publish import publish_tenants
from pipeline.reports.finance import read_ledger, statement_report
from tests.integration.harness import REPO, Env, wait_exit

pytestmark = pytest.mark.integration

HEAD = (
    "currency,service,origin,destination,number_type,price_per_minute,connection_fee,first_increment,next_increment\n"
)
OLD = HEAD + "USD,calling,*,*,fixed,0.10,0,60,60\n"  # no mobile tariff: calls to mobiles are FREECALL
NEW = OLD + "USD,calling,*,*,mobile,0.20,0.01,60,60\n"


def cli(env: Env, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO,
        env=env.environ(**extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_freecall_calls_are_charged_once_after_the_card_gains_their_tariff(env: Env) -> None:
    tid = f"{env.tag}rr"
    (env.work / "old.csv").write_text(OLD)
    (env.work / "new.csv").write_text(NEW)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    tenant: dict[str, Any] = {
        "tenant_id": tid,
        "country": "US",
        "currency": "USD",
        "channel": "direct",
        "users": [{"user_id": "u1", "usage_country": "US", "licences": ["PAYG", "MCOPSTNPP"]}],
        "funding": [{"lot_id": "L1", "amount": "100", "purchased_at": (start - timedelta(days=1)).isoformat()}],
    }
    cdrs = []
    for i in range(6):  # 4 to mobiles (free now), 2 to fixed lines (0.10 a minute)
        s = start + timedelta(minutes=10 * i)
        to = "+12025550100" if i < 2 else "+447400123456"
        cdrs.append(
            {
                "call_id": f"rr-{i}",
                "tenant_id": tid,
                "user_id": "u1",
                "call_type": "user_out",
                "caller_number": "+12125550100",
                "callee_number": to,
                "start_time": s.isoformat(),
                "end_time": (s + timedelta(seconds=150)).isoformat(),
                "duration_s": 150,
            }
        )
    publish_tenants(env.settings, [tenant])
    env.ingest(cdrs)
    assert wait_exit(env.worker(extra={"CALLCHARGE_RATES_FILE": str(env.work / "old.csv")})) == 0

    dry = cli(env, "rerate", "--rates", str(env.work / "new.csv"), "--tenant", tid, "--dry-run")
    # each: 150 s bills 3 minutes x 0.20 + 0.01 = 0.61; 4 calls = 2.44
    assert dry.returncode == 0 and f"{tid}" in dry.stdout and "would charge 4 calls, 2.44 USD" in dry.stdout, dry
    assert len(env.charges()) == 6  # the dry run wrote nothing

    bad = cli(env, "rerate", "--rates", str(env.work / "missing.csv"))
    assert bad.returncode == 2 and "cannot read rate card" in bad.stderr

    killed = cli(env, "rerate", "--rates", str(env.work / "new.csv"), CALLCHARGE_CRASH_AFTER="rerate:2")
    assert killed.returncode == -9  # SIGKILLed after its second call reached Redis, before the ledger
    again = cli(env, "rerate", "--rates", str(env.work / "new.csv"))
    assert again.returncode == 0, again.stderr
    twice = cli(env, "rerate", "--rates", str(env.work / "new.csv"))
    assert "0 FREECALL calls charged; 4 already adjusted" in twice.stdout, twice.stdout

    charges = env.charges(min_count=10)
    adjustments = {c["call_id"]: c for c in charges if "adjusts" in c["flags"]}
    assert sorted(adjustments) == [f"rr-{i}:rerate" for i in range(2, 6)]
    assert {c["amount"] for c in adjustments.values()} == {610_000}
    assert all(c["tariff"]["rate_id"] == "USD:calling:*:*:mobile" and c["rate_card"] for c in adjustments.values())

    ledger = read_ledger(env.settings, tid)
    _, st = statement_report(ledger, tid, start.strftime("%Y-%m"), "json")
    if start.strftime("%Y-%m") == datetime.now(UTC).strftime("%Y-%m"):
        assert st.adjustments == 2_440_000 and st.charges == 600_000 and st.adds_up  # 2 x 3 min x 0.10
    check = cli(env, "rebuild", "--check", "--tenant", tid)
    assert check.returncode == 0 and "1 match" in check.stdout, check.stdout
