"""The control worker's rules in process, beside the charging worker: the balance events
the worker emits are handled by the control worker's jobs on the same in-memory store, the
way faust delivers them (at least once). Its own Redis calls (payments, retries, history,
notification marks) go to fakeredis; the payment gateway is the simulated one."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any, cast

import fakeredis
import pytest

from pipeline.control.gateway import SimulatedGateway
from pipeline.control.ledger_ops import LedgerOps
from pipeline.control.lifecycle import Control, Output
from processors.money import parse_money
from tests.component.conftest import START, World

NOW = START + timedelta(days=2)


def tenant(tid: str, funding: str, method: str = "pm_card_ok", purchased: datetime | None = None) -> dict[str, Any]:
    return {
        "tenant_id": tid,
        "country": "US",
        "currency": "USD",
        "channel": "direct",
        "payment_method": method,
        "users": [{"user_id": "u1", "usage_country": "US", "licences": ["PAYG", "MCOPSTNPP"]}],
        "auto_recharge": {"enabled": True, "amount": "50", "trigger": "10"},
        "funding": [{"lot_id": f"{tid}-L1", "amount": funding, "purchased_at": (purchased or START).isoformat()}],
    }


def calls(tid: str, n: int, minutes: int) -> list[dict[str, Any]]:
    t0 = START + timedelta(hours=1)
    return [
        {
            "call_id": f"{tid}-c{i}",
            "tenant_id": tid,
            "user_id": "u1",
            "call_type": "user_out",
            "caller_number": "+12125550100",
            "callee_number": "+442071838750",
            "start_time": (t0 + timedelta(minutes=i * minutes)).isoformat(),
            "end_time": (t0 + timedelta(minutes=(i + 1) * minutes)).isoformat(),
            "duration_s": minutes * 60,
        }
        for i in range(n)
    ]


class Desk:
    """A charging worker's world and a control worker on the same store and configuration."""

    def __init__(self, tenants: list[dict[str, Any]]) -> None:
        self.world = World(tenants)
        self.now = NOW
        self.redis = fakeredis.FakeRedis()
        w = self.world
        ledger = LedgerOps(cast(Any, w.store), w.codec)
        self.control = Control(
            w.settings,
            w.codec,
            cast(Any, w.directory),
            ledger,
            self.redis,
            SimulatedGateway(self.redis),
            lambda: self.now,
        )
        self.outputs: list[Output] = []
        self.handled: list[bytes] = []  # balance events delivered to the control worker so far

    def charge(self, cdrs: list[dict[str, Any]]) -> None:
        self.world.publish(cdrs)
        self.world.run(self.world.worker())

    def deliver_events(self, times: int = 1) -> None:
        """Every balance event on the topic to the control worker, `times` times each."""
        seen = len(self.handled)
        for record in self.world.broker.records(self.world.settings.topic.balance_events)[seen:]:
            self.handled.append(record.value)
            for _ in range(times):
                self.emit(self.control.handle_event(record.value))

    def emit(self, outputs: list[Output]) -> None:
        """What the control worker produces goes to the topics (events back to itself)."""
        for topic, key, value in outputs:
            self.world.broker.append(topic, key, value)
        self.outputs += outputs

    def events(self, tid: str) -> list[dict[str, Any]]:
        return [e for e in self.world.decoded(self.world.settings.topic.balance_events) if e["tenant_id"] == tid]

    def balance(self, tid: str) -> int:
        state = self.world.store.state(tid)[1]
        assert state is not None
        return state.balance


@pytest.fixture
def desk() -> Desk:
    return Desk([tenant("rich", "12"), tenant("late", "12", method="pm_card_timeout"), tenant("plain", "200")])


def test_a_recharge_delivered_twice_is_paid_once_and_credited_once(desk: Desk) -> None:
    desk.charge(calls("rich", 4, 30))  # 120 minutes to London at the card's rate: below the 10.00 trigger
    before = desk.balance("rich")
    desk.deliver_events(times=2)  # faust delivers at least once
    desk.deliver_events(times=2)  # and the events the control worker emitted come back to it
    # a redelivery emits the same records again: the same event ids, counted once downstream
    kinds = Counter(t for _, t in {(e["event_id"], e["type"]) for e in desk.events("rich")})
    assert kinds["recharge_requested"] == 1 and kinds["recharge_succeeded"] == 1, kinds
    assert desk.redis.llen("gw:captured") == 1
    assert desk.balance("rich") == before + parse_money("50")


