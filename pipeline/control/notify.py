"""Admin notifications: each on the notifications topic and by email, once per
notification id (marked in Redis before and after sending); an email the server did not
take is retried by the timer."""

from __future__ import annotations

import json
import logging
import smtplib
from collections.abc import Callable
from email.message import EmailMessage

from pipeline.adapters import keyspace
from pipeline.control.desk import Desk, Output, text
from processors.charging import Book
from processors.control import notifications
from processors.model import Event

log = logging.getLogger(__name__)

EMAIL_RETRY_ZSET = keyspace.EMAIL_RETRY


class Notifier:
    def __init__(self, desk: Desk) -> None:
        self.d = desk
        self.s, self.r, self.codec, self.metrics, self.topics = desk.s, desk.r, desk.codec, desk.metrics, desk.topics

    def notify(self, book: Book, event: Event) -> list[Output]:
        out: list[Output] = []
        for n in notifications(book.tenant, event):
            mark = keyspace.notified(n.tenant_id, n.notification_id)
            if self.r.get(mark) == b"sent":
                continue
            self.r.set(mark, "pending", ex=400 * 86400, nx=True)
            record = {
                "notification_id": n.notification_id,
                "tenant_id": n.tenant_id,
                "event_id": n.event_id,
                "kind": n.kind,
                "recipient": n.recipient,
                "role": n.role,
                "subject": n.subject,
                "body": n.body,
                "at": event.at,
            }
            out.append((self.topics.notifications, n.tenant_id.encode(), self.codec.encode("notification", record)))
            self._deliver(mark, n.recipient, n.subject, n.body, n.notification_id)
        return out

    def _deliver(self, mark: str, to: str, subject: str, body: str, notification_id: str) -> None:
        """Email one notification; on SMTP trouble it stays pending and the timer retries."""
        try:
            self._send_email(notification_id, to, subject, body, lambda: self.r.set(mark, "sent", ex=400 * 86400))
        except (OSError, smtplib.SMTPException) as exc:
            self.metrics.emails.labels("failed").inc()
            log.warning("email %s to admin not delivered (%s); will retry", notification_id, type(exc).__name__)
            doc = json.dumps({"mark": mark, "to": to, "subject": subject, "body": body, "id": notification_id})
            self.r.zadd(EMAIL_RETRY_ZSET, {doc: self.d.now().timestamp() + self.s.recharge_backoff_s})
            return
        self.metrics.emails.labels("sent").inc()

    def retry_emails(self) -> None:
        for raw in self.r.zrangebyscore(EMAIL_RETRY_ZSET, "-inf", self.d.now().timestamp()):
            self.r.zrem(EMAIL_RETRY_ZSET, text(raw))
            doc = json.loads(text(raw))
            if self.r.get(doc["mark"]) != b"sent":
                self._deliver(doc["mark"], doc["to"], doc["subject"], doc["body"], doc["id"])

    def _send_email(
        self, notification_id: str, to: str, subject: str, body: str, sent: Callable[[], object] = lambda: None
    ) -> None:
        """Send one email; `sent` runs as soon as the server has accepted it, before the
        session's QUIT: a crash between the two would mail it again (the Message-ID stays
        the notification's, so a mail system can tell the copy)."""
        msg = EmailMessage()
        msg["From"] = self.s.smtp_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = f"<{notification_id.replace(':', '.')}@callcharge>"
        msg.set_content(body)
        with smtplib.SMTP(self.s.smtp_host, self.s.smtp_port, timeout=10) as smtp:
            smtp.send_message(msg)
            sent()
