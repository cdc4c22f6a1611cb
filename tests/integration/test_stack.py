"""`callcharge stack up|down|status` as a newcomer uses it: separate processes, own ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from pipeline.adapters.kafka import admin, create_topics
from pipeline.config import Settings
from pipeline.dev import stack
from pipeline.dev.stack import port_free
from tests.conftest import _free_port
from tests.integration.harness import Env

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cli(state: Path, broker: int, redis: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CALLCHARGE_") and k not in ("KAFKA_BOOTSTRAP", "REDIS_URL")
    }
    env.update(CALLCHARGE_STATE_DIR=str(state), CALLCHARGE_BROKER_PORT=str(broker), CALLCHARGE_REDIS_PORT=str(redis))
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def pids(state: Path) -> list[int]:
    return [int(p.read_text()) for p in state.glob("*.pid")]


def test_up_down_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    broker, redis = _free_port(), _free_port()
    up = cli(tmp_path, broker, redis, "stack", "up")
    assert up.returncode == 0, up.stderr
    assert "started" in up.stdout
    started = pids(tmp_path)
    assert len(started) == 2 and all(Path(f"/proc/{p}").exists() for p in started)
    again = cli(tmp_path, broker, redis, "stack", "up")
    assert again.returncode == 0 and again.stdout.count("already running") == 2
    assert cli(tmp_path, broker, redis, "topics", "create").returncode == 0
    assert cli(tmp_path, broker, redis, "stack", "status").returncode == 0
    down = cli(tmp_path, broker, redis, "stack", "down")
    assert down.returncode == 0 and down.stdout.count("stopped (pid") == 2
    for pid in started:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(") ", 1)[1][0] == "Z"
    assert port_free(broker) and port_free(redis)
    assert cli(tmp_path, broker, redis, "stack", "status").returncode == 3


def test_a_stack_started_in_process_is_reaped_when_stopped(tmp_path: Path) -> None:
    """The test session, the demo, the bench and the soak start the stack as their own
    children: stopping it collects their exit status (no zombie, no "subprocess is still
    running" warning at exit)."""
    settings = Settings.from_env({}, state_dir=tmp_path, broker_port=_free_port(), redis_port=_free_port())
    stack.up(settings)
    started = pids(tmp_path)
    assert len(started) == 2 and all(pid in stack._CHILDREN for pid in started)
    stack.down(settings)
    assert not any(pid in stack._CHILDREN for pid in started)
    for pid in started:
        assert not Path(f"/proc/{pid}").exists(), f"{pid} left unreaped"


def test_a_taken_port_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        result = cli(tmp_path, _free_port(), taken, "stack", "up")
    assert result.returncode == 1
    assert f"port {taken} for the redis is taken" in result.stderr
    assert pids(tmp_path) == []


def test_a_stale_pid_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    broker, redis = _free_port(), _free_port()
    (tmp_path / "broker.pid").write_text("999999")
    (tmp_path / "redis.pid").write_text(str(os.getpid()))  # alive, but not a redis-server
    up = cli(tmp_path, broker, redis, "stack", "up")
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.count("started") == 2
        assert os.getpid() not in pids(tmp_path)
    finally:
        cli(tmp_path, broker, redis, "stack", "down")
    assert Path(f"/proc/{os.getpid()}").exists()  # we were not killed


def test_ledger_topics_are_kept_whole_and_state_topics_compacted(env: Env) -> None:
    t = env.settings.topic
    client = admin(env.settings)
    wanted = [t.charges, t.balance_events, t.dlq, t.tenant_config, t.service_state, t.cdr]
    futures = client.describe_configs([ConfigResource("topic", name) for name in wanted])
    configs = {res.name: {k: v.value for k, v in fut.result(timeout=30).items()} for res, fut in futures.items()}
    for name in (t.charges, t.balance_events, t.dlq):  # finance's ledger, rebuild's source
        assert (configs[name].get("retention.ms"), configs[name].get("retention.bytes")) == ("-1", "-1"), name
    for name in (t.tenant_config, t.service_state):
        assert configs[name].get("cleanup.policy") == "compact", name
    assert configs[t.cdr].get("retention.ms") != "-1"  # input: the broker's retention applies


def test_topics_create_brings_an_older_deployments_ledger_retention_in_line(env: Env) -> None:
    t = env.settings.topic
    client = admin(env.settings)
    old = ConfigResource(
        "topic",
        t.charges,
        incremental_configs=[ConfigEntry("retention.ms", "604800000", incremental_operation=AlterConfigOpType.SET)],
    )
    for fut in client.incremental_alter_configs([old]).values():
        fut.result(30)  # as an older version left it: the broker's 7 days
    report = create_topics(env.settings)
    assert report[t.charges] == "exists; set retention.ms=-1"
    assert report[t.balance_events] == "exists" and report[t.cdr] == "exists"
    [(_, fut)] = client.describe_configs([ConfigResource("topic", t.charges)]).items()
    assert fut.result(30)["retention.ms"].value == "-1"
    assert create_topics(env.settings)[t.charges] == "exists"


@pytest.mark.slow
def test_a_restarted_embedded_broker_is_not_passed_off_as_the_ledger(tmp_path: Path) -> None:
    """`stack down` loses the embedded broker's topics; Redis keeps balances. The split is
    said out loud, `charge` waits for the operator's choice, `rebuild --check` fails and
    `rebuild` refuses to shrink Redis to the empty ledger."""
    state, broker, redis = tmp_path / "state", _free_port(), _free_port()
    run = lambda *a: cli(state, broker, redis, *a)  # noqa: E731
    try:
        assert run("stack", "up").returncode == 0
        assert run("topics", "create").returncode == 0
        gen = run(
            "gen",
            "--tenants",
            "3",
            "--cdrs",
            "60",
            "--tenants-out",
            str(tmp_path / "t.json"),
            "--cdrs-out",
            str(tmp_path / "c.jsonl"),
        )
        assert gen.returncode == 0, gen.stderr
        assert run("tenants", "load", str(tmp_path / "t.json")).returncode == 0
        assert run("ingest", str(tmp_path / "c.jsonl")).returncode == 0
        charged = run("charge", "--exit-when-idle", "3", "--metrics-port", "0")
        assert charged.returncode == 0, charged.stderr
        assert run("rebuild", "--check").returncode == 0  # Redis and the ledger agree

        down = run("stack", "down")
        assert down.returncode == 0 and "ledger (charges, balance events)" in down.stderr and "died" in down.stderr
        up = run("stack", "up")
        assert up.returncode == 4 and "no ledger backs that state" in up.stderr and "--fresh" in up.stderr, up
        refused = run("charge", "--exit-when-idle", "3", "--metrics-port", "0")
        assert refused.returncode == 1 and "stack up --fresh" in refused.stderr, refused.stderr
        assert run("topics", "create").returncode == 0
        check = run("rebuild", "--check")
        assert check.returncode == 3 and "Redis holds the balance state of 3 tenants the ledger lacks" in check.stdout
        shrink = run("rebuild")
        assert shrink.returncode == 1 and "refusing to rebuild" in shrink.stderr, shrink

        fresh = run("stack", "up", "--fresh")
        assert fresh.returncode == 0 and "no ledger backs" not in fresh.stderr
        assert run("rebuild", "--check").returncode == 0
        assert run("charge", "--exit-when-idle", "2", "--metrics-port", "0").returncode == 0
    finally:
        run("stack", "down")
