"""How many CDRs a consumer group has yet to charge, per partition, across the whole topic.

Not a worker's own lag: a killed worker stays in the group until its session times out and
may still hold partitions nobody reads. So the group's committed offset of every partition
is read (OffsetFetch, no join), and a probe consumer (assigned, never committing) fetches
from there: each partition either reports its end or hands over a message, and either way
the fetch response carries the partition's true end. The embedded broker's ListOffsets
answer is stale after batched writes, so it is not asked.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import Gauge

from pipeline.adapters.kafka import consumer
from pipeline.config import Settings

log = logging.getLogger(__name__)


class Probe:
    """A reusable probe for one topic and group (the group is only read, never joined)."""

    def __init__(self, settings: Settings, topic: str, group: Consumer, name: str):
        self.topic = topic
        self.group = group
        self.consumer = consumer(settings, f"{name}-probe", **{"enable.partition.eof": True})
        self.committed: dict[int, int] = {}  # the group's offsets at the last `waiting`

    def waiting(self, timeout_s: float = 10.0) -> dict[int, int] | None:
        """{partition: CDRs after the group's committed offset}; None when the broker did
        not answer in time (nothing can be said then)."""
        try:
            meta = self.group.list_topics(self.topic, timeout=timeout_s).topics[self.topic]
            parts = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)]
            committed = {tp.partition: tp.offset for tp in self.group.committed(parts, timeout_s)}
        except KafkaException:
            return None
        self.committed = committed
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


class BacklogWatch:
    """What the group has not charged yet, watched from inside every worker, in a thread of
    its own (the probe's fetches never hold up a batch): every `every_s` the end of each
    partition of the whole topic against the group's committed offset, whichever worker
    holds it (or none). Published as `callcharge_consumer_lag{partition}`; and how long
    CDRs have waited while no committed offset moved, as
    `callcharge_charging_stalled_seconds` (0 while charging moves or nothing waits)."""

    def __init__(self, settings: Settings, topic: str, lag: Gauge, stalled: Gauge, every_s: float = 15.0):
        self._group = consumer(settings, settings.group_id)  # reads the group's offsets, never joins
        self._probe = Probe(settings, topic, self._group, f"callcharge-watch-{uuid.uuid4().hex[:8]}")
        self._lag, self._stalled = lag, stalled
        self._every = every_s
        self._stop = threading.Event()
        self._last: dict[int, int] = {}
        self._since: float | None = None  # CDRs waiting and no offset moving since then
        self.waiting: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name="backlog-watch", daemon=True)
        self._thread.start()

    def stalled_for(self) -> float:
        """Seconds CDRs have waited with no committed offset of the group moving."""
        since = self._since
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a watch that fails must not stop charging; it says so
                log.exception("backlog watch failed; tries again in %.0fs", self._every)
            self._stop.wait(self._every)

    def tick(self) -> None:
        waiting = self._probe.waiting(timeout_s=min(10.0, self._every))
        if waiting is None:
            return
        self.waiting = waiting
        for partition, n in waiting.items():
            self._lag.labels(str(partition)).set(n)
        committed = dict(self._probe.committed)
        if not any(waiting.values()) or committed != self._last:
            self._since = None if not any(waiting.values()) else time.monotonic()
        elif self._since is None:
            self._since = time.monotonic()
        self._last = committed
        self._stalled.set(round(self.stalled_for(), 1))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self._probe.close()
        self._group.close()
