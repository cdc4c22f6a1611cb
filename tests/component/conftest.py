"""The component tier: the charging worker in process on the in-memory clients of
`pipeline.dev.testing` (no broker, no Redis): each step and crash point in milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import cdr_to_avro
from pipeline.adapters.files import load_rates
from pipeline.adapters.metrics import ChargingMetrics
from pipeline.charging.runtime import Faults
from pipeline.charging.worker import ChargingWorker
from pipeline.config import Settings
from pipeline.dev import traffic
from pipeline.dev.testing import MemoryBroker, MemoryStore, NoLeases, StaticDirectory
from processors.engine import Engine, event_to_dict
from processors.inputs import cdr_from_dict, tenant_from_dict
from processors.ledger import TenantState
from processors.model import Cdr

# Traffic within the dedup window of any day the suite runs on: the comparisons below hold
# whatever month the calls fall in (streaming and offline rate the same calls).
START = datetime.now(UTC) - timedelta(days=6)


class Crash(BaseException):
    """The process died where the fault was injected: nothing after it runs (a BaseException,
    so no handler of the worker's catches it, as none catches a SIGKILL)."""


def crash() -> None:
    raise Crash


class World:
    """One broker, one Redis and a tenant list, in memory; workers come and go."""

    def __init__(self, tenants: list[dict[str, Any]], batch_size: int = 32) -> None:
        self.settings = Settings(batch_size=batch_size, batch_timeout_ms=0)
        self.codec = Codec(self.settings.schemas_dir)
        self.rates = load_rates(self.settings.rates_file)
        self.broker = MemoryBroker()
        self.store = MemoryStore()
        self.tenants = tenants
        self.directory = StaticDirectory(tenant_from_dict(t) for t in tenants)
        self.published: list[dict[str, Any]] = []
        self.registry = CollectorRegistry()

    def publish(self, cdrs: list[dict[str, Any]]) -> None:
        for d in cdrs:
            cdr = cdr_from_dict(d)
            assert isinstance(cdr, Cdr), cdr
            value = self.codec.encode("cdr", cdr_to_avro(cdr))
            self.broker.append(self.settings.topic.cdr, cdr.tenant_id.encode(), value)
        self.published += cdrs

    def publish_raw(self, key: bytes, value: bytes) -> None:
        self.broker.append(self.settings.topic.cdr, key, value)

    def worker(self, crash_after: str = "", transactional_id: str = "w") -> ChargingWorker:
        self.registry = CollectorRegistry()
        producer = self.broker.producer(transactional_id)
        producer.init_transactions()
        w = ChargingWorker(
            self.settings,
            self.codec,
            cast(Any, self.store),
            self.rates,
            ChargingMetrics(self.registry),
            self.directory,
            cast(Any, self.broker.consumer(self.settings.group_id)),
            cast(Any, producer),
            NoLeases(),
            transactional_id,
            Faults(crash_after, kill=crash),
        )
        w._subscribe()
        return w

    def run(self, worker: ChargingWorker) -> int:
        """Batches until none comes; returns how many."""
        batches = 0
        while worker.run_once():
            batches += 1
        return batches

    def run_crashing(self, crash_after: str) -> None:
        """A worker that dies at the fault, then a new one that runs to the end."""
        dead = self.worker(crash_after)
        with pytest.raises(Crash):
            self.run(dead)
        dead.state.close()
        self.run(self.worker())

    def decoded(self, topic: str) -> list[dict[str, Any]]:
        return [self.codec.decode(r.value)[1] for r in self.broker.records(topic)]

    def charges(self) -> list[dict[str, Any]]:
        return self.decoded(self.settings.topic.charges)

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.decoded(self.settings.topic.dlq)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def offline(self) -> tuple[dict[str, Any], set[str], dict[str, TenantState]]:
        """What offline rating says of every call published: charge per call id, event
        ids, every tenant's state."""
        engine = Engine([tenant_from_dict(t) for t in self.tenants], self.rates)
        out: dict[str, Any] = {}
        events: set[str] = set()
        for d in self.published:
            result = engine.process(cast(Cdr, cdr_from_dict(d)))
            assert result is not None
            charge, evs = result
            out[charge.call_id] = charge
            events |= {event_to_dict(e)["event_id"] for e in evs}
        return out, events, engine.states


@pytest.fixture
def world() -> World:
    tenants = traffic.tenants(5, seed=3, start=START - timedelta(days=20))
    w = World(tenants)
    w.publish(traffic.cdrs(tenants, 200, seed=5, start=START, span=timedelta(days=4)))
    return w
