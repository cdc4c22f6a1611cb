"""Putting data on the topics: tenant configuration and CDR files."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.adapters.codec import Codec
from pipeline.adapters.files import read_cdr_lines
from pipeline.adapters.kafka import producer
from pipeline.adapters.records import cdr_to_avro, tenant_to_avro
from pipeline.config import Settings
from pipeline.errors import FatalError
from processors.inputs import Rejected, TenantError, cdr_from_dict


def _progress(done: int, total: int, label: str) -> None:
    if not sys.stderr.isatty() and done != total:
        return
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def publish_tenants(settings: Settings, entries: list[dict[str, Any]]) -> int:
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
