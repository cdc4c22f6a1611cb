"""The charging worker: CDRs from Kafka, state in Redis, charges back to Kafka, exactly once.

Commit protocol for one batch (the crash tests kill the worker right after each step):

  1. consume   up to `batch_size` CDRs (read_committed) from the assigned `cdr` partitions.
  2. decode    Avro to `Cdr`; bad bytes, unknown schema, invalid fields, unknown tenant and
               calls older than the dedup window become dead letters (never an exception).
  3. read      one Redis round trip: each tenant's state and its version (and, on a retry
               after step 5 found a call id already recorded, the stored result of every
               call id of that tenant's batch). A tenant whose stored state cannot be read
               is not charged: its CDRs become dead letters `state_unreadable`, to re-drive
               after `callcharge rebuild --tenant T`.
  4. fold      `processors.charging.charge_call` for each new call, in partition order. A
               call found in Redis with the same source offset is a redelivery: its stored
               bytes are re-emitted and nothing is debited. Found with another offset, it is
               a duplicate publication: dead letter `duplicate`, nothing debited.
  5. apply     one EVALSHA per tenant (`lua/apply.lua`; on a standalone Redis one for the
               whole batch, `lua/apply_batch.lua`): compare-and-set on the version and
               on every call id being new, then write the new state and record every call
               id with its exact output bytes, atomically. A version conflict re-reads and
               re-folds that tenant (back to 3); a call id already recorded (a redelivery
               or a duplicate) writes nothing and re-reads that tenant with its calls.
               Redeliveries are rare (after a crash or a rebalance), so step 3 does not
               fetch every call id of every batch up front.
  6. produce   charges, balance events and dead letters into a Kafka transaction.
  7. offsets   send the batch's next offsets to the same transaction.
  8. commit    commit the transaction.

Each group of steps is a part of its own, handed its clients: `intake.Intake` (1-2),
`apply.StateApply` (3-5, with the states this worker wrote last kept in memory),
`checkpoint.Checkpoint` (6-8). This class is their lifecycle: the loop, the group
membership, and what a failure rewinds.

While step 5 waits on Redis (a durable write: the AOF is fsynced before Redis answers),
steps 1-2 of the next batch run beside it: they touch neither Redis nor the transaction,
and anything that rewinds a batch rewinds that one too.

A crash before 5 applies nothing. A crash after 5 and before 8 aborts the transaction
(the broker does, after transaction.timeout.ms; or a living worker, once the dead one's
transactional-id lease in Redis runs out: `txn_leases`);
the batch is redelivered, every call is found at step 3 with its source offset and the
identical bytes are produced again: no debit twice, no record lost.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Protocol

import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from pipeline.adapters.avro.codec import Codec, avro_mode
from pipeline.adapters.metrics import ChargingMetrics
from pipeline.charging.apply import StateApply, StateStore
from pipeline.charging.backlog import BacklogWatch, Probe
from pipeline.charging.checkpoint import Checkpoint
from pipeline.charging.intake import Directory, Intake, Item
from pipeline.charging.runtime import Faults, collect_between_batches
from pipeline.config import Settings
from processors import native
from processors.rating import RateCard

log = logging.getLogger(__name__)

REJOIN_AFTER_S = 60.0  # idle this long while the group's CDRs wait and nothing moves: rejoin
LIVE_WITHIN_S = 300.0  # /livez fails when the charging loop has not turned for this long


class Leases(Protocol):
    """The transactional id's lease (`pipeline.charging.leases.TransactionLeases`)."""

    def tick(self) -> None: ...
    def release(self) -> None: ...


