"""`make bench-scale`: how the cost of charging grows with tenants, users and calls, on a
fresh embedded stack, in one run. Writes bench/scale.json and prints a table.

Two platforms side by side, each charged by one worker process from a fresh Redis
database: 200 small tenants, and 10 000 tenants with 1 000 000 users (the largest 300 000,
nine of 30 000, the rest about 43 each) whose calls come in proportion to their users.
Measured for each: CDR/s and CPU us per CDR, Redis memory per call (the dedup window's
seen index: what stays) and per tenant (state and config), Redis bytes written per CDR
(the AOF's growth: appendfsync always writes every byte), worker RSS, the tenant
directory's memory per configured user, `rebuild --check` time per 1 000 000 charges,
`report usage` time for the largest tenant's month, and an idle control worker's CPU and
RSS with every tenant configured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline import wiring
from pipeline.adapters import keyspace
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import cdr_to_avro
from pipeline.adapters.directory import TenantDirectory
from pipeline.adapters.kafka import create_topics
from pipeline.config import Settings
from pipeline.dev import stack, traffic
from pipeline.dev.bench import _cpu_s, _fresh_redis_db, _produce, measured_runs
from pipeline.dev.mailsink import MailSink, free_port
from pipeline.ops.publish import publish_tenants
from pipeline.ops.rebuild import rebuild
from pipeline.reports import finance
from processors.inputs import Rejected, cdr_from_dict

REPO = Path(__file__).resolve().parents[2]


def platform(tenants_n: int, users: int, largest: int, seed: int = 31) -> list[dict[str, Any]]:
    """`tenants_n` tenants with `users` users in all: one of `largest`, nine of a tenth of
    it, the rest shared evenly by the others."""
    sizes = [largest] + [largest // 10] * 9
    rest = users - sum(sizes)
    small = tenants_n - len(sizes)
    sizes += [rest // small + (1 if i < rest % small else 0) for i in range(small)]
    base = traffic.tenants(tenants_n, seed=seed, users_per_tenant=1, prefix=f"s{seed}-")
    rng = random.Random(seed)
    for t, size in zip(base, sizes, strict=True):
        model = t["users"][0]
        t["users"] = [
            {
                **model,
                "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "email": f"u{k}@{t['tenant_id']}.example",
                "roles": ["Teams Administrator"] if k == 0 else [],
                "licences": traffic.PLANS[k % 4] + ["MCOPSTNPP"],  # MCOPSTN1, 2, 5, 8
            }
            for k in range(size)
        ]
    return base


def _rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default), in MB (Linux /proc)."""
    pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _redis_info(settings: Settings) -> tuple[int, int, float]:
    """(used_memory, aof_current_size, CPU seconds used) of the embedded Redis."""
    info = wiring.redis_client(settings).info()
    cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return int(info["used_memory"]), int(info.get("aof_current_size", 0)), cpu


def _keys_memory(settings: Settings, pattern: str) -> tuple[int, int]:
    """(keys, bytes of Redis memory) of the keys matching `pattern` (MEMORY USAGE each)."""
    r = wiring.redis_client(settings)
    n = total = 0
    for key in r.scan_iter(match=pattern, count=2000):
        n += 1
        total += int(r.memory_usage(key, samples=0) or 0)
    return n, total


def _hash_fields(settings: Settings, pattern: str) -> int:
    """Fields of the hashes matching `pattern` (HLEN each)."""
    r = wiring.redis_client(settings)
    return sum(int(r.hlen(key)) for key in r.scan_iter(match=pattern, count=2000))


def small_platform() -> list[dict[str, Any]]:
    """The 200 small tenants the 10 000-tenant platform is measured against."""
    return traffic.tenants(200, seed=21, prefix="p200-")


