"""`callcharge dlq`: what is in the dead-letter topic, and re-driving it once fixed.

A dead letter keeps the original bytes, key, reason and source offset. Once the cause is
fixed (a tenant's configuration loaded late, a newer CDR schema deployed, a number plan
updated), `redrive` produces the original bytes again to the topic they came from; the
charging worker treats them as new input. Each letter is re-driven at most once (marked in
Redis after the broker acknowledged the copy; a crash in between re-drives it again, and
the worker's call-id record then turns the second copy into a `duplicate` dead letter, so
nothing is charged twice).

Refused: `duplicate` (that call was charged: a copy could be charged again once its
call-id record expires) and `too_old` (outside the dedup window, the worker can no longer
tell whether the call was charged).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline import wiring
from pipeline.adapters import keyspace
from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.kafka import producer
from pipeline.config import Settings
from pipeline.errors import FatalError
from pipeline.reports.readback import read_all
from processors.inputs import DeadLetterReason

NOT_REDRIVABLE: dict[str, str] = {
    DeadLetterReason.DUPLICATE: "the call was charged already; "
    "a copy could be charged again once its call-id record expires",
    DeadLetterReason.TOO_OLD: "outside the dedup window the worker cannot tell whether the call was charged",
}


@dataclass(frozen=True)
class Letter:
    source: str  # topic/partition/offset of the original message
    topic: str
    key: bytes | None
    value: bytes
    reason: str
    detail: str
    at: datetime

    @classmethod
    def of(cls, d: dict[str, Any]) -> Letter:
        source = f"{d['source_topic']}/{d['source_partition']}/{d['source_offset']}"
        return cls(source, d["source_topic"], d["key"], d["value"], d["reason"], d["detail"], d["at"])


def letters(settings: Settings, timeout: float = 30.0) -> list[Letter]:
    codec = Codec(settings.schemas_dir)
    return [Letter.of(r) for _, r in read_all(settings, settings.topic.dlq, codec, timeout=timeout)]


def summary(settings: Settings, reason: str | None = None, newest: int = 10) -> list[str]:
    """Counts by reason (first and last seen, how many re-driven), then the newest letters."""
    found = letters(settings)
    done = _redriven(settings)
    lines = [f"{settings.topic.dlq}: {len(found)} dead letters"]
    if not found:
        return lines
    by_reason = Counter(x.reason for x in found)
    lines.append(f"  {'reason':<18} {'count':>7} {'re-driven':>9}  first seen            last seen")
    for r, n in by_reason.most_common():
        mine = [x for x in found if x.reason == r]
        redriven = sum(x.source in done for x in mine)
        first, last = min(x.at for x in mine), max(x.at for x in mine)
        lines.append(f"  {r:<18} {n:>7} {redriven:>9}  {_time(first)}  {_time(last)}")
    shown = [x for x in found if reason is None or x.reason == reason][-newest:]
    if shown:
        lines.append(f"newest {len(shown)}{f' ({reason})' if reason else ''}:")
        for x in shown:
            mark = " (re-driven)" if x.source in done else ""
            lines.append(f"  {x.source:<28} {_time(x.at)}  {x.reason}: {x.detail}{mark}")
    return lines


def redrive(settings: Settings, reason: str, dry_run: bool = False) -> tuple[int, int]:
    """Produce every not yet re-driven letter of `reason` to its source topic again.

    Returns (re-driven now, skipped because re-driven before)."""
    if reason in NOT_REDRIVABLE:
        raise FatalError(f"dead letters '{reason}' are not re-driven: {NOT_REDRIVABLE[reason]}")
    found = [x for x in letters(settings) if x.reason == reason]
    done = _redriven(settings)
    todo = [x for x in found if x.source not in done and x.topic == settings.topic.cdr]
    if dry_run or not todo:
        return len(todo), len(found) - len(todo)
    p = producer(settings)
    for x in todo:
        p.produce(x.topic, key=x.key, value=x.value)
    if p.flush(60):
        raise FatalError("the broker did not acknowledge every re-driven message within 60 s; run again")
    client = wiring.redis_client(settings)
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    client.hset(_marks_key(settings), mapping={x.source: stamp for x in todo})
    return len(todo), len(found) - len(todo)


def _marks_key(settings: Settings) -> str:
    """Redis hash: source topic/partition/offset of each re-driven letter -> when."""
    return keyspace.redriven(settings.topic.dlq)


def _redriven(settings: Settings) -> set[str]:
    client = wiring.redis_client(settings)
    return {k.decode() if isinstance(k, bytes) else str(k) for k in client.hkeys(_marks_key(settings))}


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
