"""A newcomer's first hour, as they meet it at a terminal: the version, help on every
option, the broker or Redis not there (one line, a documented exit code, no traceback, no
client log), a misspelt setting, JSON logs. The commands run as processes, with nothing
listening where they are pointed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import EXIT_BAD_INPUT, EXIT_CANNOT
from pipeline.dev.mailsink import free_port  # nothing listens there


def run(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALLCHARGE_") and k not in ("LOG_FORMAT",)}
    base |= {"KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=base | env, capture_output=True, text=True, timeout=60
    )
    return proc, time.monotonic() - started


def test_version_names_the_package_and_its_version() -> None:
    proc, _ = run("--version")
    assert proc.returncode == 0
    name, version = proc.stdout.split()
    assert name == "callcharge" and version[0].isdigit(), proc.stdout


BROKER_COMMANDS = [
    ("ingest", "{cdrs}"),
    ("tenants", "load", "{tenants}"),
    ("status",),
    ("dlq",),
    ("rebuild", "--check"),
    ("report", "usage", "--tenant", "t1", "--month", "2026-11"),
    ("export", "charges", "--from", "2026-11-01", "--to", "2026-11-30"),
    ("rerate", "--rates", "{rates}", "--dry-run"),
]


def test_broker_down_is_one_line_and_exit_1_within_seconds_for_every_command(tmp_path: Path) -> None:
    """Every command that reads or writes Kafka, run side by side (each waits out its 10 s)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.config import EXAMPLES_DIR

    files = {"cdrs": tmp_path / "cdrs.jsonl", "tenants": tmp_path / "tenants.json"}
    files["cdrs"].write_text("{}\n")
    files["tenants"].write_text("[]")
    with ThreadPoolExecutor(len(BROKER_COMMANDS)) as pool:
        done = list(
            pool.map(
                lambda args: run(*(a.format(**files, rates=EXAMPLES_DIR / "rates.example.csv") for a in args)),
                BROKER_COMMANDS,
            )
        )
    for args, (proc, took) in zip(BROKER_COMMANDS, done, strict=True):
        assert proc.returncode == EXIT_CANNOT, (args, proc.stderr)
        assert took < 15, args
        (line,) = proc.stderr.splitlines()  # one line: no traceback, no client log
        assert "Kafka at 127.0.0.1:" in line and "cannot be used" in line, (args, line)


def test_redis_down_is_one_line_and_exit_1() -> None:
    proc, took = run("charge")  # the worker asks Redis first
    assert proc.returncode == EXIT_CANNOT, proc.stderr
    assert took < 15
    (line,) = proc.stderr.splitlines()  # no traceback
    assert line.startswith("callcharge charge: Redis at redis://127.0.0.1:") and "cannot be used" in line, line


def test_a_misspelt_variable_is_warned_about_with_the_one_meant() -> None:
    proc, _ = run("charge", CALLCHARGE_BATCH_SIZ="10")
    first = proc.stderr.splitlines()[0]
    assert first == (
        "callcharge: warning: CALLCHARGE_BATCH_SIZ is not a callcharge setting and is ignored; "
        "did you mean CALLCHARGE_BATCH_SIZE?"
    )


def test_a_setting_outside_its_choices_is_exit_2_naming_it() -> None:
    proc, _ = run("status", CALLCHARGE_LOG_FORMAT="xml")
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.strip() == "callcharge: configuration: CALLCHARGE_LOG_FORMAT: one of text, json, got 'xml'"


@pytest.mark.parametrize("variable", ["LOG_FORMAT", "CALLCHARGE_LOG_FORMAT"])
def test_json_logs_are_one_object_per_line_warnings_and_errors_alike(variable: str) -> None:
    proc, _ = run("charge", CALLCHARGE_BATCH_SIZ="10", **{variable: "json"})
    assert proc.returncode == EXIT_CANNOT
    lines = [json.loads(line) for line in proc.stderr.splitlines()]  # every line parses
    assert [x["level"] for x in lines] == ["WARNING", "ERROR"]
    assert "CALLCHARGE_BATCH_SIZ" in lines[0]["message"] and "Redis at" in lines[1]["message"]
    assert all(x["ts"].endswith("Z") and x["logger"] and x["pid"] > 0 for x in lines)