def test_a_payment_that_timed_out_is_retried_by_the_timer_with_its_key_and_paid_once(desk: Desk) -> None:
    desk.charge(calls("late", 4, 30))
    before = desk.balance("late")
    desk.deliver_events()
    assert Counter(e["type"] for e in desk.events("late"))["recharge_succeeded"] == 0  # the gateway timed out
    desk.now += timedelta(seconds=desk.world.settings.recharge_backoff_s + 1)
    desk.emit(desk.control.tick())
    desk.deliver_events()
    assert len({e["event_id"] for e in desk.events("late") if e["type"] == "recharge_succeeded"}) == 1
    assert desk.redis.llen("gw:captured") == 1 and desk.balance("late") == before + parse_money("50")


def test_a_funding_command_delivered_twice_funds_once(desk: Desk) -> None:
    desk.charge(calls("plain", 1, 1))
    before = desk.balance("plain")
    command = {
        "command_id": "c1",
        "tenant_id": "plain",
        "kind": "manual",
        "amount": parse_money("60"),
        "currency": "USD",
        "requested_by": "finance",
        "at": desk.now,
    }
    value = desk.world.codec.encode("funding_command", command)
    first, again = desk.control.handle_command(value), desk.control.handle_command(value)
    assert first == again  # the same records, byte for byte: consumers count the event id once
    desk.emit(first)
    assert desk.balance("plain") == before + parse_money("60")
    assert [e["type"] for e in desk.events("plain")].count("funds_added") == 2  # the configured lot, then this


def test_the_timer_expires_a_lot_once_its_year_and_the_lateness_have_passed(desk: Desk) -> None:
    desk.charge(calls("plain", 1, 1) + calls("rich", 1, 1))
    desk.now = START + timedelta(days=365 + 4)  # a lot lasts twelve months; 72 h lateness
    desk.emit(desk.control.tick())
    desk.emit(desk.control.tick())  # a second tick changes nothing
    expired = [e for e in desk.events("plain") if e["type"] == "credits_expired"]
    assert len(expired) == 1 and desk.balance("plain") == 0
    assert len([e for e in desk.events("rich") if e["type"] == "credits_expired"]) == 1


def test_an_offboarded_tenant_stops_charging_and_keeps_its_ledger(desk: Desk) -> None:
    desk.charge(calls("plain", 2, 1))
    command = {
        "command_id": "bye",
        "tenant_id": "plain",
        "kind": "remove",
        "amount": 0,
        "currency": "USD",
        "requested_by": "ops",
        "at": desk.now,
    }
    desk.emit(desk.control.handle_command(desk.world.codec.encode("funding_command", command)))
    removed = [e for e in desk.events("plain") if e["type"] == "tenant_removed"]
    assert len(removed) == 1 and removed[0]["balance"] == desk.balance("plain")
    more = [dict(c, call_id=c["call_id"] + "-after") for c in calls("plain", 1, 1)]
    desk.world.publish(more)
    desk.world.run(desk.world.worker())
    assert [d["reason"] for d in desk.world.dead_letters()] == ["tenant_removed"]
    assert len([c for c in desk.world.charges() if c["tenant_id"] == "plain"]) == 2  # the ledger keeps them


def test_a_funding_reads_and_writes_no_pool_and_loses_none() -> None:
    """The control worker reads a state without its pools (a balance operation draws none):
    the pools the charging worker drew are in the store, unchanged, after a funding."""
    planned = tenant("plan", "20")
    planned["users"][0]["licences"] = ["MCOPSTN1", "MCOPSTNPP"]
    desk = Desk([planned])
    domestic = [dict(c, callee_number="+12125550123") for c in calls("plan", 3, 10)]
    desk.charge(domestic)
    pools = {k: v for k, v in desk.world.store.hashes["plan"].items() if k.startswith(b"p:")}
    assert pools  # the plan's minutes were drawn
    command = {
        "command_id": "c2",
        "tenant_id": "plan",
        "kind": "manual",
        "amount": parse_money("60"),
        "currency": "USD",
        "requested_by": "finance",
        "at": desk.now,
    }
    before = desk.balance("plan")
    reads = len(desk.world.store.reads)
    desk.emit(desk.control.handle_command(desk.world.codec.encode("funding_command", command)))
    funding_reads = desk.world.store.reads[reads:]
    assert desk.balance("plan") == before + parse_money("60")
    assert {k: v for k, v in desk.world.store.hashes["plan"].items() if k.startswith(b"p:")} == pools
    assert funding_reads and all(pools == {"plan": []} for _, pools, _ in funding_reads)  # no pool field read
