"""Session fixture: the embedded stack (Tansu + private redis-server) on free ports, or
the servers named by KAFKA_BOOTSTRAP and REDIS_URL when both are set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from pipeline.config import Settings
from pipeline.dev import stack
from pipeline.dev.mailsink import free_port

# No per-example deadline: how fast an example runs is the benchmark's business, never a
# test's (a deadline fails a correct example on a busy machine, e.g. two test processes on
# two cores). Every other Hypothesis setting stays its default.
hypothesis_settings.register_profile("callcharge", deadline=None)
hypothesis_settings.load_profile("callcharge")


_free_port = free_port  # a loopback port free now


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    if os.environ.get("KAFKA_BOOTSTRAP") and os.environ.get("REDIS_URL"):
        yield Settings.from_env(session_timeout_ms=6000)
        return
    state = Path(tmp_path_factory.mktemp("callcharge-stack"))
    settings = Settings.from_env(
        {}, state_dir=state, broker_port=_free_port(), redis_port=_free_port(), session_timeout_ms=6000
    )
    stack.up(settings)
    try:
        yield settings
    finally:
        stack.down(settings)
