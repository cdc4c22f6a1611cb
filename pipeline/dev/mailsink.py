"""A loopback SMTP server that keeps what it receives, and free loopback ports: the one
harness the demo, the soak, bench-scale and the tests give the control worker as its mail
server (aiosmtpd, a dev and test dependency)."""

from __future__ import annotations

import email
import logging
import socket
from collections import Counter
from typing import Any


def free_port() -> int:
    """A loopback port free now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MailSink:
    """Every message received, as a mail reader parses it: `to` (the envelope recipients),
    `subject` and `id` (the Message-ID, unfolded: a long one is folded onto a second line)."""

    def __init__(self, port: int | None = None) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[dict[str, Any]] = []
        self.port = port or free_port()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content)
                sink.messages.append(
                    {
                        "to": list(envelope.rcpt_tos),
                        "subject": str(msg["Subject"]),
                        "id": " ".join(str(msg["Message-ID"] or "(none)").split()),
                    }
                )
                return "250 OK"

        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def ids(self) -> Counter[str]:
        """How many times each Message-ID arrived (a notification's id: 2 is a double email)."""
        return Counter(m["id"] for m in self.messages)

    @property
    def recipients(self) -> list[str]:
        return [to for m in self.messages for to in m["to"]]
