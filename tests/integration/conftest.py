"""Every integration test gets its own slice of the session's stack (topics, group, keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.dev.mailsink import MailSink
from tests.integration.harness import RUNNING, Env


@pytest.fixture
def env(base_settings: Settings, tmp_path: Path) -> Env:
    return Env.make(base_settings, tmp_path)


Inbox = MailSink  # the loopback SMTP server a test's control worker mails to


@pytest.fixture
def smtp() -> Any:
    inbox = MailSink().start()
    yield inbox
    inbox.stop()


@pytest.fixture(autouse=True)
def _no_worker_left_behind() -> Any:
    yield
    while RUNNING:
        proc = RUNNING.pop().proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