def calls(tenants: list[dict[str, Any]], n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every tenant's first call, then `n` CDRs in proportion to users). The first calls
    (a state read from Redis, configured lots recorded: once per tenant and worker) are
    charged before the clock starts and measured apart; the n CDRs after them are the
    steady state a platform runs in. `make bench-steps` charges the same."""
    warm = [traffic.cdrs([t], 1, seed=33 + i)[0] for i, t in enumerate(tenants)]
    return warm, traffic.cdrs(tenants, n, seed=32, by_users=True)


def _traffic(s: Settings, tenants: list[dict[str, Any]], n: int) -> tuple[list[Any], list[Any], dict[int, int]]:
    """`calls`, produced: (first calls, every CDR, the topic's high offsets)."""
    codec = Codec(s.schemas_dir)
    warm, timed = calls(tenants, n)
    rows = warm + timed
    values = []
    for row in rows:
        cdr = cdr_from_dict({**row, "call_id": uuid.uuid4().hex})  # 32-character call ids
        assert not isinstance(cdr, Rejected), cdr
        values.append((cdr.tenant_id.encode(), codec.encode("cdr", cdr_to_avro(cdr))))
    return warm, rows, _produce(s, s.topic.cdr, values)


def scenario(
    settings: Settings,
    name: str,
    tenants: list[dict[str, Any]],
    n: int,
    db: int,
    full: bool = True,
    profile: bool = False,
) -> dict[str, Any]:
    """Load `tenants`, charge `n` CDRs with one worker and measure; `full`: also rebuild,
    the largest tenant's usage report and an idle control worker."""
    tag = uuid.uuid4().hex[:6]
    s = replace(
        _fresh_redis_db(settings, db),
        topic_prefix=f"scale-{tag}-",
        group_id=f"scale-{tag}",
        transactional_id_prefix=f"scale-{tag}",
        metrics_port=0,
    )
    create_topics(s)
    users = sum(len(t["users"]) for t in tenants)
    print(f"[{name}] {len(tenants)} tenants, {users} users: tenants load ...", flush=True)
    t0 = time.monotonic()
    summary = publish_tenants(s, tenants)
    load_s = time.monotonic() - t0
    print(f"[{name}] {summary} in {load_s:.0f}s; the tenant directory ...", flush=True)
    rss0 = _rss_mb()
    directory = TenantDirectory(s, Codec(s.schemas_dir), wiring.store(s))  # config materialized in Redis
    t0 = time.monotonic()
    directory.catch_up(timeout=600)
    directory_s = time.monotonic() - t0
    rss1 = _rss_mb()
    directory.close()
    warm, rows, high = _traffic(s, tenants, n)
    r = wiring.redis_client(s)
    rewrite = r.config_get("auto-aof-rewrite-percentage").get("auto-aof-rewrite-percentage", "100")
    r.config_set("auto-aof-rewrite-percentage", 0)  # the AOF's growth is the bytes written
    before: list[tuple[int, int, float]] = []  # taken once the worker has started (its directory read)
    print(f"[{name}] charging {n} CDRs, one worker process ...", flush=True)
    cdr_s, report_text, cpu_us, children = measured_runs(
        s, "charge", 1, high, profile, warm=len(warm), on_go=lambda: before.append(_redis_info(s))
    )
    mem0, aof0, rcpu0 = before[0]
    child = children[0]
    if profile:
        print(report_text)
    mem1, aof1, rcpu1 = _redis_info(s)
    r.config_set("auto-aof-rewrite-percentage", rewrite or "100")
    seen_keys, seen_bytes = _keys_memory(s, keyspace.SEEN_PATTERN)
    _, left_bytes = _keys_memory(s, keyspace.OUTPUTS_PATTERN)
    left_calls = _hash_fields(s, keyspace.OUTPUTS_PATTERN)  # calls whose outputs are still kept
    tenant_keys, tenant_bytes = _keys_memory(s, keyspace.TENANT_PATTERN)
    charged = {
        "tenants": len(tenants),
        "users": users,
        "largest_tenant_users": max(len(t["users"]) for t in tenants),
        "cdrs": n,
        "first_calls": len(warm),
        "cdr_per_s": round(cdr_s),
        "cpu_us_per_cdr": round(cpu_us, 1),
        "first_call_cpu_us_per_tenant": round(child["warm_cpu_s"] / max(child["warmed"], 1) * 1e6, 1),
        "first_calls_per_s": round(child["warmed"] / max(child["warm_s"], 1e-9)),
        "worker_rss_mb": round(max(c["rss_mb"] for c in children), 1),
        "redis_bytes_per_call_seen_index": round(seen_bytes / len(rows), 1),
        "redis_used_memory_growth_per_call": round((mem1 - mem0) / len(rows), 1),
        "redis_outputs_left_after_commit": left_calls,
        "redis_aof_bytes_per_cdr": round((aof1 - aof0) / len(rows)),
        "redis_cpu_us_per_cdr": round((rcpu1 - rcpu0) / len(rows) * 1e6, 1),
    }
    if not full:
        return charged
    largest = max(tenants, key=lambda t: len(t["users"]))["tenant_id"]
    print(f"[{name}] rebuild --check and report usage of {largest} ...", flush=True)
    t0 = time.monotonic()
    report = rebuild(s, check=True)
    rebuild_s = time.monotonic() - t0
    t0 = time.monotonic()
    ledger = finance.read_ledger(s, largest)
    month = max({c["month"] for c in ledger.charges})
    rows_out = finance.usage_report(ledger, largest, month, "csv").count("\n") - 1
    usage_s = time.monotonic() - t0
    control = control_idle(s, len(tenants))
    return {
        **charged,
        "tenants_load_s": round(load_s, 1),
        "config_records_published": summary.records,
        "directory_catch_up_s": round(directory_s, 1),
        "directory_bytes_per_user": round((rss1 - rss0) * 1e6 / max(users, 1)),
        "redis_seen_index_keys": seen_keys,
        "redis_bytes_outputs_left": left_bytes,
        "redis_bytes_per_tenant": round(tenant_bytes / max(tenant_keys, 1)),
        "rebuild_check_s": round(rebuild_s, 1),
        "rebuild_s_per_million_charges": round(rebuild_s * 1e6 / len(rows), 1),
        "rebuild_matching_tenants": report.matching,
        "report_usage_largest_s": round(usage_s, 2),
        "report_usage_rows": rows_out,
        **control,
    }


def control_idle(s: Settings, tenants: int, measure_s: float = 30, settle_max_s: float = 900) -> dict[str, Any]:
    """An idle control worker with every tenant configured: CPU share of a core and RSS,
    measured once its directory holds all `tenants` (/health says how many), it has
    handled the backlog of ledger records it starts with (the charges and events the run
    left) and nothing has come for 15 s; mails go to a sink."""
    smtp = MailSink().start()
    http = free_port()
    env = s.to_env(metrics_port=0, log_level="WARNING", http_port=http, smtp_port=smtp.port)
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "control"], env=env, cwd=REPO, stdout=devnull, stderr=devnull
        )
    try:
        t0 = time.monotonic()
        last, still_since = -1.0, time.monotonic()
        while time.monotonic() - t0 < settle_max_s:
            time.sleep(3)
            handled = _control_handled(http)
            if handled != last or _control_tenants(http) < tenants:  # still reading
                last, still_since = handled, time.monotonic()
            elif handled >= 0 and time.monotonic() - still_since >= 15:
                break
        settled_s = time.monotonic() - t0
        cpu0 = _cpu_s(proc.pid)
        time.sleep(measure_s)
        share = (_cpu_s(proc.pid) - cpu0) / measure_s
        return {
            "control_idle_cpu_percent": round(100 * share, 1),
            "control_rss_mb": round(_rss_mb(proc.pid), 1),
            "control_start_and_backlog_s": round(settled_s, 1),
            "control_backlog_records": int(last),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        smtp.stop()


def _control_tenants(port: int) -> int:
    """How many tenants the control worker's directory holds (its /health), -1 if it does
    not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return int(json.loads(resp.read()).get("tenants", -1))
    except urllib.error.HTTPError as err:  # 503 while Redis or the broker is away: it says too
        return int(json.loads(err.read()).get("tenants", -1))
    except (OSError, ValueError):
        return -1


def _control_handled(port: int) -> float:
    """callcharge_control_records_total of the control worker, all topics but the timer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return -1.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("callcharge_control_records_total{") and 'topic="timer"' not in line
    )


