"""The tenant directory: follows the compacted tenant-config topic, materializes each
tenant's configuration into Redis and keeps the prepared books in memory."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import tenant_from_avro, user_from_avro
from pipeline.adapters.kafka import consumer
from pipeline.adapters.store import Store
from pipeline.config import Settings
from pipeline.errors import PoisonError
from processors.charging import Book, prepare
from processors.inputs import TenantError, check_tenant_id
from processors.model import Tenant, User

log = logging.getLogger(__name__)


class TenantDirectory:
    """Every tenant's configuration, from two kinds of record on the compacted topic: the
    tenant's own (`tenant_config`, key = tenant id; its `users` inline, as written before
    per-user records, or empty) and one per user (`tenant_user`, key `T/USER`, a null value
    removes the user). A tenant's book is prepared again once per `poll` that changed it,
    never per record: loading 300 000 users is one preparation, not 300 000."""

    def __init__(self, settings: Settings, codec: Codec, store: Store | None):
        self.settings = settings
        self.codec = codec
        self.store = store
        self.books: dict[str, Book] = {}
        self.records: dict[str, dict[str, Any]] = {}  # tenant id -> its latest tenant_config record
        self._users: dict[str, dict[str, User]] = defaultdict(dict)  # from tenant_user records
        self._changed: set[str] = set()
        self.topic = settings.topic.tenant_config
        # A partition is at its end when its last fetch said so (a partition-EOF event with no
        # record after it): the fetch response carries the true end, which the embedded
        # broker's ListOffsets answer may not after batched writes.
        self._consumer = consumer(
            settings, f"callcharge-directory-{uuid.uuid4().hex}", **{"enable.partition.eof": True}
        )
        self._at_end: set[int] = set()
        # One reader at a time: the control worker polls from its timer, catches up at start
        # and for an unknown tenant's event, each on an executor thread. Two readers of one
        # consumer split its records and EOFs, and one's prepare cleared the other's changed
        # tenants: their books were never built (seen in bench-scale: 1 003 of 10 000).
        self._reading = threading.Lock()
        meta = self._consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self._partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self._consumer.assign(self._partitions)

    def get(self, tenant_id: str) -> Book | None:
        return self.books.get(tenant_id)

    def poll(self, timeout: float = 0.0, budget_s: float = 1.0) -> int:
        """Apply whatever config records are waiting (reading on while full pages come,
        for up to `budget_s`), then prepare the changed tenants; returns how many records.
        A tenant seen for the first time is read to the end first: its users were written
        before it (`publish_tenants`), so its first book is whole. While another thread
        reads (a catch-up), this returns 0 at once: it would only wait for that reader."""
        if not self._reading.acquire(blocking=False):
            return 0
        try:
            return self._poll(timeout, budget_s)
        finally:
            self._reading.release()

    def _poll(self, timeout: float, budget_s: float) -> int:
        deadline = time.monotonic() + budget_s
        n, new = self._consume(timeout)
        total = n
        while n >= PAGE and time.monotonic() < deadline:
            n, more = self._consume(0)
            total += n
            new = new or more
        if new:
            self._read_to_end(timeout=30)
        self._prepare_changed()
        return total

    def _consume(self, timeout: float) -> tuple[int, bool]:
        n = 0
        new_tenant = False
        for msg in self._consumer.consume(PAGE, timeout):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition() or 0)
                continue
            self._at_end.discard(msg.partition())
            n += 1
            value = msg.value()
            if value is None:  # a tombstone: a user removed (a tenant is removed by removed_at)
                tid, sep, uid = (msg.key() or b"").decode("utf-8", "replace").partition("/")
                if sep and uid in self._users.get(tid, {}):
                    del self._users[tid][uid]
                    self._changed.add(tid)
                continue
            try:
                kind, record = self.codec.decode(value)
            except PoisonError as exc:
                log.error("bad tenant config at %s/%d: %s", msg.partition(), msg.offset(), exc)
                continue
            try:
                tid = check_tenant_id(record.get("tenant_id"))
                if kind == "tenant_user":
                    user = user_from_avro(tid, record)
                    self._users[tid][user.user_id] = user
                elif kind == "tenant_config":
                    new_tenant = new_tenant or tid not in self.records
                    self.records[tid] = record
                    if self.store is not None:
                        self.store.save_config(tid, json.dumps(record, default=str), msg.offset() or 0)
                else:
                    log.error("a %s record on %s at %s/%d: ignored", kind, self.topic, msg.partition(), msg.offset())
                    continue
            except TenantError as exc:  # its CDRs stay unknown_tenant; nobody else stops
                log.error("tenant config refused at %s/%d: %s", msg.partition(), msg.offset(), exc)
                continue
            self._changed.add(tid)
        return n, new_tenant

    def _prepare_changed(self) -> None:
        for tid in sorted(self._changed):
            record = self.records.get(tid)
            if record is None:  # users whose tenant record is not read yet
                continue
            try:
                tenant = tenant_from_avro(record, self._users.get(tid))
            except TenantError as exc:  # the last good book stays
                log.error("tenant config of %s refused: %s", tid, exc)
                continue
            self.books[tid] = prepare(tenant, self.settings.lateness)
        self._changed.clear()

    def _targets(self) -> dict[int, int]:
        targets = {}
        for tp in self._partitions:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
            targets[tp.partition] = high
        return targets

    def _at(self, targets: dict[int, int]) -> bool:
        if not self._at_end.issuperset(targets):
            return False
        positions = self._consumer.position([TopicPartition(self.topic, p) for p in targets])
        return all(tp.offset >= targets[tp.partition] or targets[tp.partition] <= 0 for tp in positions)

    def _read_to_end(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        targets = self._targets()
        while time.monotonic() < deadline:
            self._consume(0.1)
            if self._at(targets):
                return True
        return False

    def catch_up(self, timeout: float = 600.0) -> None:
        """Read until every partition is at its high watermark (a worker starting reads the
        whole configuration before it charges: a million users take about 20 s)."""
        with self._reading:
            done = self._read_to_end(timeout)
            self._prepare_changed()
        if not done:
            log.warning("tenant config not fully read after %.0fs", timeout)

    def close(self) -> None:
        self._consumer.close()


PAGE = 500  # records per consume call


def configured_tenants(settings: Settings, codec: Codec, only: str | None = None) -> dict[str, Tenant]:
    """Every tenant configured on the tenant-config topic (or just `only`), read to its end."""
    directory = TenantDirectory(settings, codec, None)
    try:
        directory.catch_up()
        return {tid: book.tenant for tid, book in directory.books.items() if only in (None, tid)}
    finally:
        directory.close()
