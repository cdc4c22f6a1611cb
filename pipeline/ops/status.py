"""`callcharge status`: is charging keeping up, and is anything waiting for an operator?

Read-only and cheap enough to run any time: the broker and Redis answer, how many CDRs the
charging group has yet to charge (over the whole topic, see `pipeline.charging.backlog`), how many
dead letters there are by reason, and how many tenants are configured.
"""

from __future__ import annotations

from collections import Counter

import redis
from confluent_kafka import KafkaException

from pipeline import wiring
from pipeline.adapters.kafka import consumer
from pipeline.charging.backlog import Probe
from pipeline.config import Settings
from pipeline.errors import FatalError
from pipeline.ops.dlq import letters
from pipeline.reports.readback import read_all


def status(settings: Settings) -> tuple[list[str], int]:
    """(lines to print, CDRs waiting)."""
    group = consumer(settings, settings.group_id)  # reads the group's offsets, never joins
    try:
        try:
            topics = group.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise FatalError(f"broker at {settings.bootstrap} does not answer: {exc}") from None
        lines = [f"broker   {settings.bootstrap}: {len(topics)} topics"]
        shown = settings.masked().get("redis_url") or settings.redis  # no password on screen
        try:
            info = wiring.redis_client(settings, socket_timeout_s=5).info("memory")
            lines.append(f"redis    {shown}: ok, {info.get('used_memory_human', '?')} used")
        except redis.RedisError as exc:
            raise FatalError(f"Redis at {shown} does not answer: {exc}") from None
        if settings.topic.cdr not in topics:
            raise FatalError(f"topic {settings.topic.cdr} does not exist: run `callcharge topics create`")
        probe = Probe(settings, settings.topic.cdr, group, f"callcharge-status-{settings.group_id}")
        try:
            waiting = probe.waiting(timeout_s=15)
        finally:
            probe.close()
        if waiting is None:
            lines.append(f"charging (group {settings.group_id}): backlog unknown, the broker did not answer in time")
            total = -1
        else:
            total = sum(waiting.values())
            per = " ".join(f"{p}:{n}" for p, n in sorted(waiting.items()))
            lines.append(f"charging (group {settings.group_id}): {total} CDRs waiting ({per})")
        reasons = Counter(x.reason for x in letters(settings))
        summary = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
        lines.append(
            f"dead letters: {sum(reasons.values())}" + (f" ({summary}); see `callcharge dlq`" if reasons else "")
        )
        keys = {k for k, _ in read_all(settings, settings.topic.tenant_config) if k}
        tenants = {k for k in keys if b"/" not in k}  # a user's record is keyed T/USER
        lines.append(f"tenants configured: {len(tenants)} ({len(keys) - len(tenants)} users in their own records)")
        return lines, total
    finally:
        group.close()
