"""The `callcharge` command: wires settings, clients and workers together."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import Settings
from .errors import FatalError

log = logging.getLogger("callcharge")


def _print_report(title: str, report: dict[str, str]) -> None:
    print(title)
    for name, line in report.items():
        print(f"  {name:<18} {line}")


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from . import stack

    if args.action == "up":
        _print_report("embedded stack:", stack.up(settings))
        print(f"  kafka  {settings.bootstrap}\n  redis  {settings.redis}")
    elif args.action == "down":
        _print_report("embedded stack:", stack.down(settings))
    else:
        report = stack.status(settings)
        _print_report("embedded stack:", report)
        return 0 if all(v.startswith("running") for v in report.values()) else 3
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from .kafka import create_topics

    _print_report(f"topics on {settings.bootstrap}:", create_topics(settings))
    return 0


def cmd_rate(args: argparse.Namespace, settings: Settings) -> int:
    from .offline import InputError, rate

    out = open(args.out, "w") if args.out else sys.stdout
    try:
        summary = rate(Path(args.tenants), Path(args.cdrs), Path(args.rates or settings.rates_file), out, sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="callcharge", description="Streaming call charging for Teams Communications Credits."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stack", help="the embedded broker and Redis")
    s.add_argument("action", choices=["up", "down", "status"])
    s.set_defaults(func=cmd_stack)

    t = sub.add_parser("topics", help="create every topic (idempotent)")
    t.add_argument("action", choices=["create"])
    t.set_defaults(func=cmd_topics)

    r = sub.add_parser("rate", help="offline rating through the pure core")
    r.add_argument("--tenants", required=True)
    r.add_argument("--cdrs", required=True)
    r.add_argument("--rates", help="rate card CSV (default: the example card)")
    r.add_argument("--out", help="output JSONL (default: stdout)")
    r.set_defaults(func=cmd_rate)

    from . import commands

    commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"callcharge: configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args, settings))
    except FatalError as exc:
        print(f"callcharge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
