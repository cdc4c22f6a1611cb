"""The Redis store: tenant state, materialized config and per-call results.

Keys carry the tenant as a hash tag so every script touches one slot (Redis Cluster safe):

    cc:{T}              hash  state (JSON of processors.ledger.TenantState), ver, config, config_ver
    cc:{T}:call:ID      string  the exact output records of call ID with its source offset
                        (expires after the dedup window)

Writes go through `lua/apply.lua` (loaded once, EVALSHA; `lua/apply_batch.lua` takes a
whole batch in one call on a standalone Redis): a compare-and-set on `ver`, so
a stale or zombie writer can never overwrite a newer state, and a call id is recorded in
the same atomic step as the debit it caused.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import redis

from pipeline.errors import StateUnreadable
from processors.frozen import frozen
from processors.ledger import TenantState

# Topic codes of the records a StoredCall keeps (charging worker, ledger ops, rebuild).
CHARGES, EVENTS, DLQ = 0, 1, 2

_HEAD = struct.Struct(">iqH")
_REC = struct.Struct(">BI")
_ONE = struct.Struct(">iqHBI")  # _HEAD then _REC of a call with one record


# Set by `callcharge stack up` when Redis holds state that no ledger backs (the embedded
# broker keeps its topics in memory and came back empty): workers refuse to charge on it.
SPLIT_KEY = "cc:ledger-split"


def tenant_key(tenant_id: str) -> str:
    return f"cc:{{{tenant_id}}}"


def call_key(tenant_id: str, call_id: str) -> str:
    return f"cc:{{{tenant_id}}}:call:{call_id}"


def call_ttl_s(dedup_window_days: int) -> int:
    """How long a call's record is kept: the dedup window and a day."""
    return (dedup_window_days + 1) * 86400


def pack_call(partition: int, offset: int, records: tuple[tuple[int, bytes], ...]) -> bytes:
    """`StoredCall(partition, offset, records).pack()` without building the object (hot path)."""
    if len(records) == 1:  # a charge without balance events: most calls
        code, value = records[0]
        return _ONE.pack(partition, offset, 1, code, len(value)) + value
    parts = [_HEAD.pack(partition, offset, len(records))]
    for code, value in records:
        parts.append(_REC.pack(code, len(value)))
        parts.append(value)
    return b"".join(parts)


def apply_batch_command(sha: str, writes: list[tuple[str, int, TenantState, dict[str, bytes]]], ttl_s: int) -> bytes:
    """`EVALSHA sha numkeys KEYS... ARGV...` of apply_batch.lua for `writes`, packed: the
    bytes redis-py would send for the same arguments (held equal by a test)."""
    keys: list[bytes] = []
    args: list[bytes] = [_bulk(b"%d" % ttl_s), _bulk(b"%d" % len(writes))]
    for tid, ver, state, calls in writes:
        keys.append(_bulk(tenant_key(tid).encode()))
        prefix = call_key(tid, "").encode()
        args += (_bulk(b"%d" % len(calls)), _bulk(b"%d" % ver), _bulk(state.to_json().encode()))
        for call_id, value in calls.items():  # the hot loop: _bulk written out
            key = prefix + call_id.encode()
            keys.append(b"$%d\r\n%b\r\n" % (len(key), key))
            args.append(b"$%d\r\n%b\r\n" % (len(value), value))
    head = (b"*%d\r\n" % (3 + len(keys) + len(args)), _bulk(b"EVALSHA"), _bulk(sha.encode()), _bulk(b"%d" % len(keys)))
    return b"".join((*head, *keys, *args))


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)


def resp_command(*args: bytes) -> bytes:
    """One command in the Redis protocol (an array of bulk strings), as redis-py sends it."""
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


@frozen
class StoredCall:
    """What a call produced the first time: re-emitted byte for byte on redelivery."""

    partition: int
    offset: int
    records: tuple[tuple[int, bytes], ...]  # (topic code, value)

    def pack(self) -> bytes:
        return pack_call(self.partition, self.offset, self.records)

    @classmethod
    def unpack(cls, data: bytes) -> StoredCall:
        partition, offset, n = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        records = []
        for _ in range(n):
            code, length = _REC.unpack_from(data, pos)
            pos += _REC.size
            records.append((code, bytes(data[pos : pos + length])))
            pos += length
        return cls(partition, offset, tuple(records))


def _parse_state(tenant_id: str, raw: bytes | str) -> TenantState:
    try:
        return TenantState.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise StateUnreadable(tenant_id, exc) from None


