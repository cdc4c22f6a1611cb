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

Step 3 skips a tenant whose state this worker wrote last (kept with its version since, in
memory, while it owns the partitions): step 5's compare-and-set on the version is what
makes that safe. Any other write (the control worker's funding, a rebuild) moved the
version, so the apply answers "conflict" and the tenant is read and folded again. The kept
states are dropped on every assignment change and every Redis error.

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
import os
import signal
import sys
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.adapters.codec import Codec, avro_mode
from pipeline.adapters.directory import TenantDirectory
from pipeline.adapters.kafka import take_batch
from pipeline.adapters.metrics import ChargingMetrics
from pipeline.adapters.records import cdr_decoder, charge_encoder, dead_letter, event_to_avro
from pipeline.adapters.store import CHARGES, DLQ, EVENTS, Snapshot, Store, StoredCall, call_ttl_s, out_key, pack_call
from pipeline.charging.backlog import BacklogWatch, Probe
from pipeline.charging.leases import TransactionLeases
from pipeline.config import Settings
from pipeline.errors import FatalError, PoisonError
from processors import native, numbers
from processors.admission import Origin, fold_batch, tenant_refusal
from processors.charging import Book
from processors.inputs import DeadLetterReason, Rejected
from processors.ledger import TenantState
from processors.model import BILLABLE, OVERAGE, Cdr, Charge
from processors.rating import RateCard

log = logging.getLogger(__name__)

MONEY_BUCKETS = frozenset({BILLABLE, OVERAGE})
MAX_CAS_RETRIES = 20
REJOIN_AFTER_S = 60.0  # idle this long while the group's CDRs wait and nothing moves: rejoin
LIVE_WITHIN_S = 300.0  # /livez fails when the charging loop has not turned for this long
STATE_CACHE_TENANTS = 50_000  # states kept from this worker's own writes (least recently used go)


class Item:
    """One consumed message (where it came from; confluent-kafka's accessors are
    Optional-typed) and what became of it in this batch. Written out with slots rather
    than as dataclasses: two records per CDR built by generated `__init__`s cost the
    worker about 3 us per CDR."""

    __slots__ = ("cdr", "charge", "key", "offset", "partition", "records", "reject", "timestamp_ms", "topic", "value")

    def __init__(self, m: Message) -> None:
        self.topic: str = m.topic() or ""
        self.partition: int = m.partition() or 0
        self.offset: int = m.offset() or 0
        self.key: bytes | None = m.key()
        self.value: bytes = m.value() or b""
        self.timestamp_ms: int = m.timestamp()[1]
        self.cdr: Cdr | None = None
        self.reject: Rejected | None = None
        self.charge: Charge | None = None  # set when charged in this batch (not when replayed)
        self.records: tuple[tuple[int, bytes], ...] = ()


class ChargingWorker:
    """The commit protocol's loop. Every client is built by `pipeline.wiring` and passed in."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        store: Store,
        rates: RateCard,
        metrics: ChargingMetrics,
        directory: TenantDirectory,
        consumer: Consumer,
        producer: Producer,
        leases: TransactionLeases,
        worker_id: str,
    ):
        self.s = settings
        self.codec = codec
        self._encode_charge = charge_encoder(codec)
        self._decode_cdr = cdr_decoder(codec, settings.duration_tolerance_s)  # bytes -> Cdr | Rejected
        self.store = store
        self.rates = rates
        self.metrics = metrics
        self.topics = settings.topic
        self.worker_id = worker_id
        self.directory = directory
        self.consumer = consumer
        self.leases = leases
        self.producer = producer  # transactional, transactions initialised (after the lease)
        self.batches = 0
        self._stop = False
        self._crash_step, self._crash_batch = _parse_crash(settings.crash_after)
        self._topic_names = {CHARGES: self.topics.charges, EVENTS: self.topics.balance_events, DLQ: self.topics.dlq}
        self._window = timedelta(days=settings.dedup_window_days)
        self._skew = timedelta(seconds=settings.clock_skew_s)
        self._ttl = call_ttl_s(settings.dedup_window_days)
        self._redis_backoff = 0.0
        self._heartbeat: float | None = None  # when the charging loop last turned
        self.latency_samples: list[float] | None = None  # the benchmark collects raw samples here
        self._ahead: list[Item] | None = None  # the next batch, read early
        self._applier = ThreadPoolExecutor(1, thread_name_prefix="redis-apply")
        self._probe: Probe | None = None  # the group's backlog over the whole topic (drained())
        # tenant -> (version, state) as this worker last wrote them (step 3 skips the read)
        self._states: OrderedDict[str, tuple[int, TenantState]] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self._stop = True

    def alive(self) -> bool:
        """Liveness: the charging loop turned within LIVE_WITHIN_S (or has not started: the
        configuration is still being read). Redis or the broker away keeps it turning."""
        return self._heartbeat is None or time.monotonic() - self._heartbeat < LIVE_WITHIN_S

    def run(self, max_idle_s: float | None = None) -> None:
        self.directory.catch_up()
        # The configuration just read (a million users are millions of objects) lives as
        # long as the worker: out of the cyclic collector's reach, as tune_runtime does
        # with what exists at start, so no full collection walks it again.
        gc.freeze()
        self._subscribe()
        watch = BacklogWatch(self.s, self.topics.cdr, self.metrics.lag, self.metrics.stalled, self.s.backlog_watch_s)
        rejoined = time.monotonic()
        idle_since = time.monotonic()
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
                    # Idle while the group leaves CDRs uncharged and nothing moves: a partition
                    # nobody is assigned (or held by a member that stopped fetching). Leaving
                    # and joining again makes the coordinator hand every partition out anew.
                    log.warning(
                        "CDRs waiting uncharged for %.0fs (%s) and no offset moves; rejoining the group",
                        watch.stalled_for(),
                        " ".join(f"{p}:{w}" for p, w in sorted(watch.waiting.items()) if w),
                    )
                    self.metrics.rejoins.inc()
                    self.consumer.unsubscribe()
                    self._subscribe()
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

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            [self.topics.cdr],
            on_assign=lambda _, parts: self._assignment_changed("assigned", parts),
            on_revoke=lambda _, parts: self._assignment_changed("revoked", parts),
        )

    def _assignment_changed(self, what: str, parts: list[TopicPartition]) -> None:
        # another worker may have charged these tenants meanwhile: read their states again
        self._states.clear()
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
            self._applier.shutdown()
            self.directory.close()
            self.producer.flush(10)
            self.leases.release()

    # -- one batch -------------------------------------------------------------------
    def run_once(self) -> int:
        self.leases.tick()
        if self._ahead is not None:  # consumed and decoded while the last batch's apply ran
            items = self._ahead
            self._ahead = None
        else:
            items = self._fetch(self.s.batch_timeout_ms / 1000)
        if not items:
            return 0
        self.batches += 1
        self.metrics.consumed.inc(len(items))
        self.metrics.batch_size.observe(len(items))
        t0 = time.perf_counter()
        try:
            # Read ahead only when behind (a full batch): with light traffic a batch read
            # early would wait for this one's commit and then pay a commit of its own.
            backlog = len(items) >= self.s.batch_size
            owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            self._charge(items, while_applying=self._prefetch if backlog else None)  # steps 3-5
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Retriable: nothing of this batch is in Kafka yet; what reached Redis is
            # recorded per call and answered from there on the retry.
            self._states.clear()  # whether the apply landed is unknown
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
        self._commit(items)  # steps 6-8
        n = len(items)
        del items  # this batch's records go now, before the collection looks for cycles
        collect_between_batches()
        return n

    @property
    def read_ahead(self) -> bool:
        """A batch has been consumed (the consumer's position is past it) but not charged."""
        return bool(self._ahead)

    def _fetch(self, timeout_s: float) -> list[Item]:
        """Steps 1 and 2 of a batch: consume (waiting at most `timeout_s`) and decode."""
        raw = take_batch(self.consumer, self.s.batch_size, timeout_s)  # step 1
        self.directory.poll(0)
        items = [Item(m) for m in raw if m.error() is None or not self._consumer_error(m)]
        if not items:
            return []
        upcoming = self.batches + 1  # read ahead, this is still before the batch in hand commits
        self._crash(1, upcoming)
        self._decode(items)  # step 2
        self._crash(2, upcoming)
        return items

    def _prefetch(self) -> None:
        """Steps 1-2 of the next batch, while Redis applies this one (the worker would
        only wait). They touch neither Redis nor the transaction; a rewind of this batch
        rewinds them too."""
        if self._ahead is None:
            # only what the client has already fetched: waiting here would hold up the
            # commit of the batch in hand (and its latency) when traffic is light
            self._ahead = self._fetch(0)

    def _consumer_error(self, m: Message) -> bool:
        err = m.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer: %s", err)
        return True

    def _decode(self, items: list[Item]) -> None:
        decode = self._decode_cdr
        known = self.directory.get
        need_catch_up = False
        for item in items:
            try:
                decoded = decode(item.value)
            except PoisonError as exc:
                decoded = Rejected(exc.reason, str(exc))
            if isinstance(decoded, Cdr):
                book = known(decoded.tenant_id)
                if book is None:
                    need_catch_up = True
                elif book.tenant.removed_at is not None:  # offboarded: tenant_removed
                    item.reject = tenant_refusal(decoded.tenant_id, book)
                    continue
                item.cdr = decoded
            else:
                item.reject = decoded
        if need_catch_up:  # a tenant configured after our last look, or a truly unknown one
            self.directory.catch_up(timeout=5)
            for item in items:
                cdr = item.cdr
                if cdr is not None:
                    refusal = tenant_refusal(cdr.tenant_id, self.directory.get(cdr.tenant_id))
                    if refusal is not None:
                        item.cdr, item.reject = None, refusal

    def _charge(self, items: list[Item], while_applying: Callable[[], None] | None = None) -> None:
        by_tenant: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            if item.cdr is not None:
                by_tenant[item.cdr.tenant_id].append(item)
        pending = dict(by_tenant)
        with_calls: set[str] = set()  # tenants whose batch holds a call id seen before
        now = datetime.now(UTC)  # charged_at of this batch's charges
        window = (now - self._window, now + self._skew)  # the start times admitted (oldest, latest)
        kept = self._states
        for _attempt in range(MAX_CAS_RETRIES):
            if not pending:
                return
            snaps = {}
            wanted = {}
            for t, its in pending.items():
                if t in kept and t not in with_calls:
                    version, state = kept[t]
                    snaps[t] = Snapshot(t, version, state, {})
                else:
                    wanted[t] = [i.cdr.call_id for i in its if i.cdr] if t in with_calls else []
            if wanted:
                snaps.update(self.store.snapshots(wanted))
            self._crash(3)
            writes = []
            for tid, its in list(pending.items()):
                snap = snaps[tid]
                if snap.unreadable is not None:
                    # No balance to charge against: this tenant's CDRs wait in the DLQ for
                    # `callcharge rebuild` and a redrive; every other tenant goes on.
                    log.error("%s", snap.unreadable)
                    for item in its:
                        item.reject = Rejected(
                            DeadLetterReason.STATE_UNREADABLE, f"{snap.unreadable}; then re-drive this dead letter"
                        )
                    del pending[tid]
                    continue
                book = self.directory.get(tid)
                assert book is not None
                state, new_calls = self._fold(book, snap.state, snap.calls, its, now, window)
                writes.append((tid, snap.version, state, new_calls))
            self._crash(4)
            if while_applying is None:
                results = self.store.apply(writes, self._ttl)
            else:  # the Redis round trip (the worker's longest wait) runs beside other work
                pending_apply = self._applier.submit(self.store.apply, writes, self._ttl)
                try:
                    while_applying()
                    while_applying = None
                finally:
                    results = pending_apply.result()
            retry = {}
            for (tid, _, state, _), (status, value) in zip(writes, results, strict=True):
                if status == 1:  # written: `value` is the new version
                    state.pools_dirty.clear()  # its drawn pools are in Redis now
                    kept[tid] = (value, state)
                    kept.move_to_end(tid)
                    if len(kept) > STATE_CACHE_TENANTS:
                        kept.popitem(last=False)
                    continue
                if kept.pop(tid, None) is not None and tid not in wanted:
                    self.metrics.state_cache_stale.inc()  # another writer moved it: read it again
                elif status == 0:
                    self.metrics.cas_conflicts.inc()
                retry[tid] = pending[tid]
                if status == -1:
                    with_calls.add(tid)
            self._crash(5)
            pending = retry
        # A tenant whose state keeps changing under us (another writer, a hand edit) is set
        # aside: its CDRs wait in the DLQ to be re-driven, every other tenant goes on.
        for tid, its in pending.items():
            log.error("tenant %s: state kept changing under us %d times; its CDRs go to the DLQ", tid, MAX_CAS_RETRIES)
            for item in its:
                item.reject = Rejected(
                    DeadLetterReason.STATE_CONFLICT,
                    f"tenant {tid}: state kept changing during {MAX_CAS_RETRIES} attempts; "
                    "re-drive once a single writer remains",
                )

    def _fold(
        self,
        book: Book,
        stored_state: TenantState | None,
        stored: dict[str, StoredCall],
        items: list[Item],
        now: datetime,
        window: tuple[datetime, datetime],
    ) -> tuple[TenantState, dict[str, bytes]]:
        """Step 4 for one tenant: `processors.admission.fold_batch`, then the encoding.

        A call whose records cannot be encoded (a value past a field's range that the core's
        bounds did not catch) goes to the DLQ with its reason, and the tenant's batch is
        folded again without it: one call never stops its tenant, the worker or the others."""
        unencodable: dict[int, Rejected] = {}
        while True:
            try:
                return self._fold_once(book, stored_state, stored, items, now, window, unencodable)
            except _Unencodable as exc:
                item = items[exc.index]
                log.error("tenant %s: call %s cannot be encoded: %s", book.tenant.tenant_id, exc.call_id, exc.why)
                unencodable[exc.index] = Rejected(
                    DeadLetterReason.MONEY_OUT_OF_RANGE,
                    f"tenant {book.tenant.tenant_id}: call {exc.call_id}: its records cannot be encoded: {exc.why}",
                )
                item.reject = unencodable[exc.index]

    def _fold_once(
        self,
        book: Book,
        stored_state: TenantState | None,
        stored: dict[str, StoredCall],
        items: list[Item],
        now: datetime,
        window: tuple[datetime, datetime],
        unencodable: dict[int, Rejected],
    ) -> tuple[TenantState, dict[str, bytes]]:
        if unencodable:  # folded again without the calls that could not be encoded
            kept = [(k, item) for k, item in enumerate(items) if k not in unencodable]
            index = [k for k, _ in kept]
            items = [item for _, item in kept]
        folded = fold_batch(
            book,
            stored_state,
            [(item.cdr, Origin(item.partition, item.offset)) for item in items if item.cdr is not None],
            {call_id: Origin(s.partition, s.offset) for call_id, s in stored.items()},
            self.rates,
            window[0],
            self.s.dedup_window_days,
            latest=window[1],
        )
        currency = book.tenant.currency
        encode_charge = self._encode_charge
        new_calls: dict[str, bytes] = {}
        for item, outcome in zip(items, folded.outcomes, strict=True):
            charge = outcome.charge
            if charge is not None:  # the usual case first
                partition, offset = item.partition, item.offset
                try:
                    records: tuple[tuple[int, bytes], ...] = ((CHARGES, encode_charge(charge, partition, offset, now)),)
                    if outcome.events:
                        records += tuple(
                            (EVENTS, self.codec.encode("balance_event", event_to_avro(e, currency)))
                            for e in outcome.events
                        )
                except (OverflowError, ValueError, TypeError) as exc:
                    at = items.index(item)
                    raise _Unencodable(index[at] if unencodable else at, charge.call_id, str(exc)) from None
                item.reject, item.records, item.charge = None, records, charge
                new_calls[charge.call_id] = pack_call(partition, offset, records)
                continue
            item.reject, item.records, item.charge = outcome.reject, (), None
            if outcome.replay:
                item.records = stored[outcome.cdr.call_id].records
                self.metrics.replayed.inc()
        return folded.state, new_calls

    def _commit(self, items: list[Item]) -> None:
        p = self.producer
        now = datetime.now(UTC)
        n = 0
        try:
            p.begin_transaction()
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
                    p.produce(self.topics.dlq, key=key, value=self.codec.encode("dead_letter", dl))
                    continue
                for code, value in item.records:
                    p.produce(self._topic_names[code], value, key)
                n += 1
                if n % 500 == 0:
                    p.poll(0)  # serve delivery reports now and then, not per record
            self._crash(6)
            p.send_offsets_to_transaction(_next_offsets(items), self.consumer.consumer_group_metadata(), 30)
            self._crash(7)
            t0 = time.perf_counter()
            p.commit_transaction(60)
            self.metrics.commit_seconds.observe(time.perf_counter() - t0)
        except KafkaException as exc:
            self._recover(exc, items)
            return
        self._crash(8)
        # committed: the records kept in Redis for a redelivery are not needed any more
        kept = [out_key(i.cdr.tenant_id, i.cdr.call_id).encode() for i in items if i.records and i.cdr is not None]
        if kept:  # a standalone Redis drops them with the next apply
            self._forget(kept)
        self._count(items)
        done = time.time()
        latencies = [max(0.0, done - i.timestamp_ms / 1000) for i in items if i.timestamp_ms > 0]
        self.metrics.latency.observe_many(latencies)
        if self.latency_samples is not None:
            self.latency_samples.extend(latencies)

    def _forget(self, keys: list[bytes]) -> None:
        try:
            self.store.forget_outputs(keys)
        except redis.RedisError as exc:  # they expire with their TTL
            log.warning("could not drop %d committed outputs from Redis: %s", len(keys), exc)

    def _recover(self, exc: KafkaException, items: list[Item]) -> None:
        err = exc.args[0]
        self.metrics.aborts.inc()
        if getattr(err, "fatal", lambda: False)():
            raise FatalError(f"producer fenced or fatal: {err}")
        log.warning("transaction failed (%s); aborting and re-reading the batch", err)
        try:
            self.producer.abort_transaction(30)
        except KafkaException as abort_exc:
            raise FatalError(f"cannot abort transaction: {abort_exc}") from None
        self._rewind(items)

    def _rewind(self, items: list[Item]) -> None:
        if self._ahead is not None:  # read after `items`: re-read in order with them
            items = items + self._ahead
            self._ahead = None
        first: dict[tuple[str, int], int] = {}
        for m in items:
            key = (m.topic, m.partition)
            first[key] = min(first.get(key, m.offset), m.offset)
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, part), off in first.items():
            if (topic, part) in assigned:
                self.consumer.seek(TopicPartition(topic, part, off))

    def _count(self, items: list[Item]) -> None:
        # Summed per batch, then one inc per label set: labels() is not free.
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
            _, d = self.codec.decode(value)
            classes[d["classification"]] += 1
            unrated += "FREECALL" in d["flags"]
            for seg in d["segments"]:
                if seg["amount"] and seg["bucket"] in MONEY_BUCKETS:
                    money[d["currency"], seg["bucket"]] += seg["amount"]
        for classification, n in classes.items():
            self.metrics.charges.labels(classification).inc(n)
        for (currency, bucket), amount in money.items():
            self.metrics.money.labels(currency, bucket).inc(amount)
        if unrated:
            self.metrics.unrated.inc(unrated)

    def _crash(self, step: int, batch: int | None = None) -> None:
        batch = self.batches if batch is None else batch
        if self._crash_step == step and batch == self._crash_batch:
            log.error("fault injection: SIGKILL after step %d of batch %d", step, batch)
            os.kill(os.getpid(), signal.SIGKILL)


class _Unencodable(Exception):
    """A charged call of a tenant's batch whose records cannot be encoded (`_fold`)."""

    def __init__(self, index: int, call_id: str, why: str) -> None:
        super().__init__(why)
        self.index, self.call_id, self.why = index, call_id, why


def tune_runtime() -> None:
    """CPython settings for a long-running worker (measured in one process, A/B):

    * Fewer, cheaper cyclic-GC passes: what exists after start (schemas, number metadata,
      rate card) is frozen out of collection, and the worker collects between batches
      (`collect_between_batches`) rather than every 700 allocations. The charging path
      makes many short-lived records and almost no cycles.
    * A 1 ms thread switch interval instead of 5 ms: when Redis answers step 5, the
      thread waiting on it gets the interpreter back soon instead of queueing behind the
      decoding of the next batch (about 20 % more CDR/s in one process).
    * Every country's number metadata prepared up front (`processors.numbers.warm`, about
      0.3 s): the first call to a country no longer stalls its batch by up to 100 ms, and
      the metadata is frozen out of collection with the rest.
    """
    numbers.warm()
    gc.freeze()
    gc.set_threshold(*GC_SAFETY_NET)
    sys.setswitchinterval(0.001)


# Cyclic GC runs between batches (`collect_between_batches`), when a batch's records are
# already freed by reference counting; the collector's own thresholds stay only as a net.
# Inside a batch every Item, Cdr and Charge is alive until the commit: a collection there
# walks them all and finds nothing to free (measured: 5-6 % of the worker's CPU, and pauses
# in the middle of a batch's latency).
GC_SAFETY_NET = (400_000, 20, 20)  # never reached by a batch of 2 000 CDRs (~60 000 objects)
GC_BETWEEN_BATCHES = 5_000  # young objects that make a collection between batches worth it


def collect_between_batches() -> None:
    """A generation-0 collection (older ones as CPython's own counters would) when enough
    young objects outlived their batch: what ends up in reference cycles is freed here."""
    young, middle, old = gc.get_count()
    if young < GC_BETWEEN_BATCHES:
        return
    gc.collect(2 if old >= GC_SAFETY_NET[2] else 1 if middle >= GC_SAFETY_NET[1] else 0)


def _next_offsets(items: list[Item]) -> list[TopicPartition]:
    nxt: dict[tuple[str, int], int] = {}
    for m in items:
        key = (m.topic, m.partition)
        nxt[key] = max(nxt.get(key, 0), m.offset + 1)
    return [TopicPartition(t, p, o) for (t, p), o in nxt.items()]


def _parse_crash(spec: str) -> tuple[int, int]:
    if not spec:
        return 0, 0
    step, _, batch = spec.partition(":")
    return int(step), int(batch or 1)
