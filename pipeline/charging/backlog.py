"""How many CDRs a consumer group has yet to charge, per partition, across the whole topic.

Not a worker's own lag: a killed worker stays in the group until its session times out and
may still hold partitions nobody reads. So the group's committed offset of every partition
is read (OffsetFetch, no join), and a probe consumer (assigned, never committing) fetches
from there: each partition either reports its end or hands over a message, and either way
the fetch response carries the partition's true end. The embedded broker's ListOffsets
answer is stale after batched writes, so it is not asked.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.adapters.kafka import consumer
from pipeline.config import Settings


class Probe:
    """A reusable probe for one topic and group (the group is only read, never joined)."""

    def __init__(self, settings: Settings, topic: str, group: Consumer, name: str):
        self.topic = topic
        self.group = group
        self.consumer = consumer(settings, f"{name}-probe", **{"enable.partition.eof": True})

    def waiting(self, timeout_s: float = 10.0) -> dict[int, int] | None:
        """{partition: CDRs after the group's committed offset}; None when the broker did
        not answer in time (nothing can be said then)."""
        try:
            meta = self.group.list_topics(self.topic, timeout=timeout_s).topics[self.topic]
            parts = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)]
            committed = {tp.partition: tp.offset for tp in self.group.committed(parts, timeout_s)}
        except KafkaException:
            return None
        start = [TopicPartition(self.topic, p, o if o >= 0 else OFFSET_BEGINNING) for p, o in committed.items()]
        self.consumer.assign(start)
        try:
            pending: set[int] = set()  # a CDR arrived from here: there is work
            ended: set[int] = set()  # reached the end first: nothing to charge
            deadline = time.monotonic() + timeout_s
            while len(pending | ended) < len(start) and time.monotonic() < deadline:
                for m in self.consumer.consume(100, 0.2):
                    err = m.error()
                    if err is None:
                        pending.add(m.partition() or 0)
                    elif err.code() == KafkaError._PARTITION_EOF:
                        ended.add(m.partition() or 0)
            if len(pending | ended) < len(start):
                return None
            out = {}
            for p, offset in committed.items():
                if p not in pending:
                    out[p] = 0  # (a transaction marker after the last CDR is not work)
                    continue
                low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True) or (0, 0)
                out[p] = max(1, high - max(offset, low))
            return out
        finally:
            self.consumer.unassign()

    def close(self) -> None:
        self.consumer.close()
