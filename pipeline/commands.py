"""Sub-commands that talk to the running stack: tenants load, ingest, charge, control, status, dlq, rebuild, gen."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from processors.inputs import Rejected, TenantError, cdr_from_dict

from .codec import Codec
from .config import Settings
from .errors import FatalError
from .kafka import producer
from .offline import InputError, load_rates, read_cdr_lines
from .records import cdr_to_avro, tenant_to_avro

log = logging.getLogger(__name__)


def _progress(done: int, total: int, label: str) -> None:
    if not sys.stderr.isatty() and done != total:
        return
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def load_tenants(settings: Settings, entries: list[dict[str, Any]]) -> int:
    codec = Codec(settings.schemas_dir)
    now = datetime.now(UTC)
    records = []
    for entry in entries:
        try:
            records.append((entry["tenant_id"], codec.encode("tenant_config", tenant_to_avro(entry, now))))
        except (TenantError, KeyError, TypeError) as exc:
            raise FatalError(f"tenants file: {exc}") from None
    p = producer(settings)
    for tid, value in records:
        p.produce(settings.topic.tenant_config, key=tid.encode(), value=value)
    if p.flush(30):
        raise FatalError("tenant config not delivered to the broker within 30 s")
    return len(records)


def ingest(settings: Settings, path: Path, strict: bool = False) -> tuple[int, int]:
    """Produce CDRs (JSON lines or a Graph response) to the cdr topic, keyed by tenant.

    Lines that cannot become a CDR are reported and skipped; returns (sent, bad).
    """
    codec = Codec(settings.schemas_dir)
    rows = list(read_cdr_lines(path))
    p = producer(settings)
    sent = bad = 0
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for n, (line, obj) in enumerate(rows, start=1):
        cdr = obj if isinstance(obj, Rejected) else cdr_from_dict(obj)
        if isinstance(cdr, Rejected):
            bad += 1
            print(f"line {line}: {cdr}", file=sys.stderr)
            continue
        p.produce(
            settings.topic.cdr,
            key=cdr.tenant_id.encode(),
            value=codec.encode("cdr", cdr_to_avro(cdr)),
            on_delivery=on_delivery,
        )
        sent += 1
        if n % 1000 == 0:
            p.poll(0)
            _progress(n, len(rows), "ingest")
    _progress(len(rows), len(rows), "ingest")
    if p.flush(60) or errors:
        raise FatalError(f"{len(errors) or 'some'} CDRs not acknowledged by the broker: {errors[:3]}")
    return sent, bad


def cmd_tenants(args: argparse.Namespace, settings: Settings) -> int:
    try:
        data = json.loads(Path(args.file).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FatalError(f"cannot read {args.file}: {exc}") from None
    n = load_tenants(settings, data["tenants"] if isinstance(data, dict) else data)
    print(f"published {n} tenant configurations to {settings.topic.tenant_config}")
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    try:
        sent, bad = ingest(settings, Path(args.file))
    except InputError as exc:
        raise FatalError(str(exc)) from None
    print(f"produced {sent} CDRs to {settings.topic.cdr}; {bad} bad lines skipped")
    return 0


def build_worker(settings: Settings, registry: CollectorRegistry | None = None) -> Any:
    from .charging_worker import ChargingWorker
    from .metrics import ChargingMetrics
    from .store import Store

    try:
        rates = load_rates(settings.rates_file)
    except InputError as exc:
        raise FatalError(str(exc)) from None
    registry = registry or CollectorRegistry()
    return ChargingWorker(
        settings, Codec(settings.schemas_dir), Store.connect(settings.redis), rates, ChargingMetrics(registry)
    )


def cmd_charge(args: argparse.Namespace, settings: Settings) -> int:
    from .charging_worker import tune_runtime
    from .metrics import serve

    registry = CollectorRegistry()
    worker = build_worker(settings, registry)
    tune_runtime()
    serve(registry, settings.metrics_port if args.metrics_port is None else args.metrics_port)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    log.info("settings: %s", settings.masked())
    worker.run(max_idle_s=args.exit_when_idle)
    return 0


def cmd_control(args: argparse.Namespace, settings: Settings) -> int:
    from .control_app import build_app

    if not settings.api_token:
        log.warning("CALLCHARGE_API_TOKEN is not set: the HTTP API refuses every request")
    app = build_app(settings)
    level = {"CRITICAL": "crit", "ERROR": "error", "WARNING": "warn", "DEBUG": "debug"}.get(
        settings.log_level.upper(), "info"
    )
    sys.argv = ["callcharge-control", "worker", "--loglevel", level]
    app.main()
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from . import dlq

    if args.action == "redrive":
        if not args.reason:
            raise FatalError("dlq redrive needs --reason (see `callcharge dlq` for the reasons present)")
        n, before = dlq.redrive(settings, args.reason, dry_run=args.dry_run)
        verb = "would re-drive" if args.dry_run else "re-drove"
        print(f"{verb} {n} '{args.reason}' dead letters to {settings.topic.cdr} ({before} re-driven before: skipped)")
        return 0
    print("\n".join(dlq.summary(settings, args.reason, args.newest)))
    return 0


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from .rebuild import rebuild

    report = rebuild(settings, check=args.check, only=args.tenant)
    print("\n".join(report.lines(args.check)))
    return 3 if args.check and report.differing else 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from .status import status

    lines, _ = status(settings)
    print("\n".join(lines))
    return 0


def cmd_gen(args: argparse.Namespace, settings: Settings) -> int:
    from . import traffic

    tenants = traffic.tenants(args.tenants, seed=args.seed)
    Path(args.tenants_out).write_text(json.dumps(tenants, indent=1))
    with open(args.cdrs_out, "w") as f:
        for c in traffic.cdrs(tenants, args.cdrs, seed=args.seed + 1):
            f.write(json.dumps(c) + "\n")
    print(f"wrote {args.tenants} tenants to {args.tenants_out} and {args.cdrs} CDRs to {args.cdrs_out}")
    return 0


def register(sub: Any) -> None:
    t = sub.add_parser("tenants", help="publish tenant configuration")
    t.add_argument("action", choices=["load"])
    t.add_argument("file")
    t.set_defaults(func=cmd_tenants)

    i = sub.add_parser("ingest", help="produce CDRs (JSON lines or Graph getPstnCalls) to the cdr topic")
    i.add_argument("file")
    i.set_defaults(func=cmd_ingest)

    c = sub.add_parser("charge", help="run the charging worker")
    c.add_argument("--metrics-port", type=int, default=None)
    c.add_argument(
        "--exit-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop once nothing has arrived for this long and the group has charged every CDR in the topic "
        "(every partition, including any a dead worker still holds); for demos, tests and draining",
    )
    c.set_defaults(func=cmd_charge)

    k = sub.add_parser("control", help="run the control worker (faust): recharge, funding, expiry, API")
    k.set_defaults(func=cmd_control)

    d = sub.add_parser("dlq", help="dead letters by reason; re-drive them once the cause is fixed")
    d.add_argument("action", nargs="?", choices=["show", "redrive"], default="show")
    d.add_argument("--reason", help="only this reason (required for redrive)")
    d.add_argument("--newest", type=int, default=10, metavar="N", help="show the N newest letters (default 10)")
    d.add_argument("--dry-run", action="store_true", help="redrive: count, produce nothing")
    d.set_defaults(func=cmd_dlq)

    st = sub.add_parser("status", help="broker and Redis reachable, CDRs waiting to be charged, dead letters, tenants")
    st.set_defaults(func=cmd_status)

    b = sub.add_parser("rebuild", help="restore Redis balances and call records from the ledger on Kafka")
    b.add_argument(
        "--check", action="store_true", help="compare Redis with the ledger, write nothing (exit 3 if differ)"
    )
    b.add_argument("--tenant", help="only this tenant")
    b.set_defaults(func=cmd_rebuild)

    g = sub.add_parser("gen", help="generate example tenants and CDRs")
    g.add_argument("--tenants", type=int, default=20)
    g.add_argument("--cdrs", type=int, default=2000)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--tenants-out", default="tenants.json")
    g.add_argument("--cdrs-out", default="cdrs.jsonl")
    g.set_defaults(func=cmd_gen)

    from .demo import register as register_demo

    register_demo(sub)
