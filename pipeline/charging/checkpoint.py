"""Steps 6 to 8 of a batch: the Kafka transaction that makes it visible, and what follows
a commit (outputs kept in Redis for a redelivery dropped, metrics counted).

Like Quix Streams' `Checkpoint`, the commit is a unit of its own, handed its clients: the
charges, balance events and dead letters of every Item are produced in one transaction
with the batch's next offsets, so a batch is on the topics and consumed, or neither."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import dead_letter
from pipeline.adapters.metrics import ChargingMetrics
from pipeline.adapters.store import CHARGES, DLQ, EVENTS
from pipeline.charging.apply import StateStore
from pipeline.charging.intake import Item
from pipeline.charging.runtime import Faults
from pipeline.config import Settings
from pipeline.errors import FatalError
from processors.model import BILLABLE, OVERAGE

log = logging.getLogger(__name__)

MONEY_BUCKETS = frozenset({BILLABLE, OVERAGE})


class Checkpoint:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        store: StateStore,
        metrics: ChargingMetrics,
        producer: Producer,
        consumer: Consumer,
        faults: Faults,
    ) -> None:
        self.codec = codec
        self.store = store
        self.metrics = metrics
        self.producer = producer  # transactional, transactions initialised (after the lease)
        self.consumer = consumer
        self.faults = faults
        topics = settings.topic
        self.dlq_topic = topics.dlq
        self._topic_names = {CHARGES: topics.charges, EVENTS: topics.balance_events, DLQ: topics.dlq}
        self.latency_samples: list[float] | None = None  # the benchmark collects raw samples here

    def commit(self, items: list[Item], batch: int) -> bool:
        """Steps 6-8. False: the transaction failed and was aborted (the caller rewinds)."""
        p = self.producer
        try:
            p.begin_transaction()
            self._produce(items)
            self.faults.after(6, batch)
            p.send_offsets_to_transaction(next_offsets(items), self.consumer.consumer_group_metadata(), 30)
            self.faults.after(7, batch)
            t0 = time.perf_counter()
            p.commit_transaction(60)
            self.metrics.commit_seconds.observe(time.perf_counter() - t0)
        except KafkaException as exc:
            self._abort(exc)
            return False
        self.faults.after(8, batch)
        self._committed(items)
        return True

    def _produce(self, items: list[Item]) -> None:
        p = self.producer
        now = datetime.now(UTC)
        n = 0
        for item in items:
            key = item.cdr.tenant_id.encode() if item.cdr else item.key
            if item.reject is not None:
                self.metrics.dead_letters.labels(item.reject.reason).inc()
                dl = dead_letter(
                    item.topic,
                    item.partition,
                    item.offset,
                    item.key,
                    item.value,
                    item.reject.reason,
                    item.reject.detail,
                    now,
                )
                p.produce(self.dlq_topic, key=key, value=self.codec.encode("dead_letter", dl))
                continue
            for code, value in item.records:
                p.produce(self._topic_names[code], value, key)
            n += 1
            if n % 500 == 0:
                p.poll(0)  # serve delivery reports now and then, not per record

    def _abort(self, exc: KafkaException) -> None:
        err = exc.args[0]
        self.metrics.aborts.inc()
        if getattr(err, "fatal", lambda: False)():
            raise FatalError(f"producer fenced or fatal: {err}")
        log.warning("transaction failed (%s); aborting and re-reading the batch", err)
        try:
            self.producer.abort_transaction(30)
        except KafkaException as abort_exc:
            raise FatalError(f"cannot abort transaction: {abort_exc}") from None

    def _committed(self, items: list[Item]) -> None:
        # the records kept in Redis for a redelivery are not needed any more
        kept: defaultdict[str, list[str]] = defaultdict(list)
        for i in items:
            if i.records and (cdr := i.cdr) is not None:
                kept[cdr.tenant_id].append(cdr.call_id)
        if kept:  # a standalone Redis drops them with the next apply
            try:
                self.store.forget_outputs(kept)
            except redis.RedisError as exc:  # they expire with their epoch's outputs key
                log.warning("could not drop committed outputs of %d tenants from Redis: %s", len(kept), exc)
        count(self.metrics, self.codec, items)
        done = time.time()
        latencies = [max(0.0, done - i.timestamp_ms / 1000) for i in items if i.timestamp_ms > 0]
        self.metrics.latency.observe_many(latencies)
        if self.latency_samples is not None:
            self.latency_samples.extend(latencies)


def count(metrics: ChargingMetrics, codec: Codec, items: list[Item]) -> None:
    """A committed batch's charges and money in the counters: summed per batch, then one
    inc per label set (labels() is not free)."""
    classes: Counter[str] = Counter()
    money: Counter[tuple[str, str]] = Counter()
    unrated = 0
    for item in items:
        if item.reject is not None or not item.records:
            continue
        c = item.charge
        if c is not None:
            classes[c.classification] += 1
            unrated += "FREECALL" in c.flags
            if c.amount:  # most calls draw a pool or are not charged: no money segment
                for s in c.segments:
                    if s.amount and s.bucket in MONEY_BUCKETS:
                        money[c.currency, s.bucket] += s.amount
            continue
        # Replayed from Redis (rare): the attempt that first charged it was aborted and
        # counted nothing, so this commit is the one that puts it on the ledger; it is
        # counted here as a charge (the money counter stays equal to the ledger) and
        # apart, as a replay, in callcharge_replayed_calls_total.
        value = next(v for code, v in item.records if code == CHARGES)
        _, d = codec.decode(value)
        classes[d["classification"]] += 1
        unrated += "FREECALL" in d["flags"]
        for seg in d["segments"]:
            if seg["amount"] and seg["bucket"] in MONEY_BUCKETS:
                money[d["currency"], seg["bucket"]] += seg["amount"]
    for classification, n in classes.items():
        metrics.charges.labels(classification).inc(n)
    for (currency, bucket), amount in money.items():
        metrics.money.labels(currency, bucket).inc(amount)
    if unrated:
        metrics.unrated.inc(unrated)


def next_offsets(items: list[Item]) -> list[TopicPartition]:
    nxt: dict[tuple[str, int], int] = {}
    for m in items:
        key = (m.topic, m.partition)
        nxt[key] = max(nxt.get(key, 0), m.offset + 1)
    return [TopicPartition(t, p, o) for (t, p), o in nxt.items()]
