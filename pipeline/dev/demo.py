"""`callcharge demo`: the whole pipeline on the embedded stack, with a printed summary."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline import wiring
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.kafka import create_topics, producer
from pipeline.config import Settings
from pipeline.dev import stack, traffic
from pipeline.dev.mailsink import MailSink, free_port
from pipeline.ops.publish import ingest, publish_tenants
from pipeline.ops.rate import rate
from pipeline.ops.rebuild import rebuild
from pipeline.reports.finance import chart, check_month, read_ledger, statement_report
from pipeline.reports.readback import read_all
from processors.ledger import TenantState
from processors.money import format_money, parse_money


def run_demo(settings: Settings, n_tenants: int, n_cdrs: int, keep: bool) -> int:
    started = not all(line.startswith("running") for line in stack.status(settings).values())
    print("1. embedded stack")
    for name, line in stack.up(settings).items():
        print(f"   {name:<8} {line}")
    try:
        print("2. topics")
        created = create_topics(settings)
        print(
            f"   {sum(v == 'created' for v in created.values())} created, "
            f"{sum(v.startswith('exists') for v in created.values())} already there"
        )
        work = Path(tempfile.mkdtemp(prefix="callcharge-demo-"))
        run = f"demo{uuid.uuid4().hex[:4]}-"  # a fresh namespace per run: Redis keeps earlier runs
        tenants = traffic.tenants(n_tenants, seed=3, prefix=run) + lifecycle_tenants(run)
        cdrs = traffic.cdrs(tenants[:n_tenants], n_cdrs, seed=5) + lifecycle_calls(run)
        cdrs.sort(key=lambda c: c["end_time"])
        (work / "tenants.json").write_text(json.dumps(tenants))
        with open(work / "cdrs.jsonl", "w") as f:
            for c in cdrs:
                f.write(json.dumps(c) + "\n")
            f.write(json.dumps({"call_id": "bad-1", "tenant_id": f"{run}tenant-0000"}) + "\n")
        print(f"3. {len(tenants)} tenants published to {settings.topic.tenant_config}")
        publish_tenants(settings, tenants)
        sent, bad = ingest(settings, work / "cdrs.jsonl")
        print(f"4. {sent} CDRs produced to {settings.topic.cdr} ({bad} malformed line rejected at ingest)")
        codec = Codec(settings.schemas_dir)
        p = producer(settings)
        p.produce(settings.topic.cdr, key=f"{run}tenant-0000".encode(), value=b"\x00not avro at all")
        p.flush(10)
        print("   plus 1 undecodable message, straight onto the topic")
        print("5. control worker (faust: recharge, notifications, API) and charging worker (exactly-once) ...")
        with ControlRun(settings) as control:
            worker = wiring.charging_worker(settings)
            t = threading.Thread(target=worker.run, kwargs={"max_idle_s": 3.0})
            t.start()
            t.join()
            del worker, p  # close their broker connections before the broker stops
            control.wait_for_lifecycle(run)
            lifecycle = control.report(run)
        charges = [r for _, r in read_all(settings, settings.topic.charges, codec)]
        events = [r for _, r in read_all(settings, settings.topic.balance_events, codec)]
        dlq = [r for _, r in read_all(settings, settings.topic.dlq, codec)]
        ours = [c for c in charges if c["tenant_id"].startswith(run)]
        mine = [c for c in ours if c["call_id"].startswith("call-5-")]  # the generated traffic
        events = [e for e in events if e["tenant_id"].startswith(run)]
        dlq = [d for d in dlq if (d["key"] or b"").startswith(run.encode())]
        print(
            f"6. read back (read_committed): {len(ours)} charges, {len(events)} balance events, {len(dlq)} dead letters"
        )
        for d in dlq[-3:]:
            print(
                f"   dead letter at {d['source_topic']}/{d['source_partition']}/{d['source_offset']}: "
                f"{d['reason']}: {d['detail']}"
            )
        _summary(ours, events, tenants)
        print("   credits lifecycle (control worker, balances from its HTTP API):")
        for line in lifecycle:
            print(f"   {line}")
        (work / "tenants.json").write_text(json.dumps(tenants[:n_tenants]))
        with open(work / "cdrs.jsonl", "w") as f:
            for c in cdrs:
                if not c["tenant_id"].startswith(f"{run}life-"):
                    f.write(json.dumps(c) + "\n")
        out = io.StringIO()
        rate(work / "tenants.json", work / "cdrs.jsonl", settings.rates_file, out, io.StringIO())
        offline = [json.loads(x) for x in out.getvalue().splitlines()]
        off_total = sum(parse_money(o["amount"]) for o in offline if "call_id" in o)
        on_total = sum(c["amount"] for c in mine)
        same = off_total == on_total
        print(
            f"7. streaming total {format_money(on_total)} vs offline `callcharge rate` total "
            f"{format_money(off_total)}: {'identical' if same else 'DIFFERENT'}"
        )
        report = rebuild(settings, check=True)  # both workers have stopped
        print(
            f"8. reconciliation (`callcharge rebuild --check`): Redis and the ledger on Kafka agree "
            f"for {report.matching} of {report.tenants} tenants"
        )
        for line in report.lines(check=True)[1:]:
            print(f"   {line.strip()}")
        statements_ok = _statements(settings, run)
        return 0 if same and not report.differing and statements_ok else 1
    finally:
        if started and not keep:
            print("10. embedded stack")
            for name, line in stack.down(settings).items():
                print(f"   {name:<8} {line}")


def _statements(settings: Settings, run: str) -> bool:
    """Step 9: every tenant's statement for this month adds up, and closes on Redis's balance."""
    ledger = read_ledger(settings)
    store = wiring.store(settings)
    now = datetime.now(UTC)
    ours = sorted(t for t in ledger.tenants if t.startswith(run))
    adds_up = closes = 0
    for tid in ours:
        month = check_month(None, ledger.tenants[tid], now)
        _, st = statement_report(ledger, tid, month, "text")
        state = store.state(tid)[1] or TenantState()  # a tenant with no call yet has no state
        adds_up += st.adds_up
        closes += (st.closing_balance, st.closing_deficit) == (state.balance, state.deficit)
    print(
        f"9. statements (`callcharge report statement`): {adds_up} of {len(ours)} add up "
        "(opening + funding - charges - adjustments - expired = closing); "
        f"{closes} close on the balance Redis holds"
    )
    recharged = f"{run}life-recharge-ok"
    png = Path(tempfile.mkdtemp(prefix="callcharge-chart-")) / f"{recharged}.png"
    chart(ledger, recharged, check_month(None, ledger.tenants[recharged], now), png)
    print(f"   chart of the tenant whose auto-recharge succeeds (`callcharge report chart`): {png}")
    return adds_up == closes == len(ours)


def lifecycle_tenants(run: str) -> list[dict[str, Any]]:
    """Three tenants whose balances run down: recharge succeeds, card expired, no auto-recharge."""
    out = []
    for name, method, auto in (
        ("recharge-ok", "pm_card_ok", True),
        ("card-expired", "pm_card_expired", True),
        ("runs-dry", "pm_card_ok", False),
    ):
        tid = f"{run}life-{name}"
        out.append(
            {
                "tenant_id": tid,
                "country": "US",
                "currency": "USD",
                "channel": "direct",
                "payment_method": method,
                "users": [
                    {"user_id": "agent", "usage_country": "US", "licences": ["PAYG", "MCOPSTNPP"]},
                    {
                        "user_id": "admin",
                        "usage_country": "US",
                        "licences": [],
                        "roles": ["Teams Administrator"],
                        "email": f"admin@{name}.example",
                    },
                    {
                        "user_id": "billing",
                        "usage_country": "US",
                        "licences": [],
                        "roles": ["Billing Administrator"],
                        "email": f"billing@{name}.example",
                    },
                ],
                **({"auto_recharge": {"enabled": True, "amount": "25", "trigger": "2"}} if auto else {}),
                "funding": [
                    {
                        "lot_id": f"{tid}-lot-1",
                        "amount": "5" if auto else "1",
                        "purchased_at": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
                    }
                ],
            }
        )
    return out


def lifecycle_calls(run: str) -> list[dict[str, Any]]:
    t0 = datetime.now(UTC) - timedelta(hours=3)
    out = []
    for name in ("recharge-ok", "card-expired", "runs-dry"):
        for i in range(10):
            start = t0 + timedelta(minutes=15 * i)
            out.append(
                {
                    "call_id": f"{run}{name}-{i}",
                    "tenant_id": f"{run}life-{name}",
                    "user_id": "agent",
                    "call_type": "user_out",
                    "caller_number": "+12125550100",
                    "callee_number": "+13125550142",
                    "start_time": start.isoformat(),
                    "end_time": (start + timedelta(minutes=20)).isoformat(),
                    "duration_s": 1200,
                }
            )
    return out


class ControlRun:
    """`callcharge control` as a subprocess, with a loopback SMTP sink to receive the emails."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.token = uuid.uuid4().hex
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.smtp: MailSink | None = None

    def __enter__(self) -> ControlRun:
        smtp_port = free_port()
        try:
            self.smtp = MailSink(smtp_port).start()
        except ImportError:
            print("   (aiosmtpd not installed: emails are retried until an SMTP server answers)")
        s = self.settings
        env = s.to_env(
            http_port=self.port,
            api_token=self.token,
            smtp_port=smtp_port,
            control_tick_s=1.0,
            recharge_backoff_s=2.0,
            log_level="ERROR",
        )
        log = open(s.state_dir / "control.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "control"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 60
        while self.api("/health") is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"control worker did not start; see {s.state_dir}/control.log")
            time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.smtp is not None:
            self.smtp.stop()

    def api(self, path: str) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def wait_for_lifecycle(self, run: str, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = self.api(f"/v1/tenants/{run}life-recharge-ok/transactions") or {}
            bad = self.api(f"/v1/tenants/{run}life-card-expired/transactions") or {}
            if any(t["type"] == "recharge_succeeded" for t in ok.get("transactions", [])) and any(
                t["type"] == "recharge_failed" for t in bad.get("transactions", [])
            ):
                time.sleep(1.5)  # let the emails go out
                return
            time.sleep(0.5)

    def report(self, run: str) -> list[str]:
        lines = []
        for name in ("recharge-ok", "card-expired", "runs-dry"):
            tid = f"{run}life-{name}"
            bal = self.api(f"/v1/tenants/{tid}/balance") or {}
            tx = (self.api(f"/v1/tenants/{tid}/transactions") or {}).get("transactions", [])
            kinds = sorted({t["type"] for t in tx if t["type"] != "charge"})
            sent = self.smtp.recipients if self.smtp is not None else []
            mails = sum(1 for e in sent if e.endswith(f"@{name}.example"))
            lines.append(
                f"{name:<13} balance {bal.get('balance', '?'):>7} USD  lots {len(bal.get('lots', []))}  "
                f"{', '.join(kinds) or 'no funding events'}; {mails} emails to admins"
            )
        return lines


def _summary(charges: list[dict[str, Any]], events: list[dict[str, Any]], tenants: list[dict[str, Any]]) -> None:
    per: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for c in charges:
        row = per[c["tenant_id"]]
        row["calls"] += 1
        row[c["classification"]] += 1
        row["amount"] += c["amount"]
    last_balance = {}
    for e in events:
        per[e["tenant_id"]][e["type"]] += 1
        last_balance[e["tenant_id"]] = e["balance"]
    for c in charges:
        last_balance[c["tenant_id"]] = c["balance_after"]
    cur = {t["tenant_id"]: (t["currency"], t["channel"]) for t in tenants}
    w = max([len("tenant"), *(len(t) for t in per)])
    print(
        f"   {'tenant':<{w}} {'chan':<6} {'calls':>5} {'incl':>5} {'zoneA':>5} {'bill':>5} {'mixed':>5} "
        f"{'over':>5} {'charged':>14} {'after calls':>14}  events"
    )
    for tid in sorted(per):
        r = per[tid]
        currency, channel = cur.get(tid, ("", ""))
        ev = ", ".join(
            f"{k} {r[k]}" for k in ("recharge_requested", "balance_zero", "balance_low", "pool_threshold") if r.get(k)
        )
        print(
            f"   {tid:<{w}} {channel:<6} {r['calls']:>5} {r['included']:>5} {r['pooled_zone_a']:>5} "
            f"{r['billable']:>5} {r['mixed']:>5} {r['overage']:>5} "
            f"{format_money(r['amount']):>10} {currency} {format_money(last_balance.get(tid, 0)):>10} {currency}  {ev}"
        )


def main(args: argparse.Namespace, settings: Settings) -> int:
    return run_demo(settings, args.tenants, args.cdrs, args.keep)
