"""Offboarding a tenant as an operator and a partner do it: `callcharge tenants remove` and
DELETE /v1/tenants/{id}. Charging stops for that tenant only (its CDRs are dead-lettered
as tenant_removed), the ledger keeps every record, and the removal with the closing
balance is on the ledger and on the statement."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.control.tokens import new_token
from pipeline.reports.finance import read_ledger, statement_report
from processors.calendar import month_key
from tests.integration.conftest import Inbox
from tests.integration.harness import ControlProc, Env, calls, events, tenant, wait_exit, wait_for

pytestmark = pytest.mark.integration


def test_a_removed_tenant_stops_charging_and_keeps_its_ledger(env: Env, smtp: Inbox, tmp_path: Path) -> None:
    t = env.tag
    gone, partnered, stays = f"{t}gone", f"{t}partnered", f"{t}stays"
    reader, reader_entry = new_token("gone-reader", "read", [gone, partnered])
    partner, partner_entry = new_token("partner-one", "write", [partnered])
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps([reader_entry, partner_entry]))
    first = calls(gone, 3, 20) + calls(partnered, 2, 20) + calls(stays, 2, 20)
    env.publish([tenant(gone, "100"), tenant(partnered, "100"), tenant(stays, "100")], first)
    assert wait_exit(env.worker()) == 0
    assert len(env.charges(min_count=len(first))) == len(first)
    control = ControlProc(env, smtp, CALLCHARGE_API_TOKENS_FILE=str(tokens_file)).start()

    # the operator, from the command line
    done = env.cli("tenants", "remove", gone, "--requested-by", "ops@example.com")
    assert done.returncode == 0, done.stderr
    assert f"removal of tenant {gone} sent" in done.stdout
    # a partner, through the API: a read token may not, a write token for another tenant may not
    assert control.call("DELETE", f"/v1/tenants/{partnered}", token=reader)[0] == 403
    assert control.call("DELETE", f"/v1/tenants/{stays}", token=partner)[0] == 403
    status, reply = control.call("DELETE", f"/v1/tenants/{partnered}", {"command_id": "off-1"}, token=partner)
    assert (status, reply["command_id"]) == (202, "off-1")

    def removal(tid: str) -> dict | None:
        found = [e for e in events(env, tid) if e["type"] == "tenant_removed"]
        return found[0] if found else None

    wait_for(lambda: removal(gone) is not None and removal(partnered) is not None, timeout=60)
    closing = removal(gone)
    assert closing is not None
    assert closing["attributes"]["removed_by"] == "ops@example.com"
    # the closing balance is what the three calls left: 100 - 3 x 20 min x 0.019 = 98.86
    assert closing["balance"] == 98_860_000
    assert closing["event_id"].startswith(f"{gone}:")
    assert removal(partnered)["attributes"]["removed_by"] == "partner-one"  # type: ignore[index]

    # once removed: no second removal, no funding, no calls authorized; the balance is still there
    wait_for(lambda: control.call("DELETE", f"/v1/tenants/{gone}")[0] == 410, timeout=30)
    status, reply = control.call("POST", f"/v1/tenants/{gone}/funds", {"amount": "60"})
    assert status == 410 and "removed" in reply["error"]
    status, reply = control.call("POST", f"/v1/tenants/{gone}/authorize", {"user_id": "u1", "number": "+12125550123"})
    assert status == 200 and reply["allowed"] is False and "removed" in reply["reason"]
    status, bal = control.get(f"/v1/tenants/{gone}/balance", token=reader)
    assert (status, bal["balance"]) == (200, "98.86")
    again = env.cli("tenants", "remove", gone)
    assert again.returncode == 0 and "already removed" in again.stdout

    # later calls: the removed tenants' go to the DLQ with their reason, the other's are charged
    later = calls(gone, 2, 5, start=10) + calls(partnered, 1, 5, start=10) + calls(stays, 2, 5, start=10)
    env.ingest(later)
    assert wait_exit(env.worker()) == 0
    charges = env.charges(min_count=len(first) + 2)
    assert sorted(c["call_id"] for c in charges) == sorted(c["call_id"] for c in first + calls(stays, 2, 5, start=10))
    letters = env.read(env.settings.topic.dlq, min_count=3)
    assert sorted((d["reason"], d["detail"].split("'")[1]) for d in letters) == sorted(
        [("tenant_removed", gone)] * 2 + [("tenant_removed", partnered)]
    )
    assert control.proc is not None and control.proc.poll() is None  # nothing else stopped

    # the ledger keeps every record: the statement still reads, adds up and shows the removal
    ledger = read_ledger(env.settings, gone)
    month = month_key(datetime.now(UTC), None)
    text, st = statement_report(ledger, gone, month, "text")
    assert st.adds_up and st.closing_balance == 98_860_000 and st.removed is not None
    assert "Tenant removed at" in text and "ops@example.com" in text
    control.kill()
