"""Read a topic to its end through a read_committed consumer (demo, tests, rebuild)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from pipeline.adapters import progress
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.kafka import consumer
from pipeline.adapters.progress import Progress
from pipeline.config import Settings


def read_all(
    settings: Settings,
    topic: str,
    codec: Codec | None = None,
    timeout: float = 30.0,
    min_count: int = 0,
    stamps: list[datetime] | None = None,
) -> list[tuple[bytes | None, Any]]:
    """Every committed record of `topic` as (key, decoded record or raw bytes); with
    `stamps`, each record's timestamp (when it was written) is appended there in step.

    Reads until each partition's last fetch said it is at its end and its position is past
    the high watermark (and at least `min_count` records arrived, for topics still being
    written), or `timeout` passes. The fetch's end is trusted over ListOffsets, which the
    embedded broker may answer stale after batched writes.
    """
    c = consumer(settings, f"callcharge-read-{uuid.uuid4().hex}", **{"enable.partition.eof": True})
    at_end: set[int] = set()
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        c.assign(parts)
        out: list[tuple[bytes | None, Any]] = []
        bar = Progress(f"reading {topic}", _ends(c, parts) if progress.enabled else 0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition() or 0)
                    continue
                at_end.discard(m.partition())
                value = m.value() or b""
                out.append((m.key(), codec.decode(value)[1] if codec else value))
                if stamps is not None:
                    stamps.append(datetime.fromtimestamp(m.timestamp()[1] / 1000, UTC))
            bar.update(len(out))
            if len(out) < min_count or not at_end.issuperset(tp.partition for tp in parts):
                continue
            highs = {tp.partition: c.get_watermark_offsets(tp, timeout=5)[1] for tp in parts}
            pos = c.position([TopicPartition(topic, p) for p in highs])
            if all(highs[tp.partition] <= 0 or tp.offset >= highs[tp.partition] for tp in pos):
                break
        bar.finish(len(out))
        return out
    finally:
        c.close()


def _ends(c: Any, parts: list[TopicPartition]) -> int:
    """How many records the partitions hold (the bar's total: an estimate, aborted
    transactions' records and markers included)."""
    total = 0
    for tp in parts:
        low, high = c.get_watermark_offsets(tp, timeout=5)
        total += max(0, high - low)
    return total