def run(settings: Settings, n: int, users: int, tenants_n: int, largest: int) -> dict[str, Any]:
    own = not all(v.startswith("running") for v in stack.status(settings).values())
    if own:
        stack.up(settings, fresh=True)
    try:
        small = scenario(settings, "200 tenants", small_platform(), n, 1)
        big_platform = platform(tenants_n, users, largest)
        if own:  # each platform on a fresh broker: the embedded one slows as it fills
            stack.down(settings)
            stack.up(settings, fresh=True)
        large = scenario(settings, f"{tenants_n} tenants", big_platform, n, 2)
        biggest = max(big_platform, key=lambda t: len(t["users"]))
        if own:
            stack.down(settings)
            stack.up(settings, fresh=True)
        alone = scenario(settings, f"the {largest}-user tenant alone", [biggest], n // 2, 3, full=False)
    finally:
        if own:
            stack.down(settings)
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "small": small,
        "large": large,
        "largest_tenant_alone": alone,
        "cdr_per_s_large_vs_small": round(large["cdr_per_s"] / small["cdr_per_s"], 3),
    }


ROWS = (
    ("tenants", "tenants"),
    ("users", "users"),
    ("largest_tenant_users", "largest tenant's users"),
    ("cdr_per_s", "CDR/s (1 worker)"),
    ("cpu_us_per_cdr", "CPU us per CDR"),
    ("first_call_cpu_us_per_tenant", "first call of a tenant, CPU us"),
    ("worker_rss_mb", "worker RSS MB"),
    ("directory_bytes_per_user", "directory bytes per user"),
    ("redis_bytes_per_call_seen_index", "Redis bytes per call (seen index)"),
    ("redis_used_memory_growth_per_call", "Redis used_memory growth per call"),
    ("redis_outputs_left_after_commit", "outputs left after commit"),
    ("redis_bytes_per_tenant", "Redis bytes per tenant (state, config)"),
    ("redis_aof_bytes_per_cdr", "Redis AOF bytes per CDR"),
    ("redis_cpu_us_per_cdr", "Redis CPU us per CDR"),
    ("tenants_load_s", "tenants load s"),
    ("rebuild_s_per_million_charges", "rebuild --check s per 1M charges"),
    ("report_usage_largest_s", "report usage, largest tenant, s"),
    ("control_idle_cpu_percent", "idle control CPU % of a core"),
    ("control_rss_mb", "control RSS MB"),
    ("control_backlog_records", "ledger records control started with"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.dev.scale", description=__doc__.splitlines()[0])
    p.add_argument("--cdrs", type=int, default=100_000)
    p.add_argument("--tenants", type=int, default=10_000)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--largest", type=int, default=300_000)
    p.add_argument("--out", default="bench/scale.json")
    p.add_argument("--profile", action="store_true", help="only charge the large platform, with a cProfile printed")
    args = p.parse_args(argv)
    if args.profile:
        settings = Settings.from_env()
        own = not all(v.startswith("running") for v in stack.status(settings).values())
        if own:
            stack.up(settings, fresh=True)
        try:
            tenants = platform(args.tenants, args.users, args.largest)
            print(scenario(settings, "profile", tenants, args.cdrs, 2, full=False, profile=True))
        finally:
            if own:
                stack.down(settings)
        return 0
    result = run(Settings.from_env(), args.cdrs, args.users, args.tenants, args.largest)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    alone = result["largest_tenant_alone"]
    big = f"{alone['users']}-user alone"
    print(f"\n{'':<42} {'200 tenants':>14} {str(result['large']['tenants']) + ' tenants':>16} {big:>20}")
    for key, label in ROWS:
        print(f"{label:<42} {result['small'][key]:>14} {result['large'][key]:>16} {alone.get(key, ''):>20}")
    print(f"CDR/s at {result['large']['tenants']} tenants: {result['cdr_per_s_large_vs_small']:.0%} of 200 tenants")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
