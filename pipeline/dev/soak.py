"""`callcharge soak` (`make soak`): a long adversarial run on a fresh embedded stack.

200 000 CDRs of 40 tenants with 1 % hostile messages mixed in (random bytes, a valid header
before garbage, unknown tenants, negative durations, letters in numbers, starts in the far
future, the same call published twice); two charging workers SIGKILLed at random moments 20
times (each restarted), a Redis restart half way, the control worker killed during
recharges. Then: every call charged once and exactly as offline rating prices it, Redis
agrees with the ledger, no payment taken twice for one recharge, no email sent twice.
Figures go to bench/soak.json; the exit status is non-zero on any drift, duplicate, loss,
double payment or double email.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import wiring
from pipeline.adapters.avro.codec import HEADER_LEN, Codec
from pipeline.adapters.avro.records import cdr_to_avro
from pipeline.adapters.kafka import create_topics, producer
from pipeline.config import Settings
from pipeline.dev import stack, traffic
from pipeline.dev.mailsink import MailSink, free_port
from pipeline.ops.publish import publish_tenants
from pipeline.ops.rebuild import rebuild
from pipeline.reports.readback import read_all
from processors.engine import Engine
from processors.inputs import Rejected, cdr_from_dict, tenant_from_dict
from processors.model import Cdr
from processors.rating import RateCard

METHODS = ["pm_card_ok", "pm_card_ok", "pm_card_timeout", "pm_card_expired", "pm_card_declined"]


def _hostile(
    rng: random.Random, codec: Codec, good: list[dict[str, Any]], n: int
) -> list[tuple[str, bytes, str, dict[str, Any] | None]]:
    """(key, value, kind, the CDR it carries when it is a good one) of n hostile messages."""
    out = []
    valid = codec.encode("cdr", cdr_to_avro(cdr_from_dict(good[0])))  # type: ignore[arg-type]
    for i in range(n):
        kind = rng.choice(["bytes", "garbage_after_header", "unknown_tenant", "negative", "letters", "future", "dup"])
        base = dict(rng.choice(good))
        if kind == "bytes":
            value = rng.randbytes(rng.randrange(0, 200))
        elif kind == "garbage_after_header":
            value = valid[:HEADER_LEN] + rng.randbytes(rng.randrange(1, 60))
        else:
            record = cdr_to_avro(cdr_from_dict(base))  # type: ignore[arg-type]
            if kind == "unknown_tenant":
                record.update(call_id=f"hostile-{i}", tenant_id="nobody-configured")
            elif kind == "negative":
                record.update(call_id=f"hostile-{i}", duration_s=-5)
            elif kind == "letters":
                record.update(call_id=f"hostile-{i}", callee_number="+1212ABC9994")
            elif kind == "future":
                start = datetime(9999, 12, 31, tzinfo=UTC)
                record.update(call_id=f"hostile-{i}", start_time=start, end_time=start, duration_s=0)
            # "dup": the very same call published again (another offset)
            value = codec.encode("cdr", record)
        out.append((str(base["tenant_id"]), value, kind, base if kind == "dup" else None))
    return out


Message = tuple[str, bytes, str, dict[str, Any] | None]  # key, value, kind, the CDR row (good ones)


def _publish_traffic(
    settings: Settings, rng: random.Random, seed: int, n_cdrs: int
) -> tuple[list[dict[str, Any]], list[Message], list[Message]]:
    """40 tenants (auto-recharge on, payment methods mixed) and their CDRs with 1 % hostile
    messages among them, published: (tenants, every message in order, the hostile ones)."""
    tenants = traffic.tenants(40, seed=seed)
    for t in tenants:
        t["payment_method"] = rng.choice(METHODS)
        if "auto_recharge" in t:
            t["auto_recharge"]["enabled"] = True
    publish_tenants(settings, tenants)
    good = traffic.cdrs(tenants, n_cdrs, seed=seed + 1)
    codec = Codec(settings.schemas_dir)
    hostile = _hostile(rng, codec, good, n_cdrs // 100)
    messages: list[Message] = [
        (c["tenant_id"], codec.encode("cdr", cdr_to_avro(cdr_from_dict(c))), "good", c)  # type: ignore[arg-type]
        for c in good
    ]
    for h in hostile:
        messages.insert(rng.randrange(len(messages) + 1), h)
    p = producer(settings)
    for key, value, _, _ in messages:
        while True:
            try:
                p.produce(settings.topic.cdr, key=key.encode(), value=value)
                break
            except BufferError:
                p.poll(0.5)
    assert p.flush(120) == 0
    print(f"soak: produced {len(good)} CDRs and {len(hostile)} hostile messages")
    return tenants, messages, hostile


class _Fleet:
    """The worker processes of the soak, each logging to a file of its own."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], environ: dict[str, str]) -> None:
        with open(self.logs / f"{name}-{time.monotonic_ns()}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", *args], env=environ, stdout=log, stderr=subprocess.STDOUT
            )

    def signal(self, name: str, sig: int, timeout: float | None = None) -> None:
        self.procs[name].send_signal(sig)
        self.procs[name].wait(timeout)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run(n_cdrs: int = 200_000, kills: int = 20, seed: int = 20261127, out: Path = Path("bench/soak.json")) -> int:
    rng = random.Random(seed)
    state = Path(tempfile.mkdtemp(prefix="callcharge-soak-"))
    settings = Settings.from_env(
        {}, state_dir=state, broker_port=free_port(), redis_port=free_port(), session_timeout_ms=6000
    )
    print(f"soak: fresh embedded stack in {state}")
    stack.up(settings)
    mailbox = MailSink().start()
    (state / "logs").mkdir()
    fleet = _Fleet(state / "logs")
    try:
        create_topics(settings)
        tenants, messages, hostile = _publish_traffic(settings, rng, seed, n_cdrs)
        env = settings.to_env(log_level="WARNING", metrics_port=0)
        control_env = {
            **env,
            "CALLCHARGE_SMTP_PORT": str(mailbox.port),
            "CALLCHARGE_HTTP_PORT": str(free_port()),
            "CALLCHARGE_CONTROL_TICK_S": "0.5",
            "CALLCHARGE_RECHARGE_BACKOFF_S": "1",
            "CALLCHARGE_RECHARGE_BACKOFF_CAP_S": "4",
        }
        fleet.start("control", ["control"], control_env)
        for w in ("w1", "w2"):
            fleet.start(w, ["charge"], env)
        t0 = time.monotonic()
        done_kills = control_kills = 0
        redis_restarted = False
        while done_kills < kills:
            # Kills 3-7 s apart: a worker killed while its group join is still settling,
            # again and again, wedges the embedded broker's group coordinator (no member
            # is ever assigned again); Apache Kafka does not need this spacing.
            time.sleep(rng.uniform(3.0, 7.0))
            victim = rng.choice(["w1", "w2"])
            fleet.signal(victim, signal.SIGKILL)
            done_kills += 1
            fleet.start(victim, ["charge"], env)
            if done_kills == kills // 2 and not redis_restarted:
                stack.down(settings, only="redis")
                time.sleep(1)
                stack.up(settings, only="redis")
                redis_restarted = True
            if done_kills % 7 == 3:  # recharges are requested all along: kill the control worker among them
                fleet.signal("control", signal.SIGKILL)
                control_kills += 1
                fleet.start("control", ["control"], control_env)
        print(f"soak: {done_kills} SIGKILLs, Redis restarted, {control_kills} control kills; draining")
        for w in ("w1", "w2"):
            fleet.signal(w, signal.SIGTERM, 60)
        fleet.start("w1", ["charge", "--exit-when-idle", "10"], env)
        try:
            fleet.procs["w1"].wait(1200)
        except subprocess.TimeoutExpired:
            print("soak: the last worker did not drain the topic within 20 minutes (stalled)")
        time.sleep(15)  # let the control worker finish recharges and emails
        fleet.signal("control", signal.SIGTERM, 60)
        elapsed = time.monotonic() - t0
        # what the stream carries, in its order: a call published twice is charged where it
        # first comes (the copy may come first), and pools are drawn in that order
        in_order = [cdr for _, _, _, cdr in messages if cdr is not None]
        return _verify(settings, tenants, in_order, hostile, mailbox, done_kills, control_kills, elapsed, out)
    finally:
        fleet.close()
        mailbox.stop()
        stack.down(settings)


