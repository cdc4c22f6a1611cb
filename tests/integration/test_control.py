"""The control worker (faust) end to end: auto-recharge, failing cards, zero balance and
service state, funding, expiry on a fake clock, notifications by email, the HTTP API."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.adapters.kafka import producer
from pipeline.adapters.store import tenant_key
from pipeline.config import Settings
from pipeline.control.gateway import SimulatedGateway
from tests.integration.conftest import Inbox
from tests.integration.harness import (
    ControlProc,
    Env,
    calls,
    events,
    service,
    tenant,
    wait_exit,
    wait_for,
)
from tests.integration.servers import RedisProcs, free_ports, start_broker, wait_port

pytestmark = pytest.mark.integration


def test_auto_recharge_pays_once_credits_the_lot_and_emails_admins(env: Env, smtp: Inbox) -> None:
    tid = f"{env.tag}rich"
    # 5.00 of credit, 0.019/min (example card, US->US): 10 calls x 20 min = 3.80 -> below the 2.00 trigger
    env.publish([tenant(tid, "5", auto={"enabled": True, "amount": "25", "trigger": "2"})], calls(tid, 10, 20))
    control = ControlProc(env, smtp).start()
    assert wait_exit(env.worker()) == 0
    wait_for(lambda: any(e["type"] == "recharge_succeeded" for e in events(env, tid)), timeout=60)
    ev = events(env, tid)
    requested = [e for e in ev if e["type"] == "recharge_requested"]
    assert len(requested) == 1
    gw = SimulatedGateway(redis.Redis.from_url(env.settings.redis))
    paid = [p for p in gw.captured() if p["tenant_id"] == tid]
    assert len(paid) == 1 and paid[0]["amount"] == 25_000_000
    ok = next(e for e in ev if e["type"] == "recharge_succeeded")
    assert ok["attributes"]["invoice_id"] == f"INV-{requested[0]['request_id']}"
    status, bal = control.get(f"/v1/tenants/{tid}/balance")
    assert status == 200
    assert bal["balance"] == "26.20"  # 5.00 - 3.80 + 25.00
    assert [lot["lot_id"] for lot in bal["lots"]] == [f"{tid}-L1", requested[0]["request_id"]]
    assert bal["recharge_in_flight"] is None
    wait_for(lambda: len([m for m in smtp.messages if "recharged" in m["subject"]]) >= 2, timeout=30)
    recipients = sorted(r for m in smtp.messages if "recharged" in m["subject"] for r in m["to"])
    assert recipients == [f"admin1@{tid}.example", f"admin2@{tid}.example"]  # admins only, once each
    status, tx = control.get(f"/v1/tenants/{tid}/transactions")
    assert status == 200 and {t["type"] for t in tx["transactions"]} >= {"charge", "recharge_succeeded"}
    metrics = control.get("/metrics", token=None)[1].decode()
    for line in (
        "callcharge_recharge_attempts_total 1.0",
        "callcharge_recharges_succeeded_total 1.0",
        'callcharge_recharge_failures_total{reason="card_declined"} 0.0',
        "callcharge_gateway_seconds_count 1.0",
    ):
        assert line in metrics, line
    assert float(metrics.split('callcharge_emails_total{outcome="sent"} ')[1].split()[0]) >= 2
    control.kill()
    # the ledger alone gives back the same state: the recharge's lot, nothing in flight
    check = env.cli("rebuild", "--check", "--tenant", tid)
    assert (check.returncode, check.stdout.splitlines()[0]) == (0, "1 tenants: 1 match the ledger, 0 differ"), check


def test_failing_card_backs_off_and_never_charges(env: Env, smtp: Inbox) -> None:
    tid = f"{env.tag}expired"
    env.publish(
        [tenant(tid, "3", method="pm_card_expired", auto={"enabled": True, "amount": "25", "trigger": "2"})],
        calls(tid, 4, 20),
    )
    control = ControlProc(env, smtp).start()
    assert wait_exit(env.worker()) == 0
    wait_for(lambda: sum(e["type"] == "recharge_failed" for e in events(env, tid)) >= 2, timeout=60)
    failures = [e for e in events(env, tid) if e["type"] == "recharge_failed"]
    assert failures[0]["attributes"]["reason"] == "card_expired"
    t1 = datetime.fromisoformat(failures[0]["attributes"]["next_attempt_at"])
    assert t1 > failures[0]["at"]  # backed off, not a tight loop
    assert failures[1]["at"] >= t1 - timedelta(milliseconds=50)
    gw = SimulatedGateway(redis.Redis.from_url(env.settings.redis))
    assert [p for p in gw.captured() if p["tenant_id"] == tid] == []
    assert len([e for e in events(env, tid) if e["type"] == "recharge_requested"]) == 1
    wait_for(lambda: any("failed" in m["subject"] for m in smtp.messages), timeout=30)
    control.kill()


def test_zero_balance_blocks_service_and_funding_restores_it(env: Env, smtp: Inbox) -> None:
    tid = f"{env.tag}zero"
    env.publish([tenant(tid, "1")], calls(tid, 3, 20))  # 1.00 - 3 x 0.38 -> -0.14
    control = ControlProc(env, smtp).start()
    assert wait_exit(env.worker()) == 0
    wait_for(lambda: (service(env, tid) or {}).get("billable_calls") is False, timeout=60)
    assert service(env, tid)["tollfree_numbers"] is False
    wait_for(lambda: any("reached zero" in m["subject"] for m in smtp.messages), timeout=30)
    status, reply = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "10", "command_id": "cmd-0"})
    assert status == 422 and "minimum purchase of 50.00 USD" in reply["error"]  # a direct tenant's manual funding
    status, reply = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "50", "command_id": "cmd-1"})
    assert status == 202 and reply["command_id"] == "cmd-1"
    again = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "50", "command_id": "cmd-1"})
    assert again[0] == 202  # the same command twice funds once
    other = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "60", "command_id": "cmd-1"})
    assert other[0] == 409 and other[1]["original"]["amount"] == "50.00"  # reused with another body
    wait_for(lambda: (service(env, tid) or {}).get("billable_calls") is True, timeout=60)
    time.sleep(1)
    status, bal = control.get(f"/v1/tenants/{tid}/balance")
    assert bal["balance"] == "49.86"  # deficit 0.14 covered first
    added = [e for e in events(env, tid) if e["type"] == "funds_added" and e["lot_id"] == "cmd-1"]
    assert len({e["event_id"] for e in added}) == 1
    assert added[0]["attributes"]["deficit_covered"] == "0.14"
    assert added[0]["attributes"]["invoice_id"] == "INV-cmd-1"
    # a corrupted state is refused, not shown as an empty balance; rebuilt, it is back
    redis.Redis.from_url(env.settings.redis).hset(tenant_key(tid), "state", "[]")
    status, reply = control.get(f"/v1/tenants/{tid}/balance")
    assert status == 503 and f"callcharge rebuild --tenant {tid}" in reply["error"]
    fixed = env.cli("rebuild", "--tenant", tid)
    assert "rebuilt 1 tenant states" in fixed.stdout, fixed
    status, bal = control.get(f"/v1/tenants/{tid}/balance")
    assert (status, bal["balance"], [lot["lot_id"] for lot in bal["lots"]]) == (200, "49.86", [f"{tid}-L1", "cmd-1"])
    control.kill()


def test_expiry_on_a_fake_clock_forfeits_the_remainder(env: Env, smtp: Inbox) -> None:
    tid = f"{env.tag}old"
    broken = [f"{env.tag}broken{i}" for i in range(3)]
    env.publish(
        [tenant(b, "5") for b in broken] + [tenant(tid, "7.5", purchased=datetime.now(UTC) - timedelta(days=300))],
        [c for t in [*broken, tid] for c in calls(t, 1, 10)],
    )
    assert wait_exit(env.worker()) == 0  # 7.50 - 0.19 = 7.31 left on the lot
    r = redis.Redis.from_url(env.settings.redis)
    for b in broken:  # unreadable states hold up nobody else's expiry
        r.hset(tenant_key(b), "state", "[]")
    control = ControlProc(env, smtp, clock_offset_s=70 * 86400).start()
    wait_for(lambda: any(e["type"] == "credits_expired" for e in events(env, tid)), timeout=60)
    expired = [e for e in events(env, tid) if e["type"] == "credits_expired"]
    assert len(expired) == 1 and expired[0]["amount"] == 7_310_000 and expired[0]["lot_id"] == f"{tid}-L1"
    wait_for(lambda: (service(env, tid) or {}).get("billable_calls") is False, timeout=30)
    control.kill()
    check = env.cli("rebuild", "--check", "--tenant", tid)  # the forfeited lot, from the ledger alone
    assert (check.returncode, check.stdout.splitlines()[0]) == (0, "1 tenants: 1 match the ledger, 0 differ"), check


def test_api_refuses_without_token_and_explains_bad_requests(env: Env, smtp: Inbox) -> None:
    tid = f"{env.tag}api"
    env.publish([tenant(tid, "5"), {**tenant(f"{tid}-mca", "5", channel="mca")}], calls(tid, 1, 1))
    control = ControlProc(env, smtp).start()
    assert control.get(f"/v1/tenants/{tid}/balance", token=None)[0] == 401
    assert control.get(f"/v1/tenants/{tid}/balance", token="wrong")[0] == 401
    assert control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "5"}, token=None)[0] == 401
    status, body = control.call("POST", f"/v1/tenants/{tid}/funds", b"{not json")
    assert status == 400 and "JSON" in body["error"]
    status, body = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "1.0000001"})
    assert status == 400 and "6 decimal" in body["error"]
    status, body = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": -5})
    assert status == 400
    status, body = control.call("POST", f"/v1/tenants/{tid}-mca/funds", {"amount": "5"})
    assert status == 409 and "cannot buy credits" in body["error"]
    status, body = control.call(
        "PUT", f"/v1/tenants/{tid}-mca/auto-recharge", {"enabled": True, "amount": "10", "trigger": "5"}
    )
    assert status == 409 and "must be off" in body["error"]
    # The same refusal for a command another system put straight on the commands topic:
    # recorded in the history, with no money moved.
    env.produce_record(
        env.settings.topic.commands,
        f"{tid}-mca",
        "funding_command",
        {
            "command_id": f"{tid}-partner-1",
            "tenant_id": f"{tid}-mca",
            "kind": "manual",
            "amount": 5_000_000,
            "currency": "USD",
            "requested_by": "partner-portal",
            "at": datetime.now(UTC),
        },
    )

    def refusals() -> list[dict[str, Any]]:
        rows = control.get(f"/v1/tenants/{tid}-mca/transactions")[1]["transactions"]
        return [r for r in rows if r["type"] == "funding_refused"]

    wait_for(refusals, timeout=30)
    (refused,) = refusals()
    assert refused["type"] == "funding_refused" and "cannot buy credits" in refused["reason"]
    assert refused["amount"] == "0.00" and refused["requested"] == "5.00"
    assert control.get(f"/v1/tenants/{tid}-mca/balance")[1]["balance"] == "5.00"
    assert control.get("/v1/tenants/nobody/balance")[0] == 404
    status, body = control.call("POST", f"/v1/tenants/{tid}/authorize", {"user_id": "u1"})
    assert status == 400 and "number" in body["error"]
    status, body = control.call("POST", f"/v1/tenants/{tid}/authorize", {"user_id": "u1", "number": "+12125550123"})
    assert status == 200 and body["allowed"] is True and body["bucket"] == "billable"
    assert body["max_minutes"] == 5_000_000 // 19_000  # 5.00 at 0.019/min
    status, body = control.call(
        "PUT", f"/v1/tenants/{tid}/auto-recharge", {"enabled": True, "amount": "20", "trigger": "5"}
    )
    assert status == 202
    wait_for(lambda: control.get(f"/v1/tenants/{tid}/auto-recharge")[1].get("enabled") is True, timeout=30)
    assert control.get("/health")[0] == 200
    status, metrics = control.get("/metrics", token=None)
    assert status == 200
    assert b'callcharge_api_requests_total{route="/v1/tenants/{tenant_id}/balance",status="401"} 2.0' in metrics
    assert b'callcharge_api_requests_total{route="/v1/tenants/{tenant_id}/funds",status="401"} 1.0' in metrics
    control.kill()


@pytest.mark.slow
def test_control_restarted_at_random_moments_pays_and_mails_once(env: Env, smtp: Inbox) -> None:
    tids = [f"{env.tag}r{i}" for i in range(4)]
    tenants = [
        tenant(
            t,
            "3",
            method="pm_card_timeout" if i % 2 else "pm_card_ok",
            auto={"enabled": True, "amount": "10", "trigger": "2"},
        )
        for i, t in enumerate(tids)
    ]
    env.publish(tenants, [c for t in tids for c in calls(t, 6, 20)])
    worker = env.worker()
    for delay in (3.0, 5.0, 2.0):
        control = ControlProc(env, smtp)
        control.start()
        time.sleep(delay)
        control.kill()
    control = ControlProc(env, smtp).start()
    assert wait_exit(worker) == 0
    wait_for(
        lambda: (
            sum(
                e["type"] == "recharge_succeeded"
                for e in env.read(env.settings.topic.balance_events)
                if e["tenant_id"] in tids
            )
            >= len(tids)
        ),
        timeout=90,
    )
    time.sleep(2)
    gw = SimulatedGateway(redis.Redis.from_url(env.settings.redis))
    paid = Counter(p["tenant_id"] for p in gw.captured() if p["tenant_id"] in tids)
    assert paid == Counter({t: 1 for t in tids})  # one payment per request, timeouts included
    ids = Counter(m["id"] for m in smtp.messages)
    assert [k for k, v in ids.items() if v > 1] == []  # no email twice
    assert sum("recharged" in m["subject"] for m in smtp.messages) == 2 * len(tids)
    control.kill()


def test_both_workers_stop_cleanly_on_sigterm_within_seconds(env: Env, smtp: Inbox) -> None:
    """SIGTERM (a rollout, a scale-down) stops each worker within a few seconds, even with a
    funding command that cannot be applied in the stream (it is dead-lettered, not retried
    for ever) and a charging worker busy with a backlog."""
    tid = f"{env.tag}term"
    env.publish([tenant(tid, "5")], calls(tid, 400, 30))
    env.produce_record(
        env.settings.topic.commands,
        tid,
        "funding_command",
        {  # past the money range: refused with its reason, the stream goes on
            "command_id": f"{tid}-huge",
            "tenant_id": tid,
            "kind": "manual",
            "amount": 2**62,
            "currency": "USD",
            "requested_by": "batch-import",
            "at": datetime.now(UTC),
        },
    )
    control = ControlProc(env, smtp).start()
    worker = env.worker(idle=None)
    wait_for(lambda: any(e["type"] == "funding_refused" for e in events(env, tid)), timeout=60)
    refused = next(e for e in events(env, tid) if e["type"] == "funding_refused")
    assert "maximum" in refused["attributes"]["reason"]
    for proc in (worker, control.proc):
        assert proc is not None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, timeout=15) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 10


def test_a_control_record_that_keeps_failing_is_dead_lettered_and_the_stream_goes_on(env: Env, smtp: Inbox) -> None:
    tid = f"{env.tag}poison"
    env.publish([tenant(tid, "5")], calls(tid, 1, 1))
    p = producer(env.settings)
    p.produce(env.settings.topic.commands, key=tid.encode(), value=b"\xc3\x01 not a funding command")
    assert p.flush(10) == 0
    env.produce_record(
        env.settings.topic.commands,
        tid,
        "funding_command",
        {
            "command_id": f"{tid}-after",
            "tenant_id": tid,
            "kind": "manual",
            "amount": 60_000_000,
            "currency": "USD",
            "requested_by": "finance",
            "at": datetime.now(UTC),
        },
    )
    control = ControlProc(env, smtp).start()
    wait_for(lambda: any(e.get("lot_id") == f"{tid}-after" for e in events(env, tid)), timeout=90)
    letters = [d for d in env.read(env.settings.topic.dlq) if d["source_topic"] == env.settings.topic.commands]
    assert len(letters) == 1 and letters[0]["reason"] == "unprocessable"
    assert letters[0]["value"] == b"\xc3\x01 not a funding command"  # the original bytes, to re-drive
    control.kill()


@contextlib.contextmanager
def own_servers(base: Settings, work: Path) -> Iterator[tuple[Env, subprocess.Popen[bytes], RedisProcs]]:
    """A broker and a Redis of this test's own (the test may kill them), and an Env on them;
    whatever still runs is stopped at the end."""
    broker_port, redis_port = free_ports(2)
    broker = start_broker(broker_port, work)
    servers = RedisProcs()
    servers.start(redis_port, work, "--port", str(redis_port))
    try:
        wait_port(broker_port)
        wait_port(redis_port)
        own = replace(base, kafka_bootstrap=f"127.0.0.1:{broker_port}", redis_url=f"redis://127.0.0.1:{redis_port}/0")
        yield Env.make(own, work), broker, servers
    finally:
        if broker.poll() is None:
            broker.kill()
            broker.wait()
        servers.stop()


def test_sigterm_stops_the_control_worker_even_with_broker_and_redis_gone(
    base_settings: Settings, tmp_path: Path, smtp: Inbox
) -> None:
    """A stop must not wait for the servers: with the broker and Redis both gone, faust's
    consumer can hang in its own shutdown. The worker ends itself `SHUTDOWN_TIMEOUT_S` after
    the stop began, saying why; its records are redelivered to the next worker."""
    with own_servers(base_settings, tmp_path) as (env, _, _):
        control = ControlProc(env, smtp, CALLCHARGE_SHUTDOWN_TIMEOUT_S="4").start()
        wait_for(lambda: "partition assignments" in control.log_text(), timeout=30)
        time.sleep(2)
    time.sleep(8)  # both gone; the worker is retrying them
    assert control.proc is not None
    started = time.monotonic()
    control.proc.send_signal(signal.SIGTERM)
    wait_exit(control.proc, timeout=30)
    assert time.monotonic() - started < 15
    assert "exiting now" in control.log_text() or "Closing event loop" in control.log_text()


def test_funding_is_accepted_only_once_the_broker_has_it(base_settings: Settings, tmp_path: Path, smtp: Inbox) -> None:
    """202 means kept: with the broker gone, a funding is answered 503 with the reason and
    the command id to send again, never 202."""
    with own_servers(base_settings, tmp_path) as (env, broker, _):
        tid = f"{env.tag}kept"
        env.publish([tenant(tid, "5")], [])
        control = ControlProc(env, smtp).start()
        status, _ = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "60", "command_id": "c-up"})
        assert status == 202
        broker.kill()
        broker.wait()
        status, reply = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "60", "command_id": "c-down"})
        assert status == 503, reply
        assert reply["command_id"] == "c-down" and "command not kept" in reply["error"]
        assert "send it again with the same command_id" in reply["error"]
        assert "funding c-down of" not in control.log_text()  # never logged as accepted
        status, health = control.get("/health", token=None)  # not ready: the broker is away
        assert status == 503 and health["redis"] == "ok" and health["broker"] != "ok", health
        assert control.get("/livez", token=None)[0] == 200  # alive: a restart would not help
        control.kill()
