"""`callcharge demo`: the whole pipeline on the embedded stack, with a printed summary."""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from processors.money import format_money

from . import stack, traffic
from .codec import Codec
from .commands import build_worker, ingest, load_tenants
from .config import Settings
from .kafka import create_topics, producer
from .offline import rate
from .readback import read_all


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
            f"{sum(v == 'exists' for v in created.values())} already there"
        )
        work = Path(tempfile.mkdtemp(prefix="callcharge-demo-"))
        tenants = traffic.tenants(n_tenants, seed=3)
        cdrs = traffic.cdrs(tenants, n_cdrs, seed=5)
        (work / "tenants.json").write_text(json.dumps(tenants))
        with open(work / "cdrs.jsonl", "w") as f:
            for c in cdrs:
                f.write(json.dumps(c) + "\n")
            f.write('{"call_id": "bad-1", "tenant_id": "tenant-0000"}\n')
        print(f"3. {n_tenants} tenants published to {settings.topic.tenant_config}")
        load_tenants(settings, tenants)
        sent, bad = ingest(settings, work / "cdrs.jsonl")
        print(f"4. {sent} CDRs produced to {settings.topic.cdr} ({bad} malformed line rejected at ingest)")
        codec = Codec(settings.schemas_dir)
        p = producer(settings)
        p.produce(settings.topic.cdr, key=b"tenant-0000", value=b"\x00not avro at all")
        p.flush(10)
        print("   plus 1 undecodable message, straight onto the topic")
        print("5. charging worker (exactly-once) running until the topic is drained ...")
        worker = build_worker(settings)
        t = threading.Thread(target=worker.run, kwargs={"max_idle_s": 3.0})
        t.start()
        t.join()
        del worker, p  # close their broker connections before the broker stops
        charges = [r for _, r in read_all(settings, settings.topic.charges, codec)]
        events = [r for _, r in read_all(settings, settings.topic.balance_events, codec)]
        dlq = [r for _, r in read_all(settings, settings.topic.dlq, codec)]
        mine = [c for c in charges if c["call_id"].startswith("call-5-")]
        print(
            f"6. read back (read_committed): {len(mine)} charges, {len(events)} balance events, {len(dlq)} dead letters"
        )
        for d in dlq[-3:]:
            print(
                f"   dead letter at {d['source_topic']}/{d['source_partition']}/{d['source_offset']}: "
                f"{d['reason']}: {d['detail']}"
            )
        _summary(mine, events, tenants)
        out = io.StringIO()
        rate(work / "tenants.json", work / "cdrs.jsonl", settings.rates_file, out, io.StringIO())
        offline = [json.loads(x) for x in out.getvalue().splitlines()]
        off_total = sum(_micros(o["amount"]) for o in offline if "call_id" in o)
        on_total = sum(c["amount"] for c in mine)
        same = off_total == on_total
        print(
            f"7. streaming total {format_money(on_total)} vs offline `callcharge rate` total "
            f"{format_money(off_total)}: {'identical' if same else 'DIFFERENT'}"
        )
        return 0 if same else 1
    finally:
        if started and not keep:
            print("8. embedded stack")
            for name, line in stack.down(settings).items():
                print(f"   {name:<8} {line}")


def _micros(text: str) -> int:
    from processors.money import parse_money

    return parse_money(text)


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
    print(
        f"   {'tenant':<12} {'chan':<6} {'calls':>5} {'incl':>5} {'zoneA':>5} {'bill':>5} {'mixed':>5} "
        f"{'over':>5} {'charged':>12} {'balance':>12}  events"
    )
    for tid in sorted(per):
        r = per[tid]
        currency, channel = cur.get(tid, ("", ""))
        ev = ", ".join(
            f"{k} {r[k]}" for k in ("recharge_requested", "balance_zero", "balance_low", "pool_threshold") if r.get(k)
        )
        print(
            f"   {tid:<12} {channel:<6} {r['calls']:>5} {r['included']:>5} {r['pooled_zone_a']:>5} "
            f"{r['billable']:>5} {r['mixed']:>5} {r['overage']:>5} "
            f"{format_money(r['amount']):>8} {currency} {format_money(last_balance.get(tid, 0)):>8} {currency}  {ev}"
        )


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return run_demo(settings, args.tenants, args.cdrs, args.keep)


def register(sub: Any) -> None:
    d = sub.add_parser("demo", help="run the whole pipeline on the embedded stack and print a summary")
    d.add_argument("--tenants", type=int, default=8)
    d.add_argument("--cdrs", type=int, default=3000)
    d.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    d.set_defaults(func=cmd_demo)
    from .bench import register as register_bench

    register_bench(sub)