@dataclass(frozen=True, slots=True)
class Snapshot:
    tenant_id: str
    version: int
    state: TenantState | None  # None: never written (or unreadable)
    calls: dict[str, StoredCall]
    unreadable: StateUnreadable | None = None


# A Redis Cluster in the middle of a failover answers these until its slots are served
# again: to the workers they are Redis being unavailable for a moment (retry the batch).
CLUSTER_TRANSIENT = (
    redis.exceptions.ClusterError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ReadOnlyError,
)
WAIT_TIMEOUT_MS = 2000


class ReplicationLagging(redis.ConnectionError):
    """A state write reached its primary but not `replicas_ack` replicas in time: the batch
    is retried (its results are recorded, so the retry replays them), never committed on
    a write a failover could lose."""


class Store:
    def __init__(self, client: redis.Redis, replicas_ack: int = 0):
        self.r = client
        self.replicas_ack = replicas_ack
        self.cluster = isinstance(client, redis.RedisCluster)
        lua = resources.files(__package__).joinpath("lua")
        self._apply_source = lua.joinpath("apply.lua").read_text()
        self._apply_sha = self.r.script_load(self._apply_source)
        # a standalone Redis takes a whole batch in one call (apply_batch.lua); a Cluster
        # one call per tenant, its keys in the tenant's slot
        self._batch_source = lua.joinpath("apply_batch.lua").read_text()
        self._batch_sha = self.r.script_load(self._batch_source) if not self.cluster else ""

    @contextmanager
    def _available(self) -> Iterator[None]:
        """Cluster failover errors surface as redis.ConnectionError (after the client has
        been told to learn the slot map again): one kind of "Redis is away" for callers."""
        try:
            yield
        except CLUSTER_TRANSIENT as exc:
            if self.cluster:
                cast(Any, self.r).nodes_manager.initialize()
            raise redis.ConnectionError(f"Redis Cluster is failing over: {exc}") from exc

    def snapshots(self, wanted: dict[str, list[str]]) -> dict[str, Snapshot]:
        """State, version and any stored results for {tenant: [call ids]} in one round trip."""
        with self._available():
            return self._snapshots(wanted)

    def _snapshots(self, wanted: dict[str, list[str]]) -> dict[str, Snapshot]:
        pipe = self.r.pipeline(transaction=False)
        order = list(wanted)
        for tid in order:
            pipe.hmget(tenant_key(tid), "state", "ver")
            ids = wanted[tid]
            for c in ids:  # one GET each (a Cluster pipeline refuses MGET); asked only on replays
                pipe.get(call_key(tid, c))
        replies = iter(pipe.execute())
        out = {}
        for tid in order:
            state_raw, ver_raw = next(replies)
            ids = wanted[tid]
            found = [next(replies) for _ in ids]
            calls = {c: StoredCall.unpack(v) for c, v in zip(ids, found, strict=True) if v is not None}
            try:
                state = _parse_state(tid, state_raw) if state_raw else None
            except StateUnreadable as exc:
                out[tid] = Snapshot(tid, int(ver_raw or 0), None, calls, exc)
                continue
            out[tid] = Snapshot(tid, int(ver_raw or 0), state, calls)
        return out

    def apply(self, writes: list[tuple[str, int, TenantState, dict[str, bytes]]], ttl_s: int) -> list[tuple[int, int]]:
        """CAS-apply [(tenant, expected version, new state, {call id: packed result})].

        One pipelined EVALSHA per tenant (one pipeline per primary on a Cluster), followed
        on the same connection by WAIT when `replicas_ack` is set; returns the script's
        (status, value) per write in the order given.
        """
        with self._available():
            try:
                return self._apply(writes, ttl_s)
            except redis.exceptions.NoScriptError:  # a restarted or promoted Redis
                self._apply_sha = self.r.script_load(self._apply_source)
                if not self.cluster:
                    self._batch_sha = self.r.script_load(self._batch_source)
                return self._apply(writes, ttl_s)

    def _apply(self, writes: list[tuple[str, int, TenantState, dict[str, bytes]]], ttl_s: int) -> list[tuple[int, int]]:
        if not self.cluster:
            return self._apply_batch(writes, ttl_s)
        groups: dict[str, tuple[redis.Redis, list[int]]] = {}
        for i, (tid, *_) in enumerate(writes):  # a Cluster: one pipeline per primary
            node = cast(Any, self.r).get_node_from_key(tenant_key(tid))
            client = node.redis_connection or cast(Any, self.r).get_redis_connection(node)
            groups.setdefault(node.name, (client, []))[1].append(i)
        replies: list[tuple[int, int]] = [(0, 0)] * len(writes)
        for client, indexes in groups.values():
            pipe = client.pipeline(transaction=False)
            for i in indexes:
                tid, ver, state, calls = writes[i]
                keys = [tenant_key(tid)] + [call_key(tid, c) for c in calls]
                args: list[Any] = [ver, state.to_json(), ttl_s, *calls.values()]
                pipe.evalsha(self._apply_sha, len(keys), *keys, *args)
            out = self._execute_acked(pipe)
            for i, (a, b) in zip(indexes, out, strict=True):
                replies[i] = (int(a), int(b))
        return replies

    def _apply_batch(
        self, writes: list[tuple[str, int, TenantState, dict[str, bytes]]], ttl_s: int
    ) -> list[tuple[int, int]]:
        """Every write in one EVALSHA of apply_batch.lua (standalone Redis), packed here.

        redis-py spent 2.2-2.4 us per call building and packing the command's two arguments
        per call (a key and its stored result), on the Redis thread, which shares the GIL
        with the next batch's read; `apply_batch_command` writes the same bytes in 1.2.
        """
        if not writes:
            return []
        packed = apply_batch_command(self._batch_sha, writes, ttl_s)
        if self.replicas_ack:
            packed += resp_command(b"WAIT", b"%d" % self.replicas_ack, b"%d" % WAIT_TIMEOUT_MS)
        pool = self.r.connection_pool
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command([packed])
            flat = conn.read_response()
            acked = int(conn.read_response()) if self.replicas_ack else 0
        except BaseException:
            conn.disconnect()  # a reply may be left unread: never reuse this connection
            raise
        finally:
            pool.release(conn)
        if self.replicas_ack:
            self._check_acked(acked)
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def _execute_acked(self, pipe: Any) -> list[Any]:
        """The pipeline's replies, followed on the same connection by WAIT when
        `replicas_ack` is set: a write no replica confirmed in time raises."""
        if self.replicas_ack:
            pipe.execute_command("WAIT", self.replicas_ack, WAIT_TIMEOUT_MS)
        out: list[Any] = pipe.execute()
        if self.replicas_ack:
            self._check_acked(int(out.pop()))
        return out

    def _check_acked(self, acked: int) -> None:
        """Raise when fewer replicas than `replicas_ack` confirmed the write (WAIT's answer)."""
        if acked < self.replicas_ack:
            raise ReplicationLagging(
                f"state written but not on {self.replicas_ack} replica(s) within {WAIT_TIMEOUT_MS} ms"
            )

    def put_state(self, tenant_id: str, state: TenantState, version: int) -> None:
        """Overwrite a tenant's state (rebuild, workers stopped) at `version`."""
        self.r.hset(tenant_key(tenant_id), mapping={"state": state.to_json(), "ver": version})

    def save_config(self, tenant_id: str, config_json: str, offset: int) -> None:
        self.r.hset(tenant_key(tenant_id), mapping={"config": config_json, "config_ver": offset})

    def remember_command(self, tenant_id: str, command_id: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """Record what an API command id asked for, once; returns what it asked for before
        (None the first time). Kept as long as the call records (the dedup window)."""
        key = f"{tenant_key(tenant_id)}:api-command:{command_id}"
        body = json.dumps(request, sort_keys=True)
        if self.r.set(key, body, nx=True, ex=call_ttl_s(45)):
            return None
        raw = self.r.get(key)
        return json.loads(raw) if raw else None

    def scan(self, match: str) -> Iterator[str]:
        """Key names matching `match` on every primary (a scan: for checks, not the hot path)."""
        for key in self.r.scan_iter(match=match, count=1000):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def stored_tenants(self) -> set[str]:
        """Every tenant with a balance state in Redis (a scan: for checks, not the hot path)."""
        out = set()
        for name in self.scan("cc:{*}"):
            if name.endswith("}") and self.r.hexists(name, "state"):
                out.add(name[4:-1])
        return out

    def stored_calls(self, tenant_id: str) -> set[str]:
        """The call ids of a tenant with a record in Redis (a scan: for checks)."""
        prefix = call_key(tenant_id, "")
        return {k[len(prefix) :] for k in self.scan(prefix + "*")}  # tenant ids hold no glob character

    def load_config(self, tenant_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(tenant_key(tenant_id), "config")
        return json.loads(raw) if raw else None

    def state(self, tenant_id: str) -> tuple[int, TenantState | None]:
        """(version, state); raises StateUnreadable rather than pass off a bad state as none."""
        snap = self.snapshots({tenant_id: []})[tenant_id]
        if snap.unreadable is not None:
            raise snap.unreadable
        return snap.version, snap.state
