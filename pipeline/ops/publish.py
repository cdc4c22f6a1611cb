"""Putting data on the topics: tenant configuration and CDR files."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import cdr_to_avro, tenant_record, user_key, user_record
from pipeline.adapters.files import read_cdr_lines
from pipeline.adapters.kafka import producer
from pipeline.adapters.progress import Progress
from pipeline.config import Settings
from pipeline.errors import FatalError
from processors.inputs import (
    DeadLetterReason,
    Rejected,
    TenantError,
    cdr_from_dict,
    first_repeated,
    folded_twin,
    tenant_from_dict,
)


def publish_tenants(settings: Settings, entries: list[dict[str, Any]]) -> PublishSummary:
    """Publish a tenants file: one tenant_config record per tenant (its users left out) and
    one tenant_user record per user, so a tenant of any size fits Kafka's default message
    size. Only what changed is published, against what the topic holds: a user whose
    licence changed is one record, a user no longer listed a tombstone. A tenant's users go
    first, its own record after them (a worker that sees a new tenant reads on to the end)."""
    codec = Codec(settings.schemas_dir)
    now = datetime.now(UTC)
    tenants = []
    for entry in entries:
        try:
            tenants.append(tenant_from_dict(entry))
        except (TenantError, KeyError, TypeError) as exc:
            raise FatalError(f"tenants file: {exc}") from None
    ids = [t.tenant_id for t in tenants]  # canonical: a GUID in lower case
    twice = first_repeated(ids)
    if twice is not None:
        raise FatalError(f"tenants file: tenant {twice} is listed twice (tenant ids compare case-insensitively)")
    twins = folded_twin(ids)
    if twins is not None:
        raise FatalError(f"tenants file: tenants {twins[0]!r} and {twins[1]!r} differ only by letter case")
    from pipeline.adapters.directory import TenantDirectory

    current = TenantDirectory(settings, codec, None)
    try:
        current.catch_up()
        summary = PublishSummary(tenants=len(tenants))
        users_out: list[tuple[bytes, bytes | None]] = []
        tenants_out: list[tuple[bytes, bytes]] = []
        for t in tenants:
            tid = t.tenant_id
            before = current.records.get(tid)
            book = current.get(tid)
            had = book.tenant.users if book is not None else {}
            inline = bool(before and before["users"])  # written before per-user records: all move out
            for uid, user in t.users.items():
                if inline or had.get(uid) != user:
                    users_out.append((user_key(tid, uid), codec.encode("tenant_user", user_record(tid, user, now))))
            for uid in had:
                if uid not in t.users:
                    users_out.append((user_key(tid, uid), None))
            record = tenant_record(t, now, inline_users=False)
            if before is None or inline or _differs(before, record):
                tenants_out.append((tid.encode(), codec.encode("tenant_config", record)))
        summary.records = len(users_out) + len(tenants_out)
        summary.users_changed = len(users_out)
        summary.tenants_changed = len(tenants_out)
        _produce_all(settings, settings.topic.tenant_config, users_out)  # users first
        _produce_all(settings, settings.topic.tenant_config, list(tenants_out))
        return summary
    finally:
        current.close()


@dataclass
class PublishSummary:
    tenants: int = 0
    records: int = 0
    users_changed: int = 0
    tenants_changed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.tenants} tenants: {self.records} records published "
            f"({self.tenants_changed} tenant records, {self.users_changed} user records; the rest unchanged)"
        )


def _differs(before: dict[str, Any], after: dict[str, Any]) -> bool:
    skip = ("updated_at", "users")
    return {k: v for k, v in before.items() if k not in skip} != {k: v for k, v in after.items() if k not in skip}


def _produce_all(settings: Settings, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    """Produce keyed records and wait until the broker has every one of them."""
    if not records:
        return
    errors: list[str] = []
    acked = 0
    bar = Progress("tenants: acknowledged", len(records))

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal acked
        if err is not None:
            errors.append(str(err))
        else:
            acked += 1

    p = producer(settings)
    for n, (key, value) in enumerate(records, start=1):
        _produce(p, topic, key, value, on_delivery)
        if n % 1000 == 0:
            p.poll(0)
            bar.update(acked, f"({n} sent)")
    deadline = time.monotonic() + 120
    while len(p) and time.monotonic() < deadline:
        p.poll(0.1)
        bar.update(acked, f"({len(records)} sent)")
    bar.finish(acked)
    if p.flush(max(0.0, deadline - time.monotonic())) or errors:
        raise FatalError(f"{topic}: records not acknowledged by the broker: {errors[:3] or 'timed out after 120 s'}")


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
    _produce_all(settings, settings.topic.commands, [(tenant_id.encode(), codec.encode("funding_command", record))])
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
    sent = bad = acked = 0
    errors: list[str] = []
    bar = Progress("ingest: acknowledged", len(rows))

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal acked
        if err is not None:
            errors.append(str(err))
        else:
            acked += 1

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
                bar.update(acked, f"({sent} sent, {bad} rejected)")
        deadline = time.monotonic() + 60
        while len(p) and time.monotonic() < deadline:
            p.poll(0.1)
            bar.update(acked, f"({sent} sent, {bad} rejected)")
    finally:
        left = p.flush(60)  # whatever happened above, what was queued reaches the broker
        bar.finish(acked, f"({sent} sent, {bad} rejected)")
    if left or errors:
        raise FatalError(f"{len(errors) or left} CDRs not acknowledged by the broker: {errors[:3]}")
    return sent, bad


def _produce(p: Producer, topic: str, key: bytes, value: bytes | None, on_delivery: Any) -> None:
    while True:
        try:
            p.produce(topic, key=key, value=value, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: let deliveries drain, then go on
            p.poll(0.5)
