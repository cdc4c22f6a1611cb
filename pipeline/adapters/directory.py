"""The tenant directory: follows the compacted tenant-config topic, materializes each
tenant's configuration into Redis and keeps the prepared books in memory."""

from __future__ import annotations

import json
import logging
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from pipeline.adapters.codec import Codec
from pipeline.adapters.kafka import consumer
from pipeline.adapters.records import tenant_from_avro
from pipeline.adapters.store import Store
from pipeline.config import Settings
from pipeline.errors import PoisonError
from processors.charging import Book, prepare
from processors.inputs import TenantError
from processors.model import Tenant

log = logging.getLogger(__name__)


class TenantDirectory:
    def __init__(self, settings: Settings, codec: Codec, store: Store | None):
        self.settings = settings
        self.codec = codec
        self.store = store
        self.books: dict[str, Book] = {}
        self.topic = settings.topic.tenant_config
        self._consumer = consumer(settings, f"callcharge-directory-{uuid.uuid4().hex}")
        meta = self._consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self._partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self._consumer.assign(self._partitions)

    def get(self, tenant_id: str) -> Book | None:
        return self.books.get(tenant_id)

    def poll(self, timeout: float = 0.0) -> int:
        """Apply whatever config records are waiting; returns how many."""
        n = 0
        for msg in self._consumer.consume(500, timeout):
            if msg.error():
                continue
            n += 1
            try:
                _, record = self.codec.decode(msg.value() or b"", expect="tenant_config")
            except PoisonError as exc:
                log.error("bad tenant config at %s/%d: %s", msg.partition(), msg.offset(), exc)
                continue
            try:
                tenant = tenant_from_avro(record)
            except TenantError as exc:  # its CDRs stay unknown_tenant; nobody else stops
                log.error("tenant config refused at %s/%d: %s", msg.partition(), msg.offset(), exc)
                continue
            self.books[tenant.tenant_id] = prepare(tenant, self.settings.lateness)
            if self.store is not None:
                self.store.save_config(tenant.tenant_id, json.dumps(record, default=str), msg.offset() or 0)
        return n

    def catch_up(self, timeout: float = 10.0) -> None:
        """Read until every partition is at its high watermark."""
        deadline = time.monotonic() + timeout
        targets = {}
        for tp in self._partitions:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
            targets[tp.partition] = high
        while time.monotonic() < deadline:
            self.poll(0.1)
            positions = self._consumer.position([TopicPartition(self.topic, p) for p in targets])
            if all(tp.offset >= targets[tp.partition] or targets[tp.partition] <= 0 for tp in positions):
                return
        log.warning("tenant config not fully read after %.0fs", timeout)

    def close(self) -> None:
        self._consumer.close()


def configured_tenants(settings: Settings, codec: Codec, only: str | None = None) -> dict[str, Tenant]:
    """Every tenant configured on the tenant-config topic (or just `only`), read to its end."""
    directory = TenantDirectory(settings, codec, None)
    try:
        directory.catch_up(timeout=30)
        return {tid: book.tenant for tid, book in directory.books.items() if only in (None, tid)}
    finally:
        directory.close()
