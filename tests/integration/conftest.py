"""Every integration test gets its own slice of the session's stack (topics, group, keys)."""

from __future__ import annotations

import email
import socket
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from pipeline.config import Settings
from tests.integration.harness import Env


@pytest.fixture
def env(base_settings: Settings, tmp_path: Path) -> Env:
    return Env.make(base_settings, tmp_path)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content)
        self.messages.append({"to": envelope.rcpt_tos, "subject": str(msg["Subject"]), "id": str(msg["Message-ID"])})
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    inbox = Inbox()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.port = port  # type: ignore[attr-defined]
    yield inbox
    controller.stop()


# Every worker process a test starts (ControlProc and the like) is SIGKILLed after the test,
# whatever it asserted: a leftover worker keeps retrying a broker that is gone.
RUNNING: list[Any] = []


@pytest.fixture(autouse=True)
def _no_worker_left_behind() -> Any:
    yield
    while RUNNING:
        proc = RUNNING.pop().proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
