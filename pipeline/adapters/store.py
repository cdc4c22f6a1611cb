"""The Redis store: tenant state, materialized config and per-call results (every key of
callcharge is in the map of `pipeline.adapters.keyspace`).

Keys carry the tenant as a hash tag so every script touches one slot (Redis Cluster safe):

    cc:{T}              hash  state (JSON of processors.ledger.TenantState without its pools),
                        ver, config, config_ver, and p:MONTH|POOL|DIM per pool: minutes used
                        (a batch writes the pools it drew, not every pool of the tenant)
    cc:{T}:seen:E       hash  the seen index of epoch E (a fifth of the dedup window of charging
                        time, named by its first day: `SeenWindow`): the
                        12-byte digest of each call id charged then -> its source partition
                        and offset (12 bytes); expires once the dedup window has passed it
    cc:{T}:outputs:E    hash  the digest of each call charged in epoch E -> its exact output
                        records with its source offset, kept until the transaction that
                        carries them commits (the worker drops them then; the key expires
                        with the epoch's seen index, a safety net only)
    cc:{T}:out:ID       string  the records of control operation ID (400 days: looked up by
                        id), and of calls charged before 2026-12-07 (until their TTL)

The seen index is what the dedup window keeps: about 60 bytes of Redis memory per call
(docs/benchmark.md), against the 400-600 of a key per call holding its records. The
outputs wait in one hash per tenant and epoch, not a key per call: a batch writes and
drops one field per call in one key per tenant (a key per call cost Redis a key, an expiry
and an UNLINK each).

Writes go through `lua/apply.lua` (loaded once, EVALSHA; `lua/apply_batch.lua` takes a
whole batch in one call on a standalone Redis): a compare-and-set on `ver`, so
a stale or zombie writer can never overwrite a newer state, and a call id is recorded in
the same atomic step as the debit it caused.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar, cast

import redis

from pipeline.adapters import keyspace
from pipeline.errors import StateUnreadable
from processors.frozen import frozen
from processors.ledger import TenantState

# Topic codes of the records a StoredCall keeps (charging worker, ledger ops, rebuild).
CHARGES, EVENTS, DLQ = 0, 1, 2

_HEAD = struct.Struct(">iqH")
_REC = struct.Struct(">BI")
_ONE = struct.Struct(">iqHBI")  # _HEAD then _REC of a call with one record
_LOCATOR = struct.Struct(">iq")  # a stored result's first 12 bytes: partition, offset


# Set by `callcharge stack up` when Redis holds state that no ledger backs (the embedded
# broker keeps its topics in memory and came back empty): workers refuse to charge on it.
SPLIT_KEY = keyspace.LEDGER_SPLIT
tenant_key = keyspace.tenant
outputs_key = keyspace.outputs
result_key = keyspace.result
seen_key = keyspace.seen


T = TypeVar("T")

SEEN_EPOCHS = 5  # the dedup window (and a day) in this many epochs: at most 6 or 7 looked in


_BLAKE96 = hashlib.blake2b(digest_size=12)  # copied per digest: 40 % less than the constructor


def call_digest(call_id: str) -> bytes:
    """The seen index's name for a call id: 96 bits of BLAKE2b (two ids of one tenant share
    one with a chance of about n^2 / 2^97: 1e-16 for a million calls a day)."""
    h = _BLAKE96.copy()
    h.update(call_id.encode())
    return h.digest()


@dataclass(frozen=True, slots=True)
class SeenWindow:
    """The seen-index epochs a write looks in and the one it writes to. An epoch is a fifth
    of the window and a day, named by its first day (days since 1970): how many are looked
    in does not grow with the window. Another window is another set of epochs (`callcharge
    rebuild` indexes the ledger's calls again)."""

    epoch: int  # the current epoch's first day
    span: int  # epochs looked in: every one a call charged within the window can be in
    expires: int  # unix seconds: when the current epoch's index may go
    step: int  # days per epoch

    @classmethod
    def at(cls, now_s: float, window_days: int) -> SeenWindow:
        keep = (window_days + 1) * 86400
        step = -(-(window_days + 1) // SEEN_EPOCHS)  # days, rounded up
        today = int(now_s // 86400)
        epoch = today - today % step
        oldest_day = int((now_s - keep) // 86400)
        oldest = oldest_day - oldest_day % step
        return cls(epoch, (epoch - oldest) // step + 1, (epoch + step) * 86400 + keep, step)

    def epochs(self) -> range:
        return range(self.epoch - (self.span - 1) * self.step, self.epoch + 1, self.step)


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


def apply_batch_command(
    sha: str,
    writes: list[tuple[str, int, TenantState, dict[str, bytes]]],
    seen: SeenWindow,
    committed: dict[str, list[bytes]] = {},  # noqa: B006 (never mutated)
    digests: dict[str, bytes] | None = None,
) -> bytes:
    """`EVALSHA sha numkeys KEYS... ARGV...` of apply_batch.lua for `writes`, packed: the
    bytes redis-py would send for the same arguments (held equal by a test). `committed`:
    per tenant, the digests of calls whose transaction has committed: their outputs are
    dropped by the same call. `digests`: filled with each call id's digest (the commit that
    follows drops the outputs by them without hashing the ids again)."""
    keys: list[bytes] = []
    args: list[bytes] = [
        _bulk(b"%d" % len(writes)),
        _bulk(b"%d" % seen.epoch),
        _bulk(b"%d" % seen.span),
        _bulk(b"%d" % seen.expires),
        _bulk(b"%d" % seen.step),
        _bulk(b"%d" % len(committed)),
    ]
    blake = _BLAKE96.copy
    named = {} if digests is None else digests
    for tid, ver, state, calls in writes:
        keys.append(_bulk(tenant_key(tid).encode()))
        args += (_bulk(b"%d" % len(calls)), _bulk(b"%d" % ver), _bulk(state.to_json(pools=False).encode()))
        used = state.pool_used
        dirty = [k for k in state.pools_dirty if k in used]
        args.append(_bulk(b"%d" % len(dirty)))
        for k in dirty:
            args += (_bulk((POOL + k).encode()), _bulk(b"%d" % used[k]))
        for call_id, value in calls.items():  # the hot loop: _bulk and call_digest written out
            h = blake()
            h.update(call_id.encode())
            named[call_id] = digest = h.digest()
            args.append(b"$12\r\n%b\r\n" % digest)
            args.append(b"$%d\r\n%b\r\n" % (len(value), value))
    for tid, dropped in committed.items():
        keys.append(_bulk(tenant_key(tid).encode()))
        args.append(_bulk(b"%d" % len(dropped)))
        args += [b"$12\r\n%b\r\n" % d for d in dropped]
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


POOL = "p:"  # a tenant hash's field per pool and month: minutes used


def _parse_state(tenant_id: str, raw: bytes | str, fields: dict[bytes, bytes] | None = None) -> TenantState:
    """The state JSON with the tenant hash's pool fields. A state written before the pools
    had fields of their own (`pool_used` inline) has every pool marked to be written out."""
    try:
        state = TenantState.from_dict(json.loads(raw))
        if state.pool_used:
            state.pools_dirty = set(state.pool_used)
        for name, value in (fields or {}).items():
            if name.startswith(b"p:"):
                state.pool_used[name[2:].decode()] = int(value)
        return state
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
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
    def __init__(self, client: redis.Redis, replicas_ack: int = 0, window_days: int = 45):
        self.r = client
        self.replicas_ack = replicas_ack
        self.window_days = window_days  # the dedup window: how far back the seen index is looked in
        self._committed: dict[str, list[bytes]] = {}  # per tenant, outputs to drop with the next apply
        self._digests: dict[str, bytes] = {}  # call id -> digest, of calls written since the last forget
        self.cluster = isinstance(client, redis.RedisCluster)
        lua = resources.files(__package__).joinpath("lua")
        self._apply_source = lua.joinpath("apply.lua").read_text()
        # a standalone Redis takes a whole batch in one call (apply_batch.lua) and drops
        # committed outputs with it; a Cluster one call per tenant, its keys in the tenant's
        # slot, and forget.lua for the committed outputs
        self._batch_source = lua.joinpath("apply_batch.lua").read_text()
        self._forget_source = lua.joinpath("forget.lua").read_text()
        self._load_scripts()

    def _load_scripts(self) -> None:
        """SCRIPT LOAD of every script this Redis takes: at start, and again when it answers
        NOSCRIPT (restarted, or a replica promoted: `_scripted`)."""
        self._apply_sha = self.r.script_load(self._apply_source)
        self._batch_sha = self.r.script_load(self._batch_source) if not self.cluster else ""
        self._forget_sha = self.r.script_load(self._forget_source) if self.cluster else ""

    def _scripted(self, send: Callable[[], T]) -> T:
        """`send()`, run again once the scripts are loaded if Redis had lost them."""
        with self._available():
            try:
                return send()
            except redis.exceptions.NoScriptError:  # a restarted or promoted Redis
                self._load_scripts()
                return send()

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
        """State (with every pool), version and any stored results for {tenant: [call ids]}
        in one round trip."""
        return self.read(wanted, {}, {})[0]

    def read(
        self, wanted: dict[str, list[str]], pools: dict[str, list[str]], topups: dict[str, list[str]]
    ) -> tuple[dict[str, Snapshot], dict[str, dict[str, int]]]:
        """One round trip for the charging worker's step 3. `wanted`: tenants to read (state,
        version, the stored results of the call ids given); `pools`: for a tenant of
        `wanted`, the pool fields to read with it (its other pools are not read; a tenant
        not in `pools` is read whole); `topups`: tenants whose state the worker keeps, for
        which only these pool fields are read. Returns the snapshots and, per topped-up
        tenant, the pools found ({} for pools never drawn)."""
        with self._available():
            return self._read(wanted, pools, topups)

    def _read(
        self, wanted: dict[str, list[str]], pools: dict[str, list[str]], topups: dict[str, list[str]]
    ) -> tuple[dict[str, Snapshot], dict[str, dict[str, int]]]:
        commands: list[tuple[bytes, ...]] = []
        names: dict[str, list[bytes]] = {}  # per tenant read with its pools: the fields asked
        order = list(wanted)
        seen = SeenWindow.at(time.time(), self.window_days)
        epochs = seen.epochs()
        for tid in order:
            key = tenant_key(tid).encode()
            if tid in pools:  # the state, its version and the pools its calls can draw
                names[tid] = [b"state", b"ver", *[(POOL + k).encode() for k in pools[tid]]]
                commands.append((b"HMGET", key, *names[tid]))
            else:  # the state, its version and every pool's field
                commands.append((b"HGETALL", key))
            ids = wanted[tid]
            if ids:  # asked only on replays: their outputs, else where the index saw them
                digests = [call_digest(c) for c in ids]
                for e in epochs:
                    commands.append((b"HMGET", outputs_key(tid, e).encode(), *digests))
                for c in ids:  # a control operation's (or a call's before 2026-12-07)
                    commands.append((b"GET", result_key(tid, c).encode()))
                for e in epochs:
                    commands.append((b"HMGET", seen_key(tid, e).encode(), *digests))
        for tid, keys in topups.items():
            commands.append((b"HMGET", tenant_key(tid).encode(), *[(POOL + k).encode() for k in keys]))
        replies = iter(self._pipeline(commands))
        out = {}
        for tid in order:
            reply = next(replies)
            if tid in pools:
                fields = {n: v for n, v in zip(names[tid], reply, strict=True) if v is not None}
            else:  # HGETALL: a flat list of names and values as sent (a dict from redis-py)
                fields = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
            state_raw, ver_raw = fields.get(b"state"), fields.get(b"ver")
            ids = wanted[tid]
            calls: dict[str, StoredCall] = {}
            if ids:
                waiting = [next(replies) for _ in epochs]
                kept = [next(replies) for _ in ids]
                located = [next(replies) for _ in epochs]
                for i, c in enumerate(ids):
                    output = next((found[i] for found in waiting if found[i] is not None), kept[i])
                    if output is not None:  # its transaction may not have committed: re-emit
                        calls[c] = StoredCall.unpack(output)
                        continue
                    where = next((found[i] for found in located if found[i] is not None), None)
                    if where is not None:  # committed: its outputs are on the topics already
                        partition, offset = _LOCATOR.unpack_from(where, 0)
                        calls[c] = StoredCall(partition, offset, ())
            try:
                state = _parse_state(tid, state_raw, fields) if state_raw else None
            except StateUnreadable as exc:
                out[tid] = Snapshot(tid, int(ver_raw or 0), None, calls, exc)
                continue
            out[tid] = Snapshot(tid, int(ver_raw or 0), state, calls)
        topped = {}
        for tid, keys in topups.items():
            values = next(replies)
            topped[tid] = {k: int(v) for k, v in zip(keys, values, strict=True) if v is not None}
        return out, topped

    def _pipeline(self, commands: list[tuple[bytes, ...]]) -> list[Any]:
        """The replies of `commands`, sent in one round trip. On a standalone Redis they are
        packed here and written at once (redis-py's pipeline spent about 8 us per command
        building and packing it: 5.5 ms for the 700 HMGETs of a batch of a 10 000-tenant
        platform, against 1.9 ms packed here); a Cluster routes them by slot (redis-py)."""
        if self.cluster:
            pipe: Any = self.r.pipeline(transaction=False)
            for name, *args in commands:
                pipe.execute_command(name.decode(), *args)
            replies: list[Any] = pipe.execute()
            return replies
        return self._round_trip(b"".join(resp_command(*command) for command in commands), len(commands))

    def forget_outputs(self, calls: dict[str, list[str]]) -> None:
        """Drop the outputs of calls whose transaction has committed ({tenant: [call ids]}).
        On a standalone Redis they go with the next apply (no round trip of their own; what
        is left when the worker stops expires with its epoch); on a Cluster, a pipeline now."""
        if not calls:
            return
        if not self.cluster:
            known, self._digests = self._digests, {}  # what is left was not committed: written again
            for tid, ids in calls.items():
                self._committed.setdefault(tid, []).extend([known.get(c) or call_digest(c) for c in ids])
            return
        self._scripted(lambda: self._forget_now(calls))

    def _forget_now(self, calls: dict[str, list[str]]) -> None:
        """forget.lua per tenant, one pipeline (a Cluster)."""
        seen = SeenWindow.at(time.time(), self.window_days)
        pipe = self.r.pipeline(transaction=False)
        for tid, ids in calls.items():
            digests = [call_digest(c) for c in ids]
            pipe.evalsha(self._forget_sha, 1, tenant_key(tid), seen.epoch, seen.span, seen.step, *digests)
        pipe.execute()

    def drop_committed_outputs(self) -> None:
        """Drop now the committed outputs waiting for the next apply (a worker stopping)."""
        committed, self._committed = self._committed, {}
        if committed:
            seen = SeenWindow.at(time.time(), self.window_days)
            self._scripted(lambda: self._send(apply_batch_command(self._batch_sha, [], seen, committed)))

    def apply(
        self, writes: list[tuple[str, int, TenantState, dict[str, bytes]]], keep_s: int = 0
    ) -> list[tuple[int, int]]:
        """CAS-apply [(tenant, expected version, new state, {call id: packed result})].

        The results wait in the epoch's outputs hash until `forget_outputs` (the charging
        worker, once their transaction commits); with `keep_s`, each is kept under a key of
        its own for that long instead (the control worker's operations, looked up by id).
        One EVALSHA for the whole batch on a standalone Redis, else one per tenant (one
        pipeline per primary on a Cluster), followed on the same connection by WAIT when
        `replicas_ack` is set; returns the script's (status, value) per write in order.
        """
        return self._scripted(lambda: self._apply(writes, keep_s))

    def _apply(
        self, writes: list[tuple[str, int, TenantState, dict[str, bytes]]], keep_s: int
    ) -> list[tuple[int, int]]:
        seen = SeenWindow.at(time.time(), self.window_days)
        if not self.cluster and not keep_s:
            return self._apply_batch(writes, seen)
        groups: dict[str, tuple[redis.Redis, list[int]]] = {}
        for i, (tid, *_) in enumerate(writes):  # one pipeline per primary (a standalone Redis: one)
            if not self.cluster:
                groups.setdefault("", (self.r, []))[1].append(i)
                continue
            node = cast(Any, self.r).get_node_from_key(tenant_key(tid))
            client = node.redis_connection or cast(Any, self.r).get_redis_connection(node)
            groups.setdefault(node.name, (client, []))[1].append(i)
        replies: list[tuple[int, int]] = [(0, 0)] * len(writes)
        for client, indexes in groups.values():
            pipe = client.pipeline(transaction=False)
            for i in indexes:
                self._queue_apply(pipe, writes[i], seen, keep_s)
            out = self._execute_acked(pipe)
            for i, (a, b) in zip(indexes, out, strict=True):
                replies[i] = (int(a), int(b))
        return replies

    def _queue_apply(
        self, pipe: Any, write: tuple[str, int, TenantState, dict[str, bytes]], seen: SeenWindow, keep_s: int
    ) -> None:
        """apply.lua for one tenant, queued on `pipe`."""
        tid, ver, state, calls = write
        keys = [tenant_key(tid)] + ([result_key(tid, c) for c in calls] if keep_s else [])
        args: list[Any] = [
            ver,
            state.to_json(pools=False),
            len(calls),
            seen.epoch,
            seen.span,
            seen.expires,
            seen.step,
            keep_s,
        ]
        dirty = [k for k in state.pools_dirty if k in state.pool_used]
        args.append(len(dirty))
        for k in dirty:
            args += (POOL + k, state.pool_used[k])
        for c, value in calls.items():
            args += (call_digest(c), value)
        pipe.evalsha(self._apply_sha, len(keys), *keys, *args)

    def _apply_batch(
        self, writes: list[tuple[str, int, TenantState, dict[str, bytes]]], seen: SeenWindow
    ) -> list[tuple[int, int]]:
        """Every write in one EVALSHA of apply_batch.lua (standalone Redis), packed here.

        redis-py spent 2.2-2.4 us per call building and packing the command's two arguments
        per call (its digest and its stored result), on the Redis thread, which shares the GIL
        with the next batch's read; `apply_batch_command` writes the same bytes in 1.2.
        """
        if not writes:
            return []
        committed, self._committed = self._committed, {}
        try:
            flat = self._send(apply_batch_command(self._batch_sha, writes, seen, committed, self._digests))
        except BaseException:  # they go with the apply that follows (dropping twice is harmless)
            for tid, digests in committed.items():
                self._committed.setdefault(tid, []).extend(digests)
            raise
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def _send(self, packed: bytes) -> Any:
        """One packed command, followed by WAIT when `replicas_ack` is set; its reply."""
        if not self.replicas_ack:
            return self._round_trip(packed, 1)[0]
        reply, acked = self._round_trip(
            packed + resp_command(b"WAIT", b"%d" % self.replicas_ack, b"%d" % WAIT_TIMEOUT_MS), 2
        )
        self._check_acked(int(acked))
        return reply

    def _round_trip(self, packed: bytes, replies: int) -> list[Any]:
        """Packed commands written at once on a connection of the pool; their `replies`."""
        pool = self.r.connection_pool
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command([packed])
            return [conn.read_response() for _ in range(replies)]
        except BaseException:
            conn.disconnect()  # a reply may be left unread: never reuse this connection
            raise
        finally:
            pool.release(conn)

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

    def save_config(self, tenant_id: str, config_json: str, offset: int) -> None:
        self.r.hset(tenant_key(tenant_id), mapping={"config": config_json, "config_ver": offset})

    def remember_command(self, tenant_id: str, command_id: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """Record what an API command id asked for, once; returns what it asked for before
        (None the first time). Kept as long as the call records (the dedup window)."""
        key = keyspace.api_command(tenant_id, command_id)
        body = json.dumps(request, sort_keys=True)
        if self.r.set(key, body, nx=True, ex=call_ttl_s(45)):
            return None
        raw = self.r.get(key)
        return json.loads(raw) if raw else None

    def load_config(self, tenant_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(tenant_key(tenant_id), "config")
        return json.loads(raw) if raw else None

    @property
    def admin(self) -> StoreAdmin:
        """Rebuild's and the checks' operations (scans, overwrites)."""
        return StoreAdmin(self.r, self.window_days)

    def state(self, tenant_id: str) -> tuple[int, TenantState | None]:
        """(version, state); raises StateUnreadable rather than pass off a bad state as none."""
        snap = self.snapshots({tenant_id: []})[tenant_id]
        if snap.unreadable is not None:
            raise snap.unreadable
        return snap.version, snap.state


class StoreAdmin:
    """What `callcharge rebuild` and the checks do to the store besides charging: a state
    overwritten, the tenants and seen calls found by scanning, the seen index restored."""

    def __init__(self, client: redis.Redis, window_days: int) -> None:
        self.r = client
        self.window_days = window_days

    def put_state(self, tenant_id: str, state: TenantState, version: int) -> None:
        """Overwrite a tenant's state (rebuild, workers stopped) at `version`."""
        key = tenant_key(tenant_id)
        stale = [f for f in cast(list[bytes], self.r.hkeys(key)) if f.startswith(b"p:")]
        pipe = self.r.pipeline(transaction=True)
        if stale:
            pipe.hdel(key, *stale)
        mapping: dict[str | bytes, str | int] = {"state": state.to_json(pools=False), "ver": version}
        mapping.update({POOL + k: v for k, v in state.pool_used.items()})
        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
        pipe.execute()
        state.pools_dirty.clear()

    def scan(self, match: str) -> Iterator[str]:
        """Key names matching `match` on every primary (a scan: for checks, not the hot path)."""
        for key in self.r.scan_iter(match=match, count=1000):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def stored_tenants(self) -> set[str]:
        """Every tenant with a balance state in Redis (a scan: for checks, not the hot path)."""
        out = set()
        for name in self.scan(keyspace.TENANT_PATTERN):
            if name.endswith("}") and self.r.hexists(name, "state"):
                out.add(name[4:-1])
        return out

    def seen_calls(self, tenant_id: str) -> dict[bytes, tuple[int, int]]:
        """The seen index of a tenant (a scan: for checks): call digest -> (partition,
        offset); balance operations of the control worker have partition -1."""
        out: dict[bytes, tuple[int, int]] = {}
        for name in self.scan(seen_key(tenant_id, 0)[:-1] + "*"):  # tenant ids hold no glob character
            entries = cast(dict[bytes, bytes], self.r.hgetall(name))
            for digest, where in entries.items():
                out[digest] = _LOCATOR.unpack_from(where, 0)
        return out

    def restore_seen(self, tenant_id: str, calls: list[tuple[str, int, int, float]]) -> int:
        """Put calls (id, partition, offset, charged at as unix seconds) back in the seen
        index, each in the epoch it was charged in (rebuild); returns how many were new."""
        pipe = self.r.pipeline(transaction=False)
        for call_id, partition, offset, charged_s in calls:
            seen = SeenWindow.at(charged_s, self.window_days)
            key = seen_key(tenant_id, seen.epoch)
            pipe.hsetnx(key, call_digest(call_id), _LOCATOR.pack(partition, offset))
            pipe.expireat(key, seen.expires)
        return sum(1 for i, n in enumerate(pipe.execute()) if i % 2 == 0 and n)
