"""`make bench-steps`: steps 3 to 5 of the charging worker (read, fold, apply:
`pipeline.charging.apply.StateApply.charge`) in this process against the embedded Redis,
on `make bench-scale`'s two platforms, with no broker in the loop.

These are the steps whose cost grows with the tenants a batch touches. Here the same
batches go through the same code with the broker's share and the consumer's timing left
out; the machine's own noise stays (on a shared 2-core machine the ratio moved from 45 %
to 78 % across three runs of one code), so compare changes by alternating runs. The
batches are made as the consumer makes them: CDRs keyed by tenant over the `cdr`
partitions (CRC-32 here, murmur2 in Kafka: the same spread), a batch of 2 000 from one
partition at a time. Every tenant's first call is charged before the clock starts, as
in `make bench-scale`, and committed outputs are dropped as a commit would drop them.

Printed per platform: tenants per batch, wall time, this process's CPU, and Redis's CPU
and Lua time, each per CDR; then the rate at 10 000 tenants as a share of the rate at
200 (the ratio `make bench-scale` measures end to end).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import uuid
import zlib
from collections import defaultdict
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline import wiring
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.files import load_rates
from pipeline.adapters.metrics import ChargingMetrics
from pipeline.charging.apply import StateApply
from pipeline.charging.intake import Item
from pipeline.charging.runtime import Faults, collect_between_batches, tune_runtime
from pipeline.config import Settings
from pipeline.dev import stack
from pipeline.dev.bench import _fresh_redis_db
from pipeline.dev.scale import calls, platform, small_platform
from pipeline.dev.testing import StaticDirectory
from processors.inputs import Rejected, cdr_from_dict, tenant_from_dict


class _Consumed:
    """Where an Item came from, as a consumed message tells it (no broker here)."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return "cdr"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b""

    def value(self) -> bytes:
        return b""

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def batches(settings: Settings, rows: list[dict[str, Any]]) -> list[list[Item]]:
    """`rows` as decoded Items in the consumer's batches: partition by partition, 2 000 at
    a time (`settings.batch_size`), each with a 32-character call id."""
    by_partition: dict[int, list[Item]] = defaultdict(list)
    for row in rows:
        cdr = cdr_from_dict({**row, "call_id": uuid.uuid4().hex})
        assert not isinstance(cdr, Rejected), cdr
        part = zlib.crc32(cdr.tenant_id.encode()) % settings.cdr_partitions
        item = Item(_Consumed(part, len(by_partition[part])))  # type: ignore[arg-type]
        item.cdr = cdr
        by_partition[part].append(item)
    ordered = [item for _, items in sorted(by_partition.items()) for item in items]
    return [ordered[i : i + settings.batch_size] for i in range(0, len(ordered), settings.batch_size)]


def measure(
    settings: Settings, name: str, tenants: list[dict[str, Any]], n: int, db: int, profile: bool = False
) -> dict[str, Any]:
    """Charge every tenant's first call, then `n` CDRs in proportion to users, through
    `StateApply.charge` on database `db` (emptied first); the figures of the `n`."""
    s = _fresh_redis_db(settings, db)
    print(f"[{name}] {len(tenants)} tenants: preparing their books and {n} CDRs ...", flush=True)
    directory = StaticDirectory(tenant_from_dict(t) for t in tenants)
    store = wiring.store(s)
    steps = StateApply(
        s,
        Codec(s.schemas_dir),
        store,
        load_rates(s.rates_file),
        ChargingMetrics(CollectorRegistry()),
        directory,
        Faults(),
    )
    warm, rows = calls(tenants, n)
    first, timed = batches(s, warm), batches(s, rows)
    tune_runtime()  # as the worker does once its directory is read

    def run(work: list[list[Item]], number: int) -> None:
        for items in work:
            number += 1
            steps.charge(items, number)
            committed: dict[str, list[str]] = defaultdict(list)
            for item in items:
                if item.charge is not None and item.cdr is not None:
                    committed[item.cdr.tenant_id].append(item.cdr.call_id)
            store.forget_outputs(dict(committed))
            collect_between_batches()

    run(first, 0)
    r = wiring.redis_client(s)
    cpu0, lua0 = _redis_cpu(r)
    prof = cProfile.Profile() if profile else None
    t0, c0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    run(timed, len(first))
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    cpu1, lua1 = _redis_cpu(r)
    steps.close()
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    charged = sum(1 for items in timed for item in items if item.charge is not None)
    if charged != n:
        raise RuntimeError(f"bench-steps: {charged} charges for {n} CDRs")
    return {
        "tenants": len(tenants),
        "batches": len(timed),
        "tenants_per_batch": round(sum(len({i.cdr.tenant_id for i in b if i.cdr}) for b in timed) / len(timed)),
        "wall_us_per_cdr": round(wall / n * 1e6, 1),
        "cpu_us_per_cdr": round(cpu / n * 1e6, 1),
        "redis_cpu_us_per_cdr": round((cpu1 - cpu0) / n * 1e6, 1),
        "lua_us_per_cdr": round((lua1 - lua0) / n * 1e6, 1),
    }


def _redis_cpu(r: Any) -> tuple[float, float]:
    """(CPU seconds Redis has used, seconds its scripts have run)."""
    cpu = r.info("cpu")
    scripts = r.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), scripts / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.dev.steps", description=__doc__.splitlines()[0])
    p.add_argument("--cdrs", type=int, default=60_000)
    p.add_argument("--profile", action="store_true", help="print a cProfile of the 10 000-tenant run")
    args = p.parse_args(argv)
    settings = replace(Settings.from_env(), metrics_port=0)
    own = not all(v.startswith("running") for v in stack.status(settings).values())
    if own:
        stack.up(settings, fresh=True)
    try:
        small = measure(settings, "200 tenants", small_platform(), args.cdrs, 4)
        large = measure(
            settings, "10000 tenants", platform(10_000, 1_000_000, 300_000), args.cdrs, 5, profile=args.profile
        )
    finally:
        if own:
            stack.down(settings)
    print(f"\n{'steps 3-5, per CDR':<34} {'200 tenants':>14} {'10000 tenants':>16}")
    for key in ("tenants_per_batch", "wall_us_per_cdr", "cpu_us_per_cdr", "redis_cpu_us_per_cdr", "lua_us_per_cdr"):
        print(f"{key:<34} {small[key]:>14} {large[key]:>16}")
    ratio = small["wall_us_per_cdr"] / large["wall_us_per_cdr"]
    print(f"steps 3-5 at 10000 tenants: {ratio:.0%} of the CDRs per second at 200 tenants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