def _verify(
    settings: Settings,
    tenants: list[dict[str, Any]],
    good: list[dict[str, Any]],
    hostile: list[tuple[str, bytes, str, dict[str, Any] | None]],
    mailbox: MailSink,
    kills: int,
    control_kills: int,
    elapsed: float,
    out: Path,
) -> int:
    codec = Codec(settings.schemas_dir)
    engine = Engine([tenant_from_dict(t) for t in tenants], RateCard.from_csv_text(settings.rates_file.read_text()))
    expected: dict[str, int] = {}
    for d in good:
        cdr = cdr_from_dict(d)
        assert isinstance(cdr, Cdr)
        result = engine.admit_and_charge(cdr)
        if not isinstance(result, Rejected) and result.charge is not None:
            expected[cdr.call_id] = result.charge.amount
    charges = [codec.decode(raw)[1] for _, raw in read_all(settings, settings.topic.charges, timeout=300)]
    copies: dict[str, list[bytes]] = {}
    for c in charges:
        copies.setdefault(c["call_id"], []).append(json.dumps(c, default=str, sort_keys=True).encode())
    differing = [k for k, v in copies.items() if len(set(v)) > 1]
    identical = sum(len(v) - 1 for v in copies.values() if len(set(v)) == 1)
    got = {c["call_id"]: c["amount"] for c in charges}
    lost = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    drift = sum(abs(got.get(k, 0) - v) for k, v in expected.items()) + sum(got[k] for k in extra)
    letters = Counter(codec.decode(raw)[1]["reason"] for _, raw in read_all(settings, settings.topic.dlq, timeout=120))
    captured = wiring.redis_client(settings).lrange("gw:captured", 0, -1)
    per_request = Counter(json.loads(x)["key"].rsplit(":", 1)[0] for x in captured)
    double_payments = sum(1 for n in per_request.values() if n > 1)
    double_emails = sum(1 for n in mailbox.ids.values() if n > 1)
    report = rebuild(settings, check=True)
    figures = {
        "cdrs": len({d["call_id"] for d in good}),
        "hostile_messages": len(hostile),
        "hostile_by_kind": dict(Counter(k for _, _, k, _ in hostile)),
        "sigkills": kills,
        "control_kills": control_kills,
        "redis_restarts": 1,
        "seconds": round(elapsed, 1),
        "charged_calls": len(got),
        "expected_calls": len(expected),
        "lost": len(lost),
        "charged_but_not_expected": len(extra),
        "duplicates_differing": len(differing),
        "identical_copies_of_aborted_batches": identical,
        "drift_micro_units": drift,
        "dlq_by_reason": dict(letters),
        "recharge_payments": len(captured),
        "recharge_requests_paid": len(per_request),
        "double_payments": double_payments,
        "emails": sum(mailbox.ids.values()),
        "double_emails": double_emails,
        "double_email_ids": sorted(k for k, n in mailbox.ids.items() if n > 1)[:10],
        "tenants_matching_ledger": report.matching,
        "tenants_differing_from_ledger": len(report.differing),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    bad = drift or lost or extra or differing or double_payments or double_emails or report.differing or report.unbacked
    print(f"soak: {'FAILED' if bad else 'passed'}; figures in {out}")
    return 1 if bad else 0
