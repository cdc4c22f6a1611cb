"""In-memory stand-ins for the charging worker's clients, for the component tests
(`tests/component/`), like bytewax's `testing.py`: the worker runs in process, its steps
and crash points exercised in milliseconds, no broker and no Redis.

* `MemoryBroker` keeps topics as lists per partition, committed consumer-group offsets,
  and Kafka's transaction rules as the worker relies on them: a transaction's records and
  offsets become visible together at commit; an abort, or a new producer with the same
  transactional id (`init_transactions`), drops them; a fenced producer fails fatally.
* `MemoryStore` keeps the Redis store's contract (`pipeline.adapters.store.Store`): a state
  per tenant with its version, compare-and-set per tenant (`Status`), a seen index of
  every call and the outputs of calls not yet committed; the state is kept as the JSON
  the real store writes and read back through the same parser.
* `StaticDirectory` serves prepared books of a fixed tenant list; shared by a charging
  worker and a control worker, it is the configuration both read (an offboarding the
  control worker applies is seen by the charging worker at once).

These are fakes: what they prove about the worker holds only as far as they keep the
contracts above. The integration tier runs the same worker on the real broker and Redis.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.adapters.store import Snapshot, StoredCall, _parse_state
from pipeline.charging.apply import Status
from pipeline.errors import StateUnreadable
from processors.charging import Book, prepare
from processors.ledger import TenantState
from processors.model import Tenant


@dataclass
class Record:
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0


class Message:
    """What confluent_kafka.Message offers the worker."""

    def __init__(self, topic: str, partition: int, offset: int, record: Record) -> None:
        self._topic, self._partition, self._offset, self._record = topic, partition, offset, record

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._record.key

    def value(self) -> bytes:
        return self._record.value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._record.timestamp_ms)

    def error(self) -> None:
        return None


def _error(text: str, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(KafkaError._FENCED if fatal else KafkaError._TRANSPORT, text, fatal=fatal))


@dataclass
class MemoryBroker:
    partitions: int = 4
    topics: dict[str, list[list[Record]]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, partition)
    epochs: dict[str, int] = field(default_factory=dict)  # transactional id -> current producer epoch

    def log(self, topic: str) -> list[list[Record]]:
        return self.topics.setdefault(topic, [[] for _ in range(self.partitions)])

    def partition_of(self, key: bytes | None) -> int:
        return zlib.crc32(key or b"") % self.partitions

    def append(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int = 0) -> None:
        self.log(topic)[self.partition_of(key)].append(Record(key, value, timestamp_ms))

    def records(self, topic: str) -> list[Record]:
        """Every committed record of `topic`, partition by partition."""
        return [r for part in self.log(topic) for r in part]

    def consumer(self, group: str) -> MemoryConsumer:
        return MemoryConsumer(self, group)

    def producer(self, transactional_id: str) -> MemoryProducer:
        return MemoryProducer(self, transactional_id)


class MemoryConsumer:
    """One member that is handed every partition of what it subscribes to."""

    def __init__(self, broker: MemoryBroker, group: str) -> None:
        self.broker, self.group = broker, group
        self._positions: dict[tuple[str, int], int] = {}
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Callable[..., None] | None = None, **_: Any) -> None:
        parts = [TopicPartition(t, p) for t in topics for p in range(len(self.broker.log(t)))]
        for tp in parts:
            self._positions[(tp.topic, tp.partition)] = self.broker.committed.get(
                (self.group, tp.topic, tp.partition), 0
            )
        if on_assign is not None:
            on_assign(self, parts)

    def unsubscribe(self) -> None:
        self._positions.clear()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._positions]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        out: list[Message] = []
        for (topic, p), pos in self._positions.items():
            part = self.broker.log(topic)[p]
            take = part[pos : pos + num_messages - len(out)]
            out += [Message(topic, p, pos + i, r) for i, r in enumerate(take)]
            self._positions[(topic, p)] = pos + len(take)
        return out

    def seek(self, tp: TopicPartition) -> None:
        self._positions[(tp.topic, tp.partition)] = tp.offset

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self._positions[(tp.topic, tp.partition)]) for tp in parts]

    def committed(self, parts: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        c = self.broker.committed
        return [
            TopicPartition(tp.topic, tp.partition, c.get((self.group, tp.topic, tp.partition), -1001)) for tp in parts
        ]

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        return 0, len(self.broker.log(tp.topic)[tp.partition])

    def consumer_group_metadata(self) -> str:
        return self.group

    def close(self) -> None:
        self.closed = True


class MemoryProducer:
    """A transactional producer: records and offsets are kept until the commit."""

    def __init__(self, broker: MemoryBroker, transactional_id: str) -> None:
        self.broker, self.tid = broker, transactional_id
        self.epoch = -1
        self._records: list[tuple[str, bytes | None, bytes]] | None = None
        self._offsets: list[tuple[str, TopicPartition]] = []
        self.fail_commits = 0  # the next this many commits fail (a retriable broker error)

    def init_transactions(self, timeout: float = -1) -> None:
        """Fences any earlier producer of this transactional id; its open transaction is gone."""
        self.epoch = self.broker.epochs.get(self.tid, -1) + 1
        self.broker.epochs[self.tid] = self.epoch

    def _check(self) -> None:
        if self.broker.epochs.get(self.tid) != self.epoch:
            raise _error(f"producer {self.tid} fenced by a newer epoch", fatal=True)

    def begin_transaction(self) -> None:
        self._check()
        self._records, self._offsets = [], []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, **_: Any) -> None:
        if self._records is None:
            raise _error("produce outside a transaction")
        self._records.append((topic, key, value or b""))

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], group: Any, timeout: float = -1) -> None:
        self._check()
        self._offsets += [(str(group), tp) for tp in offsets]

    def commit_transaction(self, timeout: float = -1) -> None:
        self._check()
        if self.fail_commits:
            self.fail_commits -= 1
            raise _error("commit failed: the broker went away")
        for topic, key, value in self._records or []:
            self.broker.append(topic, key, value)
        for group, tp in self._offsets:
            self.broker.committed[(group, tp.topic, tp.partition)] = tp.offset
        self._records, self._offsets = None, []

    def abort_transaction(self, timeout: float = -1) -> None:
        self._records, self._offsets = None, []

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0


class MemoryStore:
    """The Redis store's contract in memory (see the module docstring)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = defaultdict(dict)  # tenant -> its hash
        self.seen: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)  # tenant -> call -> origin
        self.outputs: dict[tuple[str, str], bytes] = {}  # (tenant, call) -> packed result
        self.fail_applies = 0  # the next this many applies raise ConnectionError ...
        self.fail_after_write = False  # ... after their writes landed (the answer was lost)
        self.applies = 0
        self.reads: list[tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]]] = []

    def snapshots(self, wanted: dict[str, list[str]]) -> dict[str, Snapshot]:
        return self.read(wanted, {}, {})[0]

    def read(
        self, wanted: dict[str, list[str]], pools: dict[str, list[str]], topups: dict[str, list[str]]
    ) -> tuple[dict[str, Snapshot], dict[str, dict[str, int]]]:
        """As Store.read: a tenant in `pools` is read with those pool fields only."""
        self.reads.append((dict(wanted), dict(pools), dict(topups)))
        out = {}
        for tid, ids in wanted.items():
            fields = dict(self.hashes.get(tid, {}))
            if tid in pools:
                keep = {b"state", b"ver", *[b"p:" + k.encode() for k in pools[tid]]}
                fields = {n: v for n, v in fields.items() if n in keep}
            calls: dict[str, StoredCall] = {}
            for c in ids:
                if (tid, c) in self.outputs:
                    calls[c] = StoredCall.unpack(self.outputs[tid, c])
                elif c in self.seen.get(tid, {}):
                    calls[c] = StoredCall(*self.seen[tid][c], ())
            version = int(fields.get(b"ver", b"0"))
            raw = fields.get(b"state")
            try:
                out[tid] = Snapshot(tid, version, _parse_state(tid, raw, fields) if raw else None, calls)
            except StateUnreadable as exc:
                out[tid] = Snapshot(tid, version, None, calls, exc)
        topped = {}
        for tid, keys in topups.items():
            h = self.hashes.get(tid, {})
            topped[tid] = {k: int(h[b"p:" + k.encode()]) for k in keys if b"p:" + k.encode() in h}
        return out, topped

    def apply(
        self, writes: list[tuple[str, int, TenantState, dict[str, bytes]]], keep_s: int = 0
    ) -> list[tuple[int, int]]:
        """As `Store.apply` (`keep_s`: how long Redis would keep the outputs; here, until forgotten)."""
        self.applies += 1
        if self.fail_applies and not self.fail_after_write:
            self.fail_applies -= 1
            raise redis.ConnectionError("Redis went away before the write")
        out = [self._apply_one(*w) for w in writes]
        if self.fail_applies:
            self.fail_applies -= 1
            raise redis.ConnectionError("Redis went away before it answered")
        return out

    def _apply_one(self, tid: str, expected: int, state: TenantState, calls: dict[str, bytes]) -> tuple[int, int]:
        h = self.hashes[tid]
        version = int(h.get(b"ver", b"0"))
        if version != expected:
            return Status.CONFLICT, version
        for i, c in enumerate(calls, 1):
            if c in self.seen[tid]:
                return Status.SEEN, i
        for c, packed in calls.items():
            self.seen[tid][c] = _origin(packed)
            self.outputs[tid, c] = packed
        h[b"state"] = state.to_json(pools=False).encode()
        h[b"ver"] = b"%d" % (version + 1)
        for k in state.pools_dirty:
            if k in state.pool_used:
                h[b"p:" + k.encode()] = b"%d" % state.pool_used[k]
        return Status.WRITTEN, version + 1

    def put_state(self, tenant_id: str, state: TenantState, version: int) -> None:
        """Another writer (the control worker, a rebuild) sets the state at `version`."""
        h = self.hashes[tenant_id]
        h.clear()
        h[b"state"] = state.to_json(pools=False).encode()
        h[b"ver"] = b"%d" % version
        for k, v in state.pool_used.items():
            h[b"p:" + k.encode()] = b"%d" % v

    def state(self, tenant_id: str) -> tuple[int, TenantState | None]:
        snap = self.snapshots({tenant_id: []})[tenant_id]
        return snap.version, snap.state

    def forget_outputs(self, calls: dict[str, list[str]]) -> None:
        for tid, ids in calls.items():
            for call_id in ids:
                self.outputs.pop((tid, call_id), None)

    def drop_committed_outputs(self) -> None:
        pass


def _origin(packed: bytes) -> tuple[int, int]:
    stored = StoredCall.unpack(packed)
    return stored.partition, stored.offset


class StaticDirectory:
    """Every tenant of a fixed list, prepared once."""

    def __init__(self, tenants: Iterable[Tenant]) -> None:
        self.books: dict[str, Book] = {t.tenant_id: prepare(t) for t in tenants}
        self.records: dict[str, dict[str, Any]] = {}  # tenant_config records as read (none here)

    def get(self, tenant_id: str) -> Book | None:
        return self.books.get(tenant_id)

    def poll(self, timeout: float = 0.0, budget_s: float = 1.0) -> int:
        return 0

    def catch_up(self, timeout: float = 600.0) -> None:
        pass

    def close(self) -> None:
        pass


class NoLeases:
    """Transactional-id leases are for processes on one Redis; one process needs none."""

    def tick(self) -> None:
        pass

    def release(self) -> None:
        pass
