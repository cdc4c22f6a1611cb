"""A consumer following docs/consuming.md: the documented decoder, in a fresh virtual
environment holding only fastavro and the Kafka client, reads every one of callcharge's
topics from the embedded broker, and fails when it reads nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import Settings, Topics
from tests.integration.conftest import Inbox
from tests.integration.harness import REPO, ControlProc, Env, calls, events, tenant, wait_exit, wait_for

pytestmark = pytest.mark.integration
EXAMPLE = REPO / "docs" / "examples" / "decode_ledger.py"


def fresh_venv(where: Path) -> Path:
    """A virtual environment with fastavro and confluent-kafka and nothing of ours."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "fastavro", "confluent-kafka"],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    found = subprocess.run(
        [str(python), "-c", "import pipeline"], cwd="/", capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert found.returncode != 0, "the fresh environment must not see callcharge"
    return python


@pytest.mark.slow
def test_the_documented_decoder_reads_every_topic_with_fastavro_alone(env: Env, smtp: Inbox, tmp_path: Path) -> None:
    tid = f"{env.tag}reader"
    bad = {**calls(tid, 1, 1, start=99)[0], "tenant_id": f"{env.tag}nobody"}  # unknown tenant: a dead letter
    env.publish([tenant(tid, "5", auto={"enabled": True, "amount": "25", "trigger": "2"})], [*calls(tid, 10, 20), bad])
    control = ControlProc(env, smtp).start()
    assert wait_exit(env.worker()) == 0
    wait_for(lambda: any(e["type"] == "recharge_succeeded" for e in events(env, tid)), timeout=60)
    status, _ = control.call("POST", f"/v1/tenants/{tid}/funds", {"amount": "60", "command_id": "read-1"})
    assert status == 202
    wait_for(lambda: any(e["type"] == "funds_added" and e["lot_id"] == "read-1" for e in events(env, tid)), timeout=60)
    wait_for(lambda: len(smtp.messages) >= 2, timeout=30)
    control.kill()

    python = fresh_venv(tmp_path / "venv")
    topics = env.settings.topic
    names = [getattr(topics, f) for f in Topics.__dataclass_fields__]
    assert len(names) == 8
    run = subprocess.run(
        [str(python), str(EXAMPLE), str(Settings().schemas_dir), env.settings.bootstrap, *names],
        cwd="/", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    by_topic = Counter(line["topic"] for line in lines)
    assert set(by_topic) == set(names), by_topic  # every topic printed
    mine = [x["record"] for x in lines if x["topic"] == topics.charges and x["key"] == tid]
    assert sorted(x["call_id"] for x in mine) == sorted(c["call_id"] for c in calls(tid, 10, 20))
    assert {x["schema"] for x in lines if x["topic"] == topics.charges} == {"charge.v2"}
    letters = [x["record"] for x in lines if x["topic"] == topics.dlq and x["key"] == f"{env.tag}nobody"]
    assert [x["reason"] for x in letters] == ["unknown_tenant"]
    funded = [x["record"] for x in lines if x["topic"] == topics.balance_events and x["key"] == tid]
    assert [x["amount"] for x in funded if x["lot_id"] == "read-1" and x["type"] == "funds_added"] == [60_000_000]

    nothing = subprocess.run(
        [str(python), str(EXAMPLE), str(Settings().schemas_dir), env.settings.bootstrap, f"{env.tag}empty-topic"],
        cwd="/", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert nothing.returncode != 0 and nothing.stdout == ""
