"""Open transactions of dead workers are aborted by the living ones.

A worker killed inside a Kafka transaction leaves it open. Apache Kafka aborts it after
`transaction.timeout.ms`; until then read_committed readers of the partitions it wrote to
wait. The embedded broker (Tansu 0.6) never times a transaction out: the open one holds
back the last stable offset of those partitions for good, and every later transaction
that wrote to them stays prepared without its consumer offsets being committed, so
charging never gets past that point.

Each worker's transactional id is therefore leased in Redis (`cc:txn-leases:{group}`:
id -> lease end, in ms), renewed as it works and released when it stops. A worker that
finds a lease run out claims it, initializes a producer with that transactional id, which
makes the broker abort the open transaction (fencing the dead producer, as Kafka does for
a restarted one), and drops the lease. A worker stalled longer than the lease is fenced
that way too: its next transaction fails as fenced and it stops, nothing applied twice.
Leases are wall-clock milliseconds: the workers' hosts keep their clocks in sync (NTP).

Known limit of the embedded broker: Tansu 0.6 does not tell read_committed readers which
transactions were aborted, so the records of an aborted transaction stay visible. If a
worker dies in the few milliseconds between its records reaching the broker and the
commit (the producer holds records until commit_transaction flushes them), readers of
the embedded broker see that batch's charges twice: once from the aborted transaction,
once from the redelivery. Redis is right either way (nothing is debited twice). Apache
Kafka hides the aborted copy.
"""

from __future__ import annotations

import logging
import time

import redis
from confluent_kafka import KafkaException

from pipeline.adapters import keyspace
from pipeline.adapters.kafka import producer
from pipeline.config import Settings

log = logging.getLogger(__name__)

LEASE_MS = 10_000  # as transaction.timeout.ms
RENEW_EVERY_S = 2.0

# Claim an expired lease for the cleanup (so two workers do not both do it).
_CLAIM = """
local lease = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if lease > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class TransactionLeases:
    def __init__(self, settings: Settings, client: redis.Redis, transactional_id: str):
        self.s = settings
        self.r = client
        self.mine = transactional_id
        self.key = keyspace.txn_leases(settings.group_id)
        self._claim = self.r.register_script(_CLAIM)
        self._last = 0.0
        # After Redis was unreachable every lease may have run out, the living workers'
        # too: sweep only once the others have had a whole lease to renew theirs.
        self._sweep_after = 0.0

    def tick(self) -> None:
        """Renew this worker's lease and clean up after dead ones (at most every 2 s)."""
        if time.monotonic() - self._last < RENEW_EVERY_S:
            return
        self._last = time.monotonic()
        try:
            self.r.hset(self.key, self.mine, _now_ms() + LEASE_MS)
            if time.monotonic() >= self._sweep_after:
                for tid in self.expired():
                    self.abort_open_transaction(tid)
        except redis.RedisError as exc:
            log.warning("transaction leases: Redis unavailable (%s)", exc)
            self._sweep_after = time.monotonic() + LEASE_MS / 1000 + RENEW_EVERY_S

    def expired(self) -> list[str]:
        now = _now_ms()
        return [
            t
            for raw, lease in self.r.hgetall(self.key).items()
            if (t := raw.decode() if isinstance(raw, bytes) else str(raw)) != self.mine and int(lease) < now
        ]

    def abort_open_transaction(self, tid: str) -> bool:
        """Claim `tid`'s run-out lease, then let the broker abort its open transaction."""
        now = _now_ms()
        if not self._claim(keys=[self.key], args=[tid, now, now + LEASE_MS]):
            return False  # renewed meanwhile, or another worker is on it
        p = producer(self.s, tid)
        try:
            p.init_transactions(30)  # fences the dead producer; its open transaction is aborted
        except KafkaException as exc:
            log.warning("could not take over transactional id %s: %s", tid, exc)
            return False
        finally:
            p.flush(0)
        self.r.hdel(self.key, tid)
        log.warning("aborted the open transaction of %s (its lease ran out: the worker died or stalled)", tid)
        return True

    def release(self) -> None:
        """Called once this worker's producer has finished its last transaction."""
        try:
            self.r.hdel(self.key, self.mine)
        except redis.RedisError:
            pass  # the lease runs out; another worker finds nothing open to abort


def _now_ms() -> int:
    return int(time.time() * 1000)
