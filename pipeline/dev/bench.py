"""`callcharge bench`: in one run on one machine, raw transactional Kafka passthrough vs the
charging worker on the same CDR bytes, and end-to-end latency at a fixed offered load.

Passthrough = consume, produce the same bytes, send offsets, commit: the floor any
exactly-once Kafka processor pays. The worker adds decode, rating, Redis and encoding.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import multiprocessing
import os
import pstats
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline import wiring
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import cdr_decoder, cdr_to_avro, charge_encoder
from pipeline.adapters.files import load_rates
from pipeline.adapters.kafka import consumer, create_topics, producer, take_batch
from pipeline.charging.runtime import tune_runtime
from pipeline.config import Settings
from pipeline.dev import stack, traffic
from pipeline.errors import FatalError
from pipeline.ops.publish import publish_tenants
from processors.engine import Engine
from processors.inputs import Rejected, cdr_from_dict, tenant_from_dict
from processors.numbers import analyze


def _produce(settings: Settings, topic: str, values: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """Produce `values`; the end offset of every partition written, from delivery reports
    (the embedded broker's high watermark is not reliable for batched writes)."""
    p = producer(settings, extra={"linger.ms": 20, "batch.num.messages": 10000})
    ends: dict[int, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            raise RuntimeError(f"bench produce failed: {err}")
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for i, (key, value) in enumerate(values):
        while True:
            try:
                p.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        if i % 5000 == 0:
            p.poll(0)
    if p.flush(60):
        raise RuntimeError("bench produce: messages left undelivered")
    return ends


# -- measured runs: each in its own processes, all started together -------------------
#
# Every measured run (passthrough or charging, 1 or N processes) is the same shape: N
# fresh processes (`python -m pipeline.dev.bench child ...`) each take a fixed share of the
# cdr partitions (assign, not subscribe: no rebalance inside the timing), start on one
# signal and read to the partitions' end. Throughput = CDRs after each process's first
# batch / (last finish - first clock start).
# A process is what an operator deploys, so N processes is the scaled-out figure; the
# passthrough gets the same N, so the comparison stays like for like.


def _child(mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One benchmark process: `raw` passthrough or `charge` (the real ChargingWorker)."""
    settings = Settings.from_env()
    topic = settings.topic.cdr
    high = {int(p): int(h) for p, h in spec["high"].items()}
    parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in high]
    prof = cProfile.Profile() if spec.get("profile") else None
    registry = CollectorRegistry()
    if mode == "charge":
        worker = wiring.charging_worker(settings, registry)
        worker.directory.catch_up()
        tune_runtime()  # as `callcharge charge` does
        c, step = worker.consumer, worker.run_once
    else:
        c = consumer(settings, settings.group_id)
        p = producer(settings, f"{settings.transactional_id_prefix}-{uuid.uuid4().hex[:6]}")
        p.init_transactions(30)
        step = functools.partial(_passthrough_batch, settings, c, p)
    c.assign(parts)
    print("ready", flush=True)
    sys.stdin.readline()
    # The clock starts after the first batch is through: connection set-up, offset lookup
    # and the first fetch are start-up, not throughput, and they would weigh far more on
    # the short passthrough run than on the charging one. With `warm` (charging only), it
    # starts once that many CDRs are charged: the first call of each tenant (its state read
    # from Redis, its configured lots recorded) is measured apart as the warm-up.
    w0, wcpu0 = time.time(), time.process_time()
    first = 0
    while not first:
        first = step()
    warm = int(spec.get("warm", 0))
    while warm and _charged(registry) < warm:
        step()
    if warm:
        first = int(_charged(registry))
    warmup = {"warm_s": time.time() - w0, "warm_cpu_s": time.process_time() - wcpu0, "warmed": first}
    t0 = time.time()
    cpu0 = time.process_time()  # user + system CPU of this process
    if prof:
        prof.enable()
    pending = dict(high)
    while True:
        for tp in c.position([TopicPartition(topic, q) for q in pending]):
            if tp.offset >= pending[tp.partition]:
                del pending[tp.partition]
        if not pending and not (mode == "charge" and worker.read_ahead):
            break  # every CDR consumed, and none waits in a batch read ahead
        step()
    if prof:
        prof.disable()
    t1 = time.time()
    cpu_s = time.process_time() - cpu0
    if mode == "charge":
        worker.close()
    else:
        c.close()
    charged = _charged(registry)
    return {
        **warmup,
        "t0": t0,
        "t1": t1,
        "cdrs": spec["cdrs"],
        "timed": spec["cdrs"] - first,
        "charged": charged,
        "cpu_s": cpu_s,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000,  # the peak, KB on Linux
        "profile": _report(prof) if prof else "",
    }


def _charged(registry: CollectorRegistry) -> float:
    """Charges the worker of this process has committed."""
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "callcharge_charges"
        for sample in metric.samples
        if sample.name == "callcharge_charges_total"
    )


def _passthrough_batch(settings: Settings, c: Consumer, p: Producer) -> int:
    """Consume, produce the same bytes, send offsets, commit: no work at all."""
    msgs = [m for m in take_batch(c, settings.batch_size, settings.batch_timeout_ms / 1000) if not m.error()]
    if not msgs:
        return 0
    p.begin_transaction()
    nxt: dict[int, int] = {}
    produce, out = p.produce, settings.topic.charges
    for m in msgs:
        produce(out, m.value(), m.key())
        nxt[m.partition() or 0] = (m.offset() or 0) + 1
    p.send_offsets_to_transaction(
        [TopicPartition(settings.topic.cdr, k, v) for k, v in nxt.items()], c.consumer_group_metadata(), 30
    )
    p.commit_transaction(60)
    return len(msgs)


def _report(prof: cProfile.Profile) -> str:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(25)
    return out.getvalue()


def measured(
    settings: Settings, mode: str, processes: int, high: dict[int, int], profile: bool = False
) -> tuple[float, str, float]:
    """CDR/s of `processes` fresh `mode` processes reading the cdr topic up to `high`, and
    their CPU time (user + system) per CDR in microseconds."""
    cdr_s, report, cpu_us, _ = measured_runs(settings, mode, processes, high, profile)
    return cdr_s, report, cpu_us


def measured_runs(
    settings: Settings,
    mode: str,
    processes: int,
    high: dict[int, int],
    profile: bool = False,
    warm: int = 0,
    on_go: Callable[[], None] | None = None,
) -> tuple[float, str, float, list[dict[str, Any]]]:
    """`measured`, and what each process reported (its RSS among it). `warm` (one process):
    the clock starts once that many CDRs, the first of the topic, are charged. `on_go`:
    called once every process is ready (started, its directory caught up), just before
    they are told to go."""
    tag = uuid.uuid4().hex[:6]
    env = settings.to_env(
        group_id=f"{settings.group_id}-{mode}-{tag}",
        transactional_id_prefix=f"{settings.transactional_id_prefix}-{mode}-{tag}",
        metrics_port=0,
        log_level="WARNING",
    )
    procs = []
    for i in range(processes):
        share = {p: h for p, h in high.items() if p % processes == i}
        cdrs = sum(share.values())  # a fresh topic: offsets start at 0
        spec = json.dumps({"high": share, "cdrs": cdrs, "profile": profile and i == 0, "warm": warm})
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "pipeline.dev.bench", "child", mode, spec],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"bench {mode} process exited with {proc.wait()}")
        if on_go is not None:
            on_go()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"bench {mode} process exited with {proc.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    if mode == "charge":  # a worker that dead-lettered or replayed would be measuring something else
        charged = sum(r["charged"] for r in results)
        if charged != sum(r["cdrs"] for r in results):
            raise RuntimeError(f"bench: {charged} charges for {sum(r['cdrs'] for r in results)} CDRs")
    elapsed = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    timed = sum(r["timed"] for r in results)
    cpu_us = sum(r["cpu_s"] for r in results) / max(timed, 1) * 1e6
    return timed / elapsed, "".join(r["profile"] for r in results), cpu_us, results


# The load producer's linger: CDRs leave in batches of up to this many ms, as a telephony
# platform's producer would batch them (librdkafka's default is 5 ms). Each CDR is stamped
# when produce() is called, so the wait is inside the measured latency. With 0 (one produce
# request per millisecond's CDRs), the embedded broker spent most of a core on produce
# requests alone and was the bottleneck: docs/benchmark.md has the figures.
LOAD_LINGER_MS = 20


def _drive_load(
    settings: Settings, values: list[tuple[bytes, bytes]], rate: int, ready: Any, go: Any, cpu: Any, linger_ms: int
) -> None:
    """The load producer, in its own process (as the telephony platform is): warmed before
    the clock starts (its first send waits for a producer id and metadata, about 0.5 s),
    then `values` at `rate` per second. Leaves its CPU seconds of the timed part in `cpu`."""
    p = producer(settings, extra={"linger.ms": linger_ms})
    key, value = values[0]
    p.produce(settings.topic.cdr, key=key, value=value)
    p.flush(30)
    ready.set()
    go.wait()
    cpu0 = time.process_time()
    load = values[1:]
    sent = 0
    produce, topic = p.produce, settings.topic.cdr
    t0 = time.perf_counter()
    while sent < len(load):  # every message due by now, then a millisecond's sleep
        due = min(len(load), int((time.perf_counter() - t0) * rate) + 1)
        for key, value in load[sent:due]:
            produce(topic, value, key)
        sent = due
        p.poll(0)
        time.sleep(0.001)
    p.flush(30)
    cpu.value = time.process_time() - cpu0


def latency(
    settings: Settings,
    values: list[tuple[bytes, bytes]],
    rate: int,
    seconds: float,
    linger_ms: int,
) -> dict[str, Any]:
    """Percentiles of CDR produced -> charge committed at a fixed offered load: the worker
    alone in this process (its main thread, as `callcharge charge` runs), the load from
    another process."""
    registry = CollectorRegistry()
    worker = wiring.charging_worker(settings, registry)
    worker.directory.catch_up()
    tune_runtime()  # as `callcharge charge` does
    worker.consumer.subscribe([settings.topic.cdr])
    samples: list[float] = []
    worker.latency_samples = samples
    while not worker.consumer.assignment():
        worker.run_once()
    total = int(rate * seconds)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs librdkafka threads
    ready, go, load_cpu = ctx.Event(), ctx.Event(), ctx.Value("d", float("nan"))
    load = ctx.Process(
        target=_drive_load,
        args=(settings, values[: total + 1], rate, ready, go, load_cpu, linger_ms),
    )
    load.start()
    deadline = time.monotonic() + 60
    while not (ready.is_set() and samples) and time.monotonic() < deadline:
        worker.run_once()  # the warm-up message, charged before the clock starts
    samples.clear()
    commits0 = _commit_stats(registry)
    servers = _server_pids(settings)
    cpu0 = {name: _cpu_s(pid) for name, pid in servers.items()}
    own0, wall0 = time.process_time(), time.monotonic()
    go.set()
    deadline = time.monotonic() + seconds + 60
    while len(samples) < total and time.monotonic() < deadline:
        worker.run_once()
    wall = time.monotonic() - wall0
    cpu = {"worker": time.process_time() - own0}
    cpu.update({name: _cpu_s(pid) - cpu0[name] for name, pid in servers.items()})
    load.join(30)
    cpu["load producer"] = load_cpu.value
    worker.close()
    commits1 = _commit_stats(registry)
    samples.sort()

    def pct(q: float) -> float:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 1) if samples else float("nan")

    return {
        "offered_cdr_per_s": rate,
        "load_linger_ms": linger_ms,
        "samples": len(samples),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        # the broker's commit of one batch's transaction (it grows as the embedded broker fills)
        "commit_ms_mean": round((commits1[0] - commits0[0]) / max(1, commits1[1] - commits0[1]) * 1000, 1),
        # share of one core each process used while the load ran: on 2 cores the embedded
        # broker's share says how much of the latency is the broker's
        "cpu_percent_of_a_core": {name: round(100 * v / wall, 1) for name, v in cpu.items()},
    }


def _server_pids(settings: Settings) -> dict[str, int]:
    """The embedded stack's processes (none when the bench runs against external servers)."""
    found = {svc.name: stack.running_pid(settings, svc) for svc in stack.services(settings)}
    return {name: pid for name, pid in found.items() if pid is not None}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commit_stats(registry: CollectorRegistry) -> tuple[float, float]:
    """(sum of seconds, count) of the worker's transaction commits so far."""
    total = count = 0.0
    for metric in registry.collect():
        if metric.name == "callcharge_txn_commit_seconds":
            for sample in metric.samples:
                if sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_count"):
                    count = sample.value
    return total, count


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
    done = [r[0] for r in charges if r is not None]
    encode = charge_encoder(codec)  # as the worker encodes: straight from the Charge
    decode = cdr_decoder(codec, settings.duration_tolerance_s)  # and decodes: straight to a Cdr
    t0 = time.perf_counter()
    for _, value in values[: len(done)]:
        decode(value)
    for i, charge in enumerate(done):
        encode(charge, 0, i, now)
    avro = len(done) / (time.perf_counter() - t0)
    return {"rating_only_cdr_per_s": round(rating), "avro_decode_encode_only_cdr_per_s": round(avro)}


def _latency_run(
    s: Settings,
    tag: str,
    name: str,
    tenants: list[dict[str, Any]],
    values: list[tuple[bytes, bytes]],
    rate: int,
    seconds: float,
    linger_ms: int,
) -> dict[str, Any]:
    lat_settings = replace(
        _fresh_redis_db(s, 15),
        topic_prefix=f"bench-{tag}-{name}-",
        group_id=f"bench-{tag}-{name}",
    )
    create_topics(lat_settings)
    publish_tenants(lat_settings, tenants)
    return latency(lat_settings, values, rate, seconds, linger_ms)


def _fresh_redis_db(settings: Settings, db: int) -> Settings:
    """Settings on database `db` of the embedded Redis, emptied: each charging run starts
    from no state, as the first run did (the bench never touches an external Redis)."""
    if settings.redis_url:
        raise FatalError("the benchmark runs on the embedded stack; unset REDIS_URL")
    s = replace(settings, redis_url=f"redis://127.0.0.1:{settings.redis_port}/{db}")
    wiring.redis_client(s).flushdb()
    return s


def _encoded(codec: Codec, rows: list[dict[str, Any]], call_prefix: str = "") -> list[tuple[bytes, bytes]]:
    """(key, Avro value) of each CDR row, its call id prefixed."""
    values = []
    for row in rows:
        cdr = cdr_from_dict({**row, "call_id": call_prefix + row["call_id"]})
        assert not isinstance(cdr, Rejected), cdr
        values.append((cdr.tenant_id.encode(), codec.encode("cdr", cdr_to_avro(cdr))))
    return values


def _throughput_rounds(
    s: Settings, high: dict[int, int], counts: list[int], rounds: int, profile: bool
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The passthrough and the charging worker side by side, `rounds` times at each process
    count: medians per count, and the profile reports."""
    runs: dict[str, list[float]] = {f"{mode}x{k}": [] for k in counts for mode in ("raw", "charge")}
    cpu: dict[str, list[float]] = {f"{mode}x{k}": [] for k in counts for mode in ("raw", "charge")}
    reports = []
    db = 0
    for r in range(rounds):
        for k in counts:
            print(f"round {r + 1}/{rounds}: raw transactional passthrough, {k} process(es) ...")
            raw_s, _, raw_cpu = measured(s, "raw", k, high)
            runs[f"rawx{k}"].append(raw_s)
            cpu[f"rawx{k}"].append(raw_cpu)
            print(f"round {r + 1}/{rounds}: charging worker, {k} process(es) ...")
            db = db % 14 + 1  # 1..14 for charging runs, 15 for the latency run
            cdr_s, report, charge_cpu = measured(
                _fresh_redis_db(s, db), "charge", k, high, profile and r == 0 and k == 1
            )
            runs[f"chargex{k}"].append(cdr_s)
            cpu[f"chargex{k}"].append(charge_cpu)
            reports.append(report)
    median = {key: statistics.median(v) for key, v in runs.items()}
    by_processes = {
        str(k): {
            "raw_passthrough_cdr_per_s": round(median[f"rawx{k}"]),
            "charging_worker_cdr_per_s": round(median[f"chargex{k}"]),
            "ratio": round(median[f"chargex{k}"] / median[f"rawx{k}"], 3),
            "raw_runs": [round(x) for x in runs[f"rawx{k}"]],
            "charging_runs": [round(x) for x in runs[f"chargex{k}"]],
            "charging_cpu_us_per_cdr": round(statistics.median(cpu[f"chargex{k}"]), 1),
            "passthrough_cpu_us_per_msg": round(statistics.median(cpu[f"rawx{k}"]), 1),
        }
        for k in counts
    }
    return by_processes, reports


def run(
    settings: Settings,
    n: int,
    tenants_n: int,
    rate: int,
    seconds: float,
    processes: int,
    rounds: int,
    profile: bool,
    load_linger_ms: int = LOAD_LINGER_MS,
) -> dict[str, Any]:
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
        publish_tenants(s, tenants)
        rows = traffic.cdrs(tenants, n + int(rate * seconds) + 1, seed=22)  # + the warm-up message
        values = _encoded(codec, rows)
        print(f"producing {n} CDRs ({tenants_n} tenants) ...")
        high = _produce(s, s.topic.cdr, values[:n])
        counts = sorted({1, processes})
        print(f"latency at {rate} CDR/s for {seconds:.0f}s, on the broker still fresh ...")
        lat = _latency_run(s, tag, "lat", tenants, values[n:], rate, seconds, load_linger_ms)
        by_processes, reports = _throughput_rounds(s, high, counts, rounds, profile)
        print("stage ceilings (rating alone, Avro alone) ...")
        ceilings = stage_ceilings(s, tenants, rows[:n], values[:n])
        half = max(1, round(by_processes["1"]["charging_worker_cdr_per_s"] / 2))
        if own_stack:  # latency is measured on a fresh broker: the embedded one slows as it fills
            stack.down(settings)
            stack.up(settings)
            create_topics(s)
            publish_tenants(s, tenants)
        print(f"latency at half the one-process throughput ({half} CDR/s) for {seconds:.0f}s ...")
        more = _encoded(codec, traffic.cdrs(tenants, int(half * seconds) + 1, seed=23), "half-")
        lat_half = _latency_run(s, tag, "half", tenants, more, half, seconds, load_linger_ms)
        best = max(counts, key=lambda k: by_processes[str(k)]["ratio"])
        result = {
            "cdrs": n,
            "tenants": tenants_n,
            "batch_size": s.batch_size,
            "cores": os.cpu_count(),
            "rounds": rounds,
            "processes": by_processes,
            "raw_passthrough_cdr_per_s": by_processes["1"]["raw_passthrough_cdr_per_s"],
            "charging_worker_cdr_per_s": by_processes["1"]["charging_worker_cdr_per_s"],
            "ratio": by_processes["1"]["ratio"],
            "best": {"processes": best, **by_processes[str(best)]},
            "stage_ceilings": ceilings,
            "latency": lat,
            "latency_half_load": lat_half,
            "broker_fresh_for_latency": own_stack,
            "load_linger_ms": load_linger_ms,
            # the figures issue 15 asks for, flat
            "ratio_1p": by_processes["1"]["ratio"],
            "ratio_2p": by_processes[str(max(counts))]["ratio"],
            "cpu_us_per_cdr": by_processes["1"]["charging_cpu_us_per_cdr"],
            "passthrough_cpu_us_per_msg": by_processes["1"]["passthrough_cpu_us_per_msg"],
            "latency_ms": {
                f"at_{rate}": {k: lat[k] for k in ("p50_ms", "p95_ms", "p99_ms", "commit_ms_mean")},
                f"at_half_{half}": {k: lat_half[k] for k in ("p50_ms", "p95_ms", "p99_ms", "commit_ms_mean")},
            },
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for report in reports:
            if report:
                print(report)
        return result
    finally:
        if own_stack:
            stack.down(settings)


def main(args: argparse.Namespace, settings: Settings) -> int:
    result = run(
        settings,
        args.cdrs,
        args.tenants,
        args.rate,
        args.seconds,
        args.processes,
        args.rounds,
        args.profile,
        LOAD_LINGER_MS if args.load_linger_ms is None else args.load_linger_ms,  # 0 is a linger too
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nmedians of {result['rounds']} rounds, {result['cdrs']} CDRs each, {result['cores']} cores:")
    print(f"  {'processes':>9} {'passthrough CDR/s':>18} {'charging CDR/s':>15} {'ratio':>7}")
    print(f"  {'':>9} {'':>18} {'':>15} {'':>7} {'CPU us/CDR':>11} {'passthrough CPU us/msg':>23}")
    for k, row in result["processes"].items():
        print(
            f"  {k:>9} {row['raw_passthrough_cdr_per_s']:>18} {row['charging_worker_cdr_per_s']:>15} "
            f"{row['ratio']:>7.1%} {row['charging_cpu_us_per_cdr']:>11} {row['passthrough_cpu_us_per_msg']:>23}"
        )
    print(
        f"ceilings: rating alone {result['stage_ceilings']['rating_only_cdr_per_s']} CDR/s, "
        f"Avro decode+encode alone {result['stage_ceilings']['avro_decode_encode_only_cdr_per_s']} CDR/s"
    )
    for lat in (result["latency"], result["latency_half_load"]):
        print(
            f"latency @ {lat['offered_cdr_per_s']} CDR/s: p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, "
            f"p99 {lat['p99_ms']} ms ({lat['samples']} samples); broker commit {lat['commit_ms_mean']} ms a batch"
        )
        shares = ", ".join(f"{name} {pct}%" for name, pct in lat["cpu_percent_of_a_core"].items())
        print(f"  CPU while it ran (% of one core): {shares}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":  # a measured process, started by measured()
    if len(sys.argv) != 4 or sys.argv[1] != "child":
        sys.exit("usage: python -m pipeline.dev.bench child raw|charge SPEC (started by `callcharge bench`)")
    print(json.dumps(_child(sys.argv[2], json.loads(sys.argv[3]))), flush=True)