class ChargingWorker:
    """The commit protocol's loop. Every client is built by `pipeline.wiring` and passed in
    (the component tests pass in-memory ones: `pipeline.dev.testing`)."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        store: StateStore,
        rates: RateCard,
        metrics: ChargingMetrics,
        directory: Directory,
        consumer: Consumer,
        producer: Producer,
        leases: Leases,
        worker_id: str,
        faults: Faults | None = None,
    ):
        self.s = settings
        self.store = store
        self.metrics = metrics
        self.topics = settings.topic
        self.worker_id = worker_id
        self.directory = directory
        self.consumer = consumer
        self.leases = leases
        self.producer = producer
        self.batches = 0
        self._stop = False
        self.faults = faults or Faults(settings.crash_after)
        self.intake = Intake(settings, codec, directory, consumer, self.faults)  # steps 1-2
        self.state = StateApply(settings, codec, store, rates, metrics, directory, self.faults)  # steps 3-5
        self.checkpoint = Checkpoint(settings, codec, store, metrics, producer, consumer, self.faults)  # 6-8
        self._redis_backoff = 0.0
        self._heartbeat: float | None = None  # when the charging loop last turned
        self._probe: Probe | None = None  # the group's backlog over the whole topic (drained())

    # -- lifecycle -------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self._stop = True

    def alive(self) -> bool:
        """Liveness: the charging loop turned within LIVE_WITHIN_S (or has not started: the
        configuration is still being read). Redis or the broker away keeps it turning."""
        return self._heartbeat is None or time.monotonic() - self._heartbeat < LIVE_WITHIN_S

    @property
    def read_ahead(self) -> bool:
        """A batch has been consumed (the consumer's position is past it) but not charged."""
        return self.intake.read_ahead

    @property
    def latency_samples(self) -> list[float] | None:
        return self.checkpoint.latency_samples

    @latency_samples.setter
    def latency_samples(self, samples: list[float] | None) -> None:  # the benchmark's raw samples
        self.checkpoint.latency_samples = samples

    def run(self, max_idle_s: float | None = None) -> None:
        self.directory.catch_up()
        # The configuration just read (a million users are millions of objects) lives as
        # long as the worker: out of the cyclic collector's reach, as tune_runtime does
        # with what exists at start, so no full collection walks it again.
        gc.freeze()
        self._subscribe()
        watch = BacklogWatch(self.s, self.topics.cdr, self.metrics.lag, self.metrics.stalled, self.s.backlog_watch_s)
        rejoined = idle_since = time.monotonic()
        log.info(
            "charging worker %s consuming %s; Avro: %s; charging core: %s",
            self.worker_id,
            self.topics.cdr,
            avro_mode(),
            native.mode(),
        )
        try:
            while not self._stop:
                self._heartbeat = time.monotonic()
                n = self.run_once()
                if not n and watch.stalled_for() > REJOIN_AFTER_S and time.monotonic() - rejoined > REJOIN_AFTER_S:
                    self._rejoin(watch)
                    rejoined = time.monotonic()
                if n or not self.consumer.assignment():
                    idle_since = time.monotonic()
                elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    # Idle is not drained: a rebalance or a dead member's pending offsets can
                    # stall fetching for longer than max_idle_s while CDRs are still waiting.
                    if not self.read_ahead and self.drained():
                        log.info("idle for %.1fs and the topic is drained: %s", max_idle_s, self._positions_text())
                        break
                    idle_since = time.monotonic()
        finally:
            watch.close()
        self.close()

    def _rejoin(self, watch: BacklogWatch) -> None:
        """Idle while the group leaves CDRs uncharged and nothing moves: a partition nobody
        is assigned (or held by a member that stopped fetching). Leaving and joining again
        makes the coordinator hand every partition out anew."""
        log.warning(
            "CDRs waiting uncharged for %.0fs (%s) and no offset moves; rejoining the group",
            watch.stalled_for(),
            " ".join(f"{p}:{w}" for p, w in sorted(watch.waiting.items()) if w),
        )
        self.metrics.rejoins.inc()
        self.consumer.unsubscribe()
        self._subscribe()

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            [self.topics.cdr],
            on_assign=lambda _, parts: self._assignment_changed("assigned", parts),
            on_revoke=lambda _, parts: self._assignment_changed("revoked", parts),
        )

    def _assignment_changed(self, what: str, parts: list[TopicPartition]) -> None:
        # another worker may have charged these tenants meanwhile: read their states again
        self.state.states.clear()
        log.info("%s %s", what, sorted(tp.partition for tp in parts))

    def drained(self, timeout_s: float = 10.0) -> bool:
        """The group has charged every CDR in the `cdr` topic so far (every partition,
        including any a dead worker still holds: see `pipeline.charging.backlog`)."""
        if self._probe is None:
            self._probe = Probe(self.s, self.topics.cdr, self.consumer, f"{self.s.group_id}-{self.worker_id}")
        waiting = self._probe.waiting(timeout_s)
        if waiting is None or any(waiting.values()):
            log.info("not drained: waiting %s; read here %s", waiting or "unknown", self._positions_text())
            return False
        return True

    def _positions(self) -> list[TopicPartition]:
        """This worker's read position in each assigned partition (the group's committed
        offset where it has not read yet)."""
        positions = self.consumer.position(self.consumer.assignment())
        unknown = [tp for tp in positions if tp.offset < 0]
        if unknown:
            committed = {tp.partition: tp.offset for tp in self.consumer.committed(unknown, 10)}
            for tp in unknown:
                tp.offset = committed.get(tp.partition, tp.offset)
        return positions

    def _positions_text(self) -> str:
        try:
            return " ".join(
                f"{tp.partition}@{tp.offset}/{(self.consumer.get_watermark_offsets(tp, cached=True) or (-1, -1))[1]}"
                for tp in self._positions()
            )
        except KafkaException as exc:
            return str(exc)

    def close(self) -> None:
        try:
            self.store.drop_committed_outputs()
        except redis.RedisError as exc:  # they expire with their TTL
            log.warning("could not drop committed outputs from Redis: %s", exc)
        try:
            self.consumer.close()
            if self._probe is not None:
                self._probe.close()
        finally:
            self.state.close()
            self.directory.close()
            self.producer.flush(10)
            self.leases.release()

    # -- one batch -------------------------------------------------------------------
    def run_once(self) -> int:
        """One batch through the steps; returns how many messages it held (0: none came)."""
        self.leases.tick()
        items = self.intake.next_batch(self.s.batch_timeout_ms / 1000, self.batches + 1)  # steps 1-2
        if not items:
            return 0
        self.batches += 1
        batch = self.batches
        self.metrics.consumed.inc(len(items))
        self.metrics.batch_size.observe(len(items))
        # Read ahead only when behind (a full batch): with light traffic a batch read early
        # would wait for this one's commit and then pay a commit of its own.
        beside = (lambda: self.intake.prefetch(batch + 1)) if len(items) >= self.s.batch_size else None
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        t0 = time.perf_counter()
        try:
            self.state.charge(items, batch, while_applying=beside)  # steps 3-5
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Retriable: nothing of this batch is in Kafka yet; what reached Redis is
            # recorded per call and answered from there on the retry.
            self.state.states.clear()  # whether the apply landed is unknown
            self._redis_backoff = min(5.0, max(0.1, self._redis_backoff * 2))
            log.warning("Redis unavailable (%s); retrying the batch in %.1fs", exc, self._redis_backoff)
            self._rewind(items)
            time.sleep(self._redis_backoff)
            return len(items)
        self._redis_backoff = 0.0
        self.metrics.redis_seconds.observe(time.perf_counter() - t0)
        if {(tp.topic, tp.partition) for tp in self.consumer.assignment()} != owned:
            # The read-ahead consume served a rebalance: this batch's partitions may be
            # another worker's now, and it would replay them too. Commit nothing; whoever
            # owns them re-reads from the committed offsets and gets the stored results.
            log.info("rebalanced while reading ahead; batch of %d handed back uncommitted", len(items))
            self._rewind(items)
            return len(items)
        if not self.checkpoint.commit(items, batch):  # steps 6-8
            self._rewind(items)
        n = len(items)
        del items  # this batch's records go now, before the collection looks for cycles
        collect_between_batches()
        return n

    def _rewind(self, items: list[Item]) -> None:
        """Seek back to the batch's first offsets (and the batch read after it, re-read in
        order with it): nothing of it is committed."""
        first: dict[tuple[str, int], int] = {}
        for m in items + self.intake.take_ahead():
            key = (m.topic, m.partition)
            first[key] = min(first.get(key, m.offset), m.offset)
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, part), off in first.items():
            if (topic, part) in assigned:
                self.consumer.seek(TopicPartition(topic, part, off))
