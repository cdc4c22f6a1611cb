"""The `callcharge` command: the whole command table. Each command parses its arguments
and calls into ops/ (operator commands), charging/ and control/ (the workers, built by
`pipeline.wiring`) or dev/ (the embedded stack, demo, benchmark)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry

from pipeline.adapters import logs, progress, strict_json
from pipeline.config import Settings, UnknownSetting
from pipeline.errors import FatalError, InputError
from processors.inputs import canonical_id, parse_time

log = logging.getLogger("callcharge")

# Exit codes (the table in docs/operations.md): 0 done; 1 cannot proceed (the broker or
# Redis cannot be used, a fatal condition); 2 bad input or usage; 3 done, but found a problem
# (rows rejected, a check that differs, a statement that does not add up); 4 the embedded
# stack is up but its Redis holds state no ledger backs; 130 interrupted.
EXIT_CANNOT = 1
EXIT_BAD_INPUT = 2
EXIT_ROWS_REJECTED = 3  # ingest: every good row was sent, some rows were rejected
TENANT_ID_HELP = "the tenant of rows that name none (a raw Graph getPstnCalls response: the token's tenant)"


def _print_report(title: str, report: dict[str, str]) -> None:
    print(title)
    for name, line in report.items():
        print(f"  {name:<18} {line}")


# -- the embedded stack and topics -----------------------------------------------------------
def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.dev import stack

    if args.action == "up":
        _print_report("embedded stack:", stack.up(settings, fresh=args.fresh, keep_redis=args.keep_redis))
        print(f"  kafka  {settings.bootstrap}\n  redis  {settings.redis}")
        split = stack.split_warning(settings)
        if split:
            print(split, file=sys.stderr)
            return 4
    elif args.action == "down":
        _print_report("embedded stack:", stack.down(settings))
        print(stack.DOWN_WARNING, file=sys.stderr)
    else:
        report = stack.status(settings)
        _print_report("embedded stack:", report)
        return 0 if all(v.startswith("running") for v in report.values()) else 3
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.adapters.kafka import create_topics

    _print_report(f"topics on {settings.bootstrap}:", create_topics(settings))
    return 0


# -- data in -----------------------------------------------------------------------------------
# Commands that read or write Kafka ask the broker first: one line and exit 1 within 10 s
# when it cannot be reached, not a minute of retries and pages of client log.
NEEDS_BROKER = frozenset({"topics", "tenants", "ingest", "status", "dlq", "rebuild", "report", "export", "rerate"})
# Commands that can run for minutes draw a progress bar when stderr is a terminal.
SHOWS_PROGRESS = frozenset({"tenants", "ingest", "rebuild", "report", "export", "rerate"})


def _broker_answers(settings: Settings) -> None:
    from pipeline.adapters.kafka import preflight

    preflight(settings, timeout=10)


def cmd_tenants(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.publish import publish_tenants, remove_tenant

    if args.action == "remove":
        tenant_id = canonical_id(args.target)
        command_id = args.command_id or f"remove-{uuid.uuid4()}"
        print(remove_tenant(settings, tenant_id, command_id, args.requested_by or getpass.getuser()))
        return 0
    args.file = args.target
    try:
        data = strict_json.loads(Path(args.file).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FatalError(f"cannot read {args.file}: {exc}") from None
    summary = publish_tenants(settings, data["tenants"] if isinstance(data, dict) else data)
    print(f"{summary} on {settings.topic.tenant_config}")
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.publish import ingest

    try:
        sent, bad = ingest(settings, [Path(f) for f in args.files], args.tenant_id)
    except InputError as exc:
        raise FatalError(str(exc)) from None
    print(f"produced {sent} CDRs to {settings.topic.cdr}; {bad} rows rejected (listed on stderr)")
    return EXIT_ROWS_REJECTED if bad else 0


# -- the workers ---------------------------------------------------------------------------------
def cmd_charge(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import wiring
    from pipeline.adapters.health import serve_worker
    from pipeline.charging.runtime import tune_runtime

    registry = CollectorRegistry()
    worker = wiring.charging_worker(settings, registry)
    tune_runtime()
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    serve_worker(registry, port, settings.metrics_host, wiring.readiness(settings), worker.alive)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    log.info("settings: %s", settings.masked())
    worker.run(max_idle_s=args.exit_when_idle)
    return 0


def cmd_control(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import wiring

    if not settings.api_token and not settings.api_tokens_file:
        log.warning("neither CALLCHARGE_API_TOKEN nor CALLCHARGE_API_TOKENS_FILE is set: the API refuses every request")
    app = wiring.control_app(settings)
    level = {"CRITICAL": "crit", "ERROR": "error", "WARNING": "warn", "DEBUG": "debug"}.get(
        settings.log_level.upper(), "info"
    )
    sys.argv = ["callcharge-control", "worker", "--loglevel", level]
    threading.Thread(target=_shutdown_watchdog, args=(app, settings.shutdown_timeout_s), daemon=True).start()
    app.main()
    return 0


def _shutdown_watchdog(app: Any, timeout_s: float) -> None:
    """Once the control worker is stopping, give it `timeout_s` to finish, then end the
    process: faust's consumer can hang in its shutdown while the broker is unreachable, and
    a stop must not wait for the broker. Nothing is lost: every handler is idempotent and an
    unacknowledged record is redelivered to the next worker."""
    while not app.should_stop:
        time.sleep(0.5)
    time.sleep(timeout_s)
    log.error("control worker still stopping after %.0f s (broker or Redis unreachable?): exiting now", timeout_s)
    logging.shutdown()
    os._exit(1)


# -- operator commands -----------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.status import status

    lines, _ = status(settings)
    print("\n".join(lines))
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops import dlq

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
    from pipeline.ops.rebuild import rebuild

    report = rebuild(settings, check=args.check, only=args.tenant, force=args.force)
    print("\n".join(report.lines(args.check)))
    return 3 if args.check and report.failed else 0


@contextmanager
def _output(out: str) -> Iterator[Path]:
    """An output file's path, its directory created (reports/2026-11/usage.csv); what
    cannot be written there is an InputError naming the file."""
    try:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None


def _write(text: str, out: str | None) -> None:
    if out:
        with _output(out) as path, open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        print(f"written to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.reports import finance

    try:
        ledger = finance.read_ledger(settings, args.tenant)
        month = finance.check_month(args.month, ledger.tenants[args.tenant], datetime.now(UTC))
    except InputError as exc:
        print(f"callcharge report: {exc}", file=sys.stderr)
        return 2
    fmt = args.format or ("text" if args.kind == "statement" else "csv")
    if args.kind == "chart":
        if not args.out:
            print("callcharge report chart: --out F.png is required", file=sys.stderr)
            return 2
        with _output(args.out) as path:
            written = finance.chart(ledger, args.tenant, month, path)
        print(f"chart of {args.tenant} for {month} written to {written}")
        return 0
    if args.kind == "usage":
        _write(finance.usage_report(ledger, args.tenant, month, fmt), args.out)
    elif args.kind == "pools":
        _write(finance.pools_report(ledger, args.tenant, month, fmt), args.out)
    else:
        text, st = finance.statement_report(ledger, args.tenant, month, fmt)
        _write(text, args.out)
        if not st.adds_up:
            print("callcharge report: the statement does not add up: the ledger is incomplete", file=sys.stderr)
            return 3
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.reports import finance

    try:
        start, end = finance.parse_day(args.start, "--from"), finance.parse_day(args.end, "--to")
        if end < start:
            raise InputError("--to is before --from")
        ledger = finance.read_ledger(settings, args.tenant)
    except InputError as exc:
        print(f"callcharge export: {exc}", file=sys.stderr)
        return 2
    _write(finance.export_charges(ledger, start, end, args.format), args.out)
    return 0


def cmd_rerate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.rerate import rerate_calls
    from pipeline.reports.finance import parse_day

    try:
        since = parse_day(args.since, "--since") if args.since else None
        summary = rerate_calls(settings, Path(args.rates), args.tenant, since, args.dry_run)
    except InputError as exc:
        print(f"callcharge rerate: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines(args.dry_run)))
    return 0


def cmd_rate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.rate import rate

    out = sys.stdout
    if args.out:
        with _output(args.out) as path:
            out = open(path, "w")  # closed below, once rated
    try:
        summary = rate(
            Path(args.tenants),
            [Path(f) for f in args.cdrs],
            Path(args.rates or settings.rates_file),
            out,
            sys.stderr,
            args.tenant_id,
            settings.duration_tolerance_s,
            datetime.now(UTC) + timedelta(seconds=settings.clock_skew_s),
            parse_time(args.as_of) if args.as_of else None,
            settings.lateness,
        )
    except InputError as exc:
        print(f"callcharge rate: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.out:
            out.close()
    classes = ", ".join(f"{k} {v}" for k, v in sorted(summary.by_class.items())) or "none"
    print(
        f"rated {summary.calls} calls ({classes}); {summary.rejected} bad lines; "
        f"{summary.duplicates} duplicates; {sum(summary.events.values())} events",
        file=sys.stderr,
    )
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.control.tokens import new_token

    tenants = [canonical_id(t) for t in args.tenants.split(",") if t]
    token, entry = new_token(args.name, args.scope, tenants)
    print(f"token (shown once, give it to {args.name}): {token}")
    print("entry for the tokens file (CALLCHARGE_API_TOKENS_FILE):")
    print(json.dumps(entry))
    return 0


def cmd_examples(args: argparse.Namespace, settings: Settings) -> int:
    import shutil

    from pipeline.config import EXAMPLES_DIR

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("tenants.json", "cdrs.jsonl", "rates.example.csv")
    for name in names:
        shutil.copyfile(EXAMPLES_DIR / name, out / name)
    print(f"wrote {', '.join(names)} to {out}; try:")
    print(f"  callcharge rate --tenants {out / names[0]} --cdrs {out / names[1]} --rates {out / names[2]}")
    return 0


# -- developer tools -------------------------------------------------------------------------------
def cmd_gen(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.dev import traffic

    tenants = traffic.tenants(args.tenants, seed=args.seed)
    Path(args.tenants_out).write_text(json.dumps(tenants, indent=1))
    with open(args.cdrs_out, "w") as f:
        for c in traffic.cdrs(tenants, args.cdrs, seed=args.seed + 1):
            f.write(json.dumps(c) + "\n")
    print(f"wrote {args.tenants} tenants to {args.tenants_out} and {args.cdrs} CDRs to {args.cdrs_out}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.dev import demo

    return demo.main(args, settings)


def cmd_soak(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.dev import soak

    return soak.run(n_cdrs=args.cdrs, kills=args.kills, out=Path(args.out))


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.dev import bench

    return bench.main(args, settings)


# Help texts of the options defined without one above, by (command, destination).
OPTION_HELP = {
    ("stack", "action"): "up: start the embedded broker and Redis; down: stop them; status: are they running",
    ("topics", "action"): "create: every topic, idempotent",
    ("charge", "metrics_port"): "serve /metrics on this port (default CALLCHARGE_METRICS_PORT, 9400; 0: off)",
    ("dlq", "action"): "list (default) or redrive: send the letters of --reason back to the cdr topic",
    ("report", "kind"): "usage: the PSTN usage report; pools: the minute pools; statement: the monthly "
    "statement; chart: a PNG of the balance and pool minutes",
    ("report", "tenant"): "the tenant id (a GUID in any letter case)",
    ("export", "what"): "charges: one row per charge segment",
    ("export", "tenant"): "only this tenant (default: every tenant)",
    ("export", "format"): "csv (default) or jsonl",
    ("export", "out"): "write here instead of standard output",
    ("rerate", "tenant"): "only this tenant (default: every tenant)",
    ("rate", "tenants"): "the tenants file (JSON)",
    ("rate", "cdrs"): "CDR files: JSON lines, a JSON array, or Graph responses",
    ("token", "action"): "new: make a token",
    ("token", "scope"): "read: GET only; write: also funding, auto-recharge and removal",
    ("examples", "dir"): "where to copy them (default: ./callcharge-examples)",
    ("gen", "tenants"): "how many tenants",
    ("gen", "cdrs"): "how many CDRs",
    ("gen", "seed"): "random seed: the same seed gives the same files",
    ("gen", "tenants_out"): "tenants file to write",
    ("gen", "cdrs_out"): "CDR file (JSON lines) to write",
    ("demo", "tenants"): "how many tenants the demo generates",
    ("demo", "cdrs"): "how many CDRs the demo generates",
    ("soak", "cdrs"): "how many CDRs",
    ("soak", "kills"): "how many times a worker is killed with SIGKILL",
    ("soak", "out"): "where the result is written (JSON)",
    ("bench", "cdrs"): "CDRs per throughput run",
    ("bench", "tenants"): "tenants the CDRs are spread over",
    ("bench", "seconds"): "length of each latency run",
    ("bench", "out"): "where the result is written (JSON)",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("callcharge")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="callcharge", description="Streaming call charging for Teams Communications Credits.", allow_abbrev=False
    )
    p.add_argument("--version", action="version", version=f"callcharge {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func: object, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, allow_abbrev=False)
        c.set_defaults(func=func)
        return c

    s = command("stack", cmd_stack, "the embedded broker and Redis")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument("--fresh", action="store_true", help="up: wipe the embedded Redis (start over with no state)")
    s.add_argument(
        "--keep-redis",
        action="store_true",
        help="up: keep Redis state that no ledger backs (balances go on; rebuild --check will differ)",
    )

    t = command("topics", cmd_topics, "create every topic (idempotent)")
    t.add_argument("action", choices=["create"])

    t = command("tenants", cmd_tenants, "publish tenant configuration (load FILE) or offboard a tenant (remove TENANT)")
    t.add_argument("action", choices=["load", "remove"], help="load: publish a tenants file; remove: offboard a tenant")
    t.add_argument("target", metavar="FILE|TENANT", help="load: the tenants file; remove: the tenant id")
    t.add_argument("--command-id", help="remove: idempotency key (default: a new one)")
    t.add_argument("--requested-by", help="remove: who asked, kept on the ledger (default: the login name)")

    i = command("ingest", cmd_ingest, "produce CDRs (JSON lines or Graph getPstnCalls) to the cdr topic")
    i.add_argument("files", nargs="+", metavar="FILE", help="JSON lines, or Graph response pages of one response")
    i.add_argument("--tenant-id", type=canonical_id, help=TENANT_ID_HELP)

    c = command("charge", cmd_charge, "run the charging worker")
    c.add_argument("--metrics-port", type=int, default=None)
    c.add_argument(
        "--exit-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop once nothing has arrived for this long and the group has charged every CDR in the topic "
        "(every partition, including any a dead worker still holds); for demos, tests and draining",
    )

    command("control", cmd_control, "run the control worker (faust): recharge, funding, expiry, API")
    command("status", cmd_status, "broker and Redis reachable, CDRs waiting to be charged, dead letters, tenants")

    d = command("dlq", cmd_dlq, "dead letters by reason; re-drive them once the cause is fixed")
    d.add_argument("action", nargs="?", choices=["show", "redrive"], default="show")
    d.add_argument("--reason", help="only this reason (required for redrive)")
    d.add_argument("--newest", type=int, default=10, metavar="N", help="show the N newest letters (default 10)")
    d.add_argument("--dry-run", action="store_true", help="redrive: count, produce nothing")

    b = command("rebuild", cmd_rebuild, "restore Redis balances and call records from the ledger on Kafka")
    b.add_argument(
        "--check", action="store_true", help="compare Redis with the ledger, write nothing (exit 3 if differ)"
    )
    b.add_argument("--tenant", type=canonical_id, help="only this tenant")
    b.add_argument(
        "--force", action="store_true", help="rebuild even from a ledger that lacks tenants or calls Redis holds"
    )

    rp = command("report", cmd_report, "finance's reports from the ledger: PSTN usage, minute pools, statement")
    rp.add_argument("kind", choices=["usage", "pools", "statement", "chart"])
    rp.add_argument("--tenant", type=canonical_id, required=True)
    rp.add_argument("--month", help="YYYY-MM in the tenant's time zone (default: the current month)")
    rp.add_argument(
        "--format", choices=["csv", "json"], default=None, help="usage, pools: csv (default); statement: text"
    )
    rp.add_argument("--out", help="write to this file (default: stdout; chart: the PNG, required)")

    ex = command("export", cmd_export, "the ledger as flat rows for a spreadsheet or a warehouse (one per segment)")
    ex.add_argument("what", choices=["charges"])
    ex.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD", help="first call start date (UTC)")
    ex.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD", help="last call start date (UTC)")
    ex.add_argument("--tenant", type=canonical_id)
    ex.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    ex.add_argument("--out")

    rr = command("rerate", cmd_rerate, "price the FREECALL calls a new rate card has a tariff for; each charged once")
    rr.add_argument("--rates", required=True, help="the new rate card CSV")
    rr.add_argument("--tenant", type=canonical_id)
    rr.add_argument("--since", metavar="YYYY-MM-DD", help="only calls started on or after this date (UTC)")
    rr.add_argument("--dry-run", action="store_true", help="print what would be charged per tenant, change nothing")

    r = command("rate", cmd_rate, "offline rating through the pure core")
    r.add_argument("--tenants", required=True)
    r.add_argument("--cdrs", required=True, nargs="+", metavar="FILE")
    r.add_argument("--tenant-id", type=canonical_id, help=TENANT_ID_HELP)
    r.add_argument(
        "--as-of",
        metavar="TIME",
        help="ISO 8601 UTC: also apply the lots bought by then and forfeit what has expired by then "
        "(past the allowed lateness), as the control timer would",
    )
    r.add_argument("--rates", help="rate card CSV (default: the example card)")
    r.add_argument("--out", help="output JSONL (default: stdout)")

    k = command("token", cmd_token, "make an API token scoped to tenants; prints it once and its tokens-file entry")
    k.add_argument("action", choices=["new"])
    k.add_argument("--name", required=True, help="who holds it (logged with every funding it makes)")
    k.add_argument("--scope", choices=["read", "write"], default="read")
    k.add_argument("--tenants", required=True, help="comma-separated tenant ids, or * for every tenant")

    e = command("examples", cmd_examples, "copy the shipped example tenants, CDRs and rate card to DIR")
    e.add_argument("dir", nargs="?", default="callcharge-examples")

    g = command("gen", cmd_gen, "generate example tenants and CDRs")
    g.add_argument("--tenants", type=int, default=20)
    g.add_argument("--cdrs", type=int, default=2000)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--tenants-out", default="tenants.json")
    g.add_argument("--cdrs-out", default="cdrs.jsonl")

    d = command("demo", cmd_demo, "run the whole pipeline on the embedded stack and print a summary")
    d.add_argument("--tenants", type=int, default=8)
    d.add_argument("--cdrs", type=int, default=3000)
    d.add_argument("--keep", action="store_true", help="leave the stack running afterwards")

    so = command("soak", cmd_soak, "long adversarial run: kills, a Redis restart, hostile input; exact or exit 1")
    so.add_argument("--cdrs", type=int, default=200_000)
    so.add_argument("--kills", type=int, default=20)
    so.add_argument("--out", default="bench/soak.json")

    b = command("bench", cmd_bench, "raw passthrough vs charging worker, latency percentiles")
    b.add_argument("--cdrs", type=int, default=100000)
    b.add_argument("--tenants", type=int, default=200)
    b.add_argument("--rate", type=int, default=1000, help="offered load for the latency run, CDR/s")
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument(
        "--load-linger-ms",
        type=int,
        help="linger.ms of the latency runs' load producer (inside the measured latency; "
        "default pipeline.dev.bench.LOAD_LINGER_MS)",
    )
    b.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="also measure both sides with this many processes (default: one per core)",
    )
    b.add_argument("--rounds", type=int, default=3, help="rounds of every run; the medians are reported")
    b.add_argument("--profile", action="store_true", help="print a cProfile of one single-process charging run")
    b.add_argument("--out", default="bench/results.json")
    for name, parser in sub.choices.items():  # every option says what it is for (`--help`)
        for action in parser._actions:
            if not action.help and not isinstance(action, argparse._HelpAction):
                action.help = OPTION_HELP.get((name, action.dest), "")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnknownSetting)
            settings = Settings.from_env()
    except ValueError as exc:
        print(f"callcharge: configuration: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)

    def say(text: str, warning: bool = False) -> None:
        """A line for the operator: on stderr as is, or as a JSON log line under LOG_FORMAT=json."""
        if settings.log_format == "json":
            log.log(logging.WARNING if warning else logging.ERROR, "%s", text)
        else:
            print(f"callcharge: warning: {text}" if warning else text, file=sys.stderr)

    for w in caught:
        say(str(w.message), warning=True)
    try:
        if args.command in NEEDS_BROKER:
            _broker_answers(settings)
        progress.enabled = args.command in SHOWS_PROGRESS
        return int(args.func(args, settings))
    except FatalError as exc:
        say(f"callcharge: {exc}")
        return EXIT_CANNOT
    except InputError as exc:  # what a command did not catch itself, e.g. an output it cannot write
        say(f"callcharge {args.command}: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except KafkaException as exc:  # the broker down or refusing: one line, not a traceback
        say(f"callcharge {args.command}: Kafka at {settings.bootstrap} cannot be used: {exc}")
        return EXIT_CANNOT
    except redis.RedisError as exc:  # Redis down or refusing: one line, not a traceback
        shown = settings.masked().get("redis_url") or settings.redis
        say(f"callcharge {args.command}: Redis at {shown} cannot be used: {exc}")
        return EXIT_CANNOT


if __name__ == "__main__":
    sys.exit(main())
