"""Putting data on the topics: tenant configuration and CDR files."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from pipeline.adapters.codec import Codec
from pipeline.adapters.files import read_cdr_lines
from pipeline.adapters.kafka import producer
from pipeline.adapters.records import cdr_to_avro, tenant_to_avro
from pipeline.config import Settings
from pipeline.errors import FatalError
from processors.inputs import DeadLetterReason, Rejected, TenantError, cdr_from_dict, first_repeated, folded_twin


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
            record = tenant_to_avro(entry, now)
        except (TenantError, KeyError, TypeError) as exc:
            raise FatalError(f"tenants file: {exc}") from None
        records.append((record["tenant_id"], codec.encode("tenant_config", record)))
    ids = [tid for tid, _ in records]  # canonical: a GUID in lower case
    twice = first_repeated(ids)
    if twice is not None:
        raise FatalError(f"tenants file: tenant {twice} is listed twice (tenant ids compare case-insensitively)")
    twins = folded_twin(ids)
    if twins is not None:
        raise FatalError(f"tenants file: tenants {twins[0]!r} and {twins[1]!r} differ only by letter case")
    p = producer(settings)
    for tid, value in records:
        p.produce(settings.topic.tenant_config, key=tid.encode(), value=value)
    if p.flush(30):
        raise FatalError("tenant config not delivered to the broker within 30 s")
    return len(records)


def remove_tenant(settings: Settings, tenant_id: str, command_id: str, requested_by: str) -> str:
    """Ask the control worker to offboard a tenant (a `remove` command on the commands
    topic, acknowledged by the broker); returns what was sent, in words."""
    from pipeline.adapters.directory import configured_tenants
    from processors.model import Tenant

    codec = Codec(settings.schemas_dir)
    tenants: dict[str, Tenant] = configured_tenants(settings, codec, only=tenant_id)
    tenant = tenants.get(tenant_id)
    if tenant is None:
        raise FatalError(f"unknown tenant {tenant_id!r}: nothing on {settings.topic.tenant_config} names it")
    if tenant.removed_at is not None:
        return f"tenant {tenant_id} was already removed at {tenant.removed_at.isoformat()}"
    record = {
        "command_id": command_id,
        "tenant_id": tenant_id,
        "kind": "remove",
        "amount": 0,
        "currency": tenant.currency,
        "requested_by": requested_by,
        "at": datetime.now(UTC),
    }
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    p = producer(settings)
    p.produce(
        settings.topic.commands,
        key=tenant_id.encode(),
        value=codec.encode("funding_command", record),
        on_delivery=on_delivery,
    )
    if p.flush(30) or errors:
        raise FatalError(
            f"removal of {tenant_id} not acknowledged by the broker: {errors[:1] or 'timed out after 30 s'}"
        )
    return (
        f"removal of tenant {tenant_id} sent (command {command_id}): the control worker stops its charging "
        f"and puts the removal with the closing balance on {settings.topic.balance_events}"
    )


def ingest(settings: Settings, paths: Path | Sequence[Path], tenant_id: str | None = None) -> tuple[int, int]:
    """Produce CDRs (JSON lines, Graph responses, page files of one response) to the cdr
    topic, keyed by tenant. Never stops on a row: a row that cannot become a CDR (bytes,
    escapes, size, JSON, fields) or that the broker refuses is reported on stderr with where
    it is and why, and the rest go through; the producer is always flushed.

    `tenant_id` is the tenant of rows that name none (a raw Graph response). Returns (sent, bad).
    """
    codec = Codec(settings.schemas_dir)
    rows = list(read_cdr_lines(paths, tenant_id))
    p = producer(settings)
    sent = bad = 0
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    def refuse(where: str, why: object) -> None:
        nonlocal bad
        bad += 1
        print(f"{where}: {why}", file=sys.stderr)

    try:
        for n, (where, obj) in enumerate(rows, start=1):
            cdr = obj if isinstance(obj, Rejected) else cdr_from_dict(obj, settings.duration_tolerance_s)
            if isinstance(cdr, Rejected):
                refuse(where, cdr)
                continue
            try:
                value = codec.encode("cdr", cdr_to_avro(cdr))
                _produce(p, settings.topic.cdr, cdr.tenant_id.encode(), value, on_delivery)
            except (ValueError, TypeError, KafkaException) as exc:
                refuse(where, f"{DeadLetterReason.INVALID_FIELD}: cannot be sent: {exc}")
                continue
            sent += 1
            if n % 1000 == 0:
                p.poll(0)
                _progress(n, len(rows), "ingest")
        _progress(len(rows), len(rows), "ingest")
    finally:
        left = p.flush(60)  # whatever happened above, what was queued reaches the broker
    if left or errors:
        raise FatalError(f"{len(errors) or left} CDRs not acknowledged by the broker: {errors[:3]}")
    return sent, bad


def _produce(p: Producer, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
    while True:
        try:
            p.produce(topic, key=key, value=value, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: let deliveries drain, then go on
            p.poll(0.5)
