"""Integration harness: an isolated slice of the real broker and Redis per test."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from pipeline import wiring
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.kafka import create_topics, producer
from pipeline.config import Settings
from pipeline.dev.mailsink import MailSink, free_port
from pipeline.ops.publish import ingest, publish_tenants
from pipeline.reports.readback import read_all
from processors.engine import Engine, event_to_dict
from processors.inputs import cdr_from_dict, tenant_from_dict
from processors.ledger import TenantState
from processors.rating import RateCard
from processors.replay import differences

REPO = Path(__file__).resolve().parents[2]
_NEXT_DB = 0  # Redis databases 1-15 of the session's embedded Redis, one per test in turn


@dataclass
class Env:
    settings: Settings
    work: Path
    logs: dict[int, Path] = field(default_factory=dict)  # worker pid -> its log file

    @classmethod
    def make(cls, base: Settings, work: Path, **overrides: Any) -> Env:
        """A slice of the session's stack for one test: its own topics, group and
        transactional ids, and (on the embedded stack) its own emptied Redis database, so
        a check over everything Redis holds sees this test's deployment only."""
        tag = uuid.uuid4().hex[:8]
        if not base.redis_url:
            global _NEXT_DB
            _NEXT_DB = _NEXT_DB % 15 + 1
            overrides.setdefault("redis_url", f"redis://127.0.0.1:{base.redis_port}/{_NEXT_DB}")
        slice_defaults: dict[str, Any] = {
            "cdr_partitions": 4,
            "charges_partitions": 4,
            "other_partitions": 2,
            "batch_size": 200,
            "metrics_port": 0,
        }
        s = replace(
            base,
            topic_prefix=f"t{tag}-",
            group_id=f"g{tag}",
            transactional_id_prefix=f"x{tag}",
            **{**slice_defaults, **overrides},
        )
        if not base.redis_url and not overrides.get("redis_mode") == "cluster":
            redis.Redis.from_url(s.redis).flushdb()
        create_topics(s)
        return cls(s, work)

    @property
    def tag(self) -> str:
        return self.settings.topic_prefix

    def environ(self, **extra: str) -> dict[str, str]:
        env = self.settings.to_env(metrics_port=0, log_level="INFO")  # logs stay in the test's work dir
        env.update(extra)
        return env

    def worker(
        self,
        idle: float | None = 3.0,
        crash_after: str = "",
        log_name: str = "worker",
        extra: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """`callcharge charge`, exiting once idle for `idle` s and the group has charged the
        whole topic (idle alone is not enough: `ChargingWorker.run`); None runs until killed."""
        cmd = [sys.executable, "-m", "pipeline.cli", "charge"]
        if idle is not None:
            cmd += ["--exit-when-idle", str(idle)]
        path = self.work / f"{log_name}-{uuid.uuid4().hex[:4]}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.environ(CALLCHARGE_CRASH_AFTER=crash_after, **(extra or {})),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.logs[proc.pid] = path
        return proc

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`callcharge ARGS` as an operator runs it against this slice of the stack."""
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=REPO,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def publish(self, tenants: list[dict[str, Any]], cdrs: list[dict[str, Any]]) -> None:
        publish_tenants(self.settings, tenants)
        self.ingest(cdrs)

    def ingest(self, cdrs: list[dict[str, Any]]) -> None:
        path = self.work / f"cdrs-{uuid.uuid4().hex[:6]}.jsonl"
        path.write_text("".join(json.dumps(c) + "\n" for c in cdrs))
        sent, bad = ingest(self.settings, path)
        assert bad == 0 and sent == len(cdrs)

    def produce_record(self, topic: str, key: str, kind: str, record: dict[str, Any]) -> None:
        """One Avro record straight onto a topic, as another system would put it there."""
        p = producer(self.settings)
        p.produce(topic, key=key.encode(), value=Codec(self.settings.schemas_dir).encode(kind, record))
        assert p.flush(30) == 0

    def read(self, topic: str, min_count: int = 0, timeout: float = 60) -> list[dict[str, Any]]:
        codec = Codec(self.settings.schemas_dir)
        return [r for _, r in read_all(self.settings, topic, codec, timeout=timeout, min_count=min_count)]

    def charges(self, min_count: int = 0) -> list[dict[str, Any]]:
        return self.read(self.settings.topic.charges, min_count)


def offline(
    tenants: list[dict[str, Any]], cdrs: list[dict[str, Any]], rates_file: Path
) -> tuple[dict[str, Any], set[str], dict[str, TenantState]]:
    """The offline engine's result per call id, its event ids and every tenant's state."""
    engine = Engine([tenant_from_dict(t) for t in tenants], RateCard.from_csv_text(rates_file.read_text()))
    out: dict[str, Any] = {}
    events: set[str] = set()  # configured funding is applied by the calls, as the worker does
    for d in cdrs:
        cdr = cdr_from_dict(d)
        result = engine.process(cdr)  # type: ignore[arg-type]
        assert result is not None
        charge, evs = result
        out[charge.call_id] = charge
        events |= {event_to_dict(e)["event_id"] for e in evs}
    return out, events, engine.states


def totals(charges: list[Any]) -> dict[tuple[str, str], tuple[int, int]]:
    """(tenant, bucket) -> (minutes, micro-units) from charge records or Charge objects."""
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for c in charges:
        segs = c["segments"] if isinstance(c, dict) else [s.to_dict() for s in c.segments]
        tid = c["tenant_id"] if isinstance(c, dict) else c.tenant_id
        for s in segs:
            acc[(tid, s["bucket"])][0] += s["minutes"]
            acc[(tid, s["bucket"])][1] += s["amount"]
    return {k: (v[0], v[1]) for k, v in acc.items()}


def assert_exact(
    env: Env,
    tenants: list[dict[str, Any]],
    cdrs: list[dict[str, Any]],
    charges: list[dict[str, Any]],
    aborted_batches: int = 0,
) -> None:
    """Streaming result == offline result: per call, per tenant and bucket, and every
    tenant's balance state in Redis; no call debited twice, none lost.

    `aborted_batches`: how many batches may show twice in the output topics, as identical
    copies. Only tests that SIGKILL workers mid-run pass it (one per kill): the embedded
    broker does not hide the records of an aborted transaction from read_committed readers,
    so a worker killed between its records reaching the broker and its commit leaves them
    visible beside the redelivered batch's (Apache Kafka hides them). A copy that differs,
    or more copies than that, fails; Redis must hold exactly the offline state either way.
    """
    ids = Counter(c["call_id"] for c in charges)
    dupes = [k for k, v in ids.items() if v > 1]
    _only_identical_copies("calls charged twice", dupes, charges, "call_id", aborted_batches * env.settings.batch_size)
    expected, expected_events, states = offline(tenants, cdrs, env.settings.rates_file)
    missing = set(expected) - set(ids)
    assert not missing, f"{len(missing)} calls lost, e.g. {sorted(missing)[:3]}"
    unique = list({c["call_id"]: c for c in charges}.values())
    for c in unique:
        e = expected[c["call_id"]]
        assert (c["classification"], c["amount"], c["balance_after"]) == (
            e.classification,
            e.amount,
            e.balance_after,
        ), c["call_id"]
    assert totals(unique) == totals(list(expected.values()))
    events = env.read(env.settings.topic.balance_events)
    got_events = Counter(e["event_id"] for e in events)
    twice = [k for k, v in got_events.items() if v > 1]
    _only_identical_copies(
        "balance events twice", twice, events, "event_id", aborted_batches * env.settings.batch_size * 4
    )
    assert set(got_events) == expected_events
    store = wiring.store(env.settings)
    charged = {c["tenant_id"] for c in unique}
    for tid, state in states.items():  # the money: debited once per call, whatever the output shows
        if tid in charged:
            assert differences(store.state(tid)[1], state) == [], tid


def _only_identical_copies(what: str, dupes: list[str], records: list[dict[str, Any]], key: str, allowed: int) -> None:
    assert len(dupes) <= allowed, f"{len(dupes)} {what}, e.g. {dupes[:3]}"
    copies: dict[str, set[str]] = defaultdict(set)
    wanted = set(dupes)
    for r in records:
        if r[key] in wanted:
            copies[r[key]].add(json.dumps(r, sort_keys=True, default=str))
    differing = [k for k, v in copies.items() if len(v) > 1]
    assert not differing, f"{what} with different content, e.g. {differing[:3]}"


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 180) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raise AssertionError("worker did not finish in time") from None


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def wait_for(predicate: Any, timeout: float = 60, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError("condition not reached in time")


# Every worker process a test starts (ControlProc and the like) is SIGKILLed after the test,
# whatever it asserted (tests/integration/conftest.py): a leftover worker keeps retrying a
# broker that is gone.
RUNNING: list[Any] = []


TOKEN = "test-token-123"


class ControlProc:
    def __init__(self, env: Env, smtp: MailSink, clock_offset_s: float = 0.0, **extra: str) -> None:
        self.env = env
        self.command = ["-m", "pipeline.cli", "control"]
        if clock_offset_s:
            self.command = ["-m", "tests.integration.fake_clock_control", str(clock_offset_s)]
        self.port = free_port()
        self.extra = {
            "CALLCHARGE_HTTP_PORT": str(self.port),
            "CALLCHARGE_API_TOKEN": TOKEN,
            "CALLCHARGE_SMTP_PORT": str(smtp.port),  # type: ignore[attr-defined]
            "CALLCHARGE_CONTROL_TICK_S": "0.5",
            "CALLCHARGE_RECHARGE_BACKOFF_S": "1",
            "CALLCHARGE_RECHARGE_BACKOFF_CAP_S": "2",
            **extra,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControlProc:
        self.log_path = self.env.work / f"control-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.command],
                cwd=REPO,
                env=self.env.environ(**self.extra),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        RUNNING.append(self)
        wait_for(lambda: self.get("/health")[0] == 200, timeout=60)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        kill(self.proc)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw[:1] == b"{" else raw
        except OSError:
            return 0, None

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("GET", path, **kw)


def tenant(
    tid: str,
    funding: str,
    method: str = "pm_card_ok",
    channel: str = "direct",
    auto: dict[str, Any] | None = None,
    purchased: datetime | None = None,
) -> dict[str, Any]:
    purchased = purchased or datetime.now(UTC) - timedelta(days=5)
    return {
        "tenant_id": tid,
        "country": "US",
        "currency": "USD",
        "channel": channel,
        "payment_method": method,
        "users": [
            {"user_id": "u1", "usage_country": "US", "licences": ["PAYG", "MCOPSTNPP"]},
            {
                "user_id": "admin1",
                "usage_country": "US",
                "licences": [],
                "roles": ["Teams Administrator"],
                "email": f"admin1@{tid}.example",
            },
            {
                "user_id": "admin2",
                "usage_country": "US",
                "licences": [],
                "roles": ["Billing Administrator"],
                "email": f"admin2@{tid}.example",
            },
            {
                "user_id": "nobody",
                "usage_country": "US",
                "licences": [],
                "roles": ["Reader"],
                "email": f"reader@{tid}.example",
            },
        ],
        **({"auto_recharge": auto} if auto else {}),
        "funding": [{"lot_id": f"{tid}-L1", "amount": funding, "purchased_at": purchased.isoformat()}],
    }


def calls(tid: str, n: int, minutes: int, start: int = 0) -> list[dict[str, Any]]:
    t0 = datetime.now(UTC) - timedelta(hours=2)
    out = []
    for i in range(start, start + n):
        s = t0 + timedelta(minutes=i)
        out.append(
            {
                "call_id": f"{tid}-c{i}",
                "tenant_id": tid,
                "user_id": "u1",
                "call_type": "user_out",
                "caller_number": "+12125550100",
                "callee_number": "+12125550123",
                "start_time": s.isoformat(),
                "end_time": (s + timedelta(minutes=minutes)).isoformat(),
                "duration_s": minutes * 60,
            }
        )
    return out


def events(env: Env, tid: str) -> list[dict[str, Any]]:
    return [e for e in env.read(env.settings.topic.balance_events) if e["tenant_id"] == tid]


def service(env: Env, tid: str) -> dict[str, Any] | None:
    states = [s for s in env.read(env.settings.topic.service_state) if s["tenant_id"] == tid]
    return states[-1] if states else None
