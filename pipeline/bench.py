"""`callcharge bench`: in one run on one machine, raw transactional Kafka passthrough vs the
charging worker on the same CDR bytes, and end-to-end latency at a fixed offered load.

Passthrough = consume, produce the same bytes, send offsets, commit: the floor any
exactly-once Kafka processor pays. The worker adds decode, rating, Redis and encoding.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from processors.engine import Engine
from processors.inputs import Rejected, cdr_from_dict, tenant_from_dict
from processors.numbers import analyze

from . import stack, traffic
from .codec import Codec
from .commands import build_worker, load_tenants
from .config import Settings
from .kafka import consumer, create_topics, producer
from .offline import load_rates
from .records import cdr_to_avro, charge_to_avro


def _produce(settings: Settings, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    p = producer(settings, extra={"linger.ms": 20, "batch.num.messages": 10000})
    for i, (key, value) in enumerate(values):
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.05)
        if i % 5000 == 0:
            p.poll(0)
    p.flush(60)


def passthrough(settings: Settings, n: int) -> float:
    """CDR/s of consume -> produce -> send offsets -> commit, transactional, no work."""
    c = consumer(settings, f"bench-raw-{uuid.uuid4().hex[:6]}")
    p = producer(settings, f"bench-raw-{uuid.uuid4().hex[:6]}")
    p.init_transactions(30)
    c.subscribe([settings.topic.cdr])
    done, start = 0, None
    while done < n:
        msgs = [m for m in c.consume(settings.batch_size, 0.05) if not m.error()]
        if not msgs:
            continue
        start = start or time.perf_counter()
        p.begin_transaction()
        nxt: dict[int, int] = {}
        for m in msgs:
            p.produce(settings.topic.charges, key=m.key(), value=m.value())
            nxt[m.partition() or 0] = (m.offset() or 0) + 1
        p.send_offsets_to_transaction(
            [TopicPartition(settings.topic.cdr, k, v) for k, v in nxt.items()], c.consumer_group_metadata(), 30
        )
        p.commit_transaction(60)
        done += len(msgs)
    elapsed = time.perf_counter() - (start or time.perf_counter())
    c.close()
    return n / elapsed


def charging(settings: Settings, n: int, profile: bool) -> tuple[float, str]:
    worker = build_worker(settings, CollectorRegistry())
    worker.directory.catch_up()
    worker.consumer.subscribe([settings.topic.cdr])
    done, start = 0, None
    prof = cProfile.Profile() if profile else None
    while done < n:
        if prof and start:
            prof.enable()
        got = worker.run_once()
        if prof:
            prof.disable()
        if got and start is None:
            start = time.perf_counter()
        done += got
    elapsed = time.perf_counter() - (start or time.perf_counter())
    worker.close()
    report = ""
    if prof:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(25)
        stats.sort_stats("tottime").print_stats(25)
        report = out.getvalue()
    return n / elapsed, report


def latency(settings: Settings, values: list[tuple[bytes, bytes]], rate: int, seconds: float) -> dict[str, float]:
    """Percentiles of CDR produced -> charge committed at a fixed offered load."""
    registry = CollectorRegistry()
    worker = build_worker(settings, registry)
    worker.directory.catch_up()
    worker.consumer.subscribe([settings.topic.cdr])
    samples: list[float] = []
    worker.latency_samples = samples
    stop = threading.Event()

    def drive() -> None:
        while not stop.is_set():
            worker.run_once()

    t = threading.Thread(target=drive)
    t.start()
    while not worker.consumer.assignment():
        time.sleep(0.1)
    p = producer(settings, extra={"linger.ms": 0})
    total = int(rate * seconds)
    t0 = time.perf_counter()
    for i, (key, value) in enumerate(values[:total]):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        p.produce(settings.topic.cdr, key=key, value=value)
        p.poll(0)
    p.flush(30)
    deadline = time.monotonic() + 60
    while len(samples) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join()
    worker.close()
    samples.sort()

    def pct(q: float) -> float:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 1) if samples else float("nan")

    return {
        "offered_cdr_per_s": rate,
        "samples": len(samples),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
    }


def stage_ceilings(
    settings: Settings, tenants: list[dict[str, Any]], rows: list[dict[str, Any]], values: list[tuple[bytes, bytes]]
) -> dict[str, int]:
    """CDR/s of each CPU stage alone, in this process: what bounds the worker."""
    codec = Codec(settings.schemas_dir)
    engine = Engine([tenant_from_dict(t) for t in tenants], load_rates(settings.rates_file))
    cdrs = [cdr_from_dict(r) for r in rows]
    analyze.cache_clear()  # cold, as the worker met these numbers
    t0 = time.perf_counter()
    charges = [engine.process(c) for c in cdrs if not isinstance(c, Rejected)]
    rating = len(cdrs) / (time.perf_counter() - t0)
    now = datetime.now(UTC)
    records = [charge_to_avro(r[0], 0, i, now) for i, r in enumerate(charges) if r is not None]
    t0 = time.perf_counter()
    for _, value in values[: len(records)]:
        codec.decode(value)
    for record in records:
        codec.encode("charge", record)
    avro = len(records) / (time.perf_counter() - t0)
    return {"rating_only_cdr_per_s": round(rating), "avro_decode_encode_only_cdr_per_s": round(avro)}


def run(settings: Settings, n: int, tenants_n: int, rate: int, seconds: float, profile: bool) -> dict[str, Any]:
    own_stack = not all(v.startswith("running") for v in stack.status(settings).values())
    if own_stack:
        stack.up(settings)
    try:
        tag = uuid.uuid4().hex[:6]
        s = replace(
            settings,
            topic_prefix=f"bench-{tag}-",
            group_id=f"bench-{tag}",
            transactional_id_prefix=f"bench-{tag}",
            metrics_port=0,
            dedup_window_days=3650,
        )
        create_topics(s)
        codec = Codec(s.schemas_dir)
        tenants = traffic.tenants(tenants_n, seed=21, prefix=f"b{tag}-")
        load_tenants(s, tenants)
        rows = traffic.cdrs(tenants, n + int(rate * seconds), seed=22)
        values = []
        for row in rows:
            cdr = cdr_from_dict(row)
            assert not isinstance(cdr, Rejected), cdr
            values.append((cdr.tenant_id.encode(), codec.encode("cdr", cdr_to_avro(cdr))))
        print(f"producing {n} CDRs ({tenants_n} tenants) ...")
        _produce(s, s.topic.cdr, values[:n])
        print("raw transactional passthrough ...")
        raw = passthrough(replace(s, topic_prefix=s.topic_prefix), n)
        print("charging worker (exactly-once, Redis, rating) ...")
        ours, prof = charging(replace(s, group_id=s.group_id + "-w"), n, profile)
        print("stage ceilings (rating alone, Avro alone) ...")
        ceilings = stage_ceilings(s, tenants, rows[:n], values[:n])
        print(f"latency at {rate} CDR/s for {seconds:.0f}s ...")
        lat_settings = replace(s, topic_prefix=f"bench-{tag}-lat-", group_id=f"bench-{tag}-lat", batch_timeout_ms=10)
        create_topics(lat_settings)
        load_tenants(lat_settings, tenants)
        lat = latency(lat_settings, values[n:], rate, seconds)
        result = {
            "cdrs": n,
            "tenants": tenants_n,
            "batch_size": s.batch_size,
            "raw_passthrough_cdr_per_s": round(raw),
            "charging_worker_cdr_per_s": round(ours),
            "ratio": round(ours / raw, 3),
            "stage_ceilings": ceilings,
            "latency": lat,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if prof:
            print(prof)
        return result
    finally:
        if own_stack:
            stack.down(settings)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    result = run(settings, args.cdrs, args.tenants, args.rate, args.seconds, args.profile)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency"]
    print(
        f"\nraw passthrough   {result['raw_passthrough_cdr_per_s']:>8} CDR/s\n"
        f"charging worker   {result['charging_worker_cdr_per_s']:>8} CDR/s\n"
        f"ratio             {result['ratio']:>8.1%}\n"
        f"ceilings: rating alone {result['stage_ceilings']['rating_only_cdr_per_s']} CDR/s, "
        f"Avro decode+encode alone {result['stage_ceilings']['avro_decode_encode_only_cdr_per_s']} CDR/s\n"
        f"latency @ {lat['offered_cdr_per_s']} CDR/s: p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, "
        f"p99 {lat['p99_ms']} ms ({lat['samples']} samples)\nwritten to {out}"
    )
    return 0


def register(sub: Any) -> None:
    b = sub.add_parser("bench", help="raw passthrough vs charging worker, latency percentiles")
    b.add_argument("--cdrs", type=int, default=50000)
    b.add_argument("--tenants", type=int, default=200)
    b.add_argument("--rate", type=int, default=1000, help="offered load for the latency run, CDR/s")
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--profile", action="store_true", help="print a cProfile of the charging run")
    b.add_argument("--out", default="bench/results.json")
    b.set_defaults(func=cmd_bench)
