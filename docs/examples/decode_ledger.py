"""Read callcharge's topics without callcharge: the files in `schemas/`, fastavro to decode,
and a Kafka client to read.

Every record on callcharge's topics is Avro single-object encoded:

    C3 01 | 8-byte fingerprint of the writer schema | Avro binary

`schemas/fingerprints.json` maps each fingerprint (hex, in the order its bytes appear in a
message) to its schema file: look it up there rather than computing fingerprints (Apache
`avro` computes other ones; see docs/consuming.md). Money fields are integer micro-units of
the record's currency (1 USD = 1 000 000).

    python decode_ledger.py SCHEMAS_DIR BOOTSTRAP TOPIC...

prints one JSON line per record: {"topic", "key" (the message key), "schema", "record"}.

It reads each topic by assignment (no consumer group to join, nothing committed) from the
first offset until the broker says each partition is at its end, `read_committed`
(callcharge writes in Kafka transactions), and exits 1 naming any topic it read nothing from.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader


def schemas_by_fingerprint(schemas_dir: str | Path) -> dict[bytes, tuple[str, Any]]:
    """fingerprint -> (schema name such as "charge.v2", parsed schema), from fingerprints.json."""
    folder = Path(schemas_dir)
    table = json.loads((folder / "fingerprints.json").read_text())
    return {
        bytes.fromhex(fp): (name, parse_schema(json.loads((folder / f"{name}.avsc").read_text())))
        for name, fp in table.items()
    }


def decode(raw: bytes, schemas: dict[bytes, tuple[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(schema name, record) of one message value."""
    if raw[:2] != b"\xc3\x01":
        raise ValueError("not an Avro single-object message")
    found = schemas.get(bytes(raw[2:10]))
    if found is None:
        raise ValueError(f"unknown writer schema {raw[2:10].hex()}: get the newer schemas/ files")
    name, schema = found
    return name, schemaless_reader(io.BytesIO(raw[10:]), schema, schema)


def as_json(value: Any) -> Any:
    if isinstance(value, bytes):  # a dead letter's original bytes
        return base64.b64encode(value).decode()
    return str(value)


def read_topic(bootstrap: str, topic: str, schemas: dict[bytes, tuple[str, Any]]) -> int:
    """Print every committed record of `topic` up to its end at the start; returns how many."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",  # required by the client; never joined, nothing committed
            "isolation.level": "read_committed",  # never an aborted transaction's records
            "enable.auto.commit": False,
            "enable.partition.eof": True,  # the fetch says when a partition is at its end
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        if not partitions:
            raise SystemExit(f"no topic {topic} at {bootstrap}")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        waiting, count = set(partitions), 0
        while waiting:
            msg = consumer.poll(10.0)
            if msg is None:
                raise SystemExit(f"{topic}: no answer from {bootstrap} in 10 s")
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(msg.partition())
                    continue
                raise SystemExit(f"{topic}: {err}")
            line: dict[str, Any] = {"topic": topic, "key": msg.key().decode() if msg.key() else None}
            if msg.value() is None:  # a tombstone on a compacted topic (e.g. a user removed)
                line |= {"schema": None, "record": None}
            else:
                name, record = decode(msg.value(), schemas)
                line |= {"schema": name, "record": record}
            print(json.dumps(line, default=as_json))
            count += 1
        return count
    finally:
        consumer.close()


def main(schemas_dir: str, bootstrap: str, *topics: str) -> int:
    schemas = schemas_by_fingerprint(schemas_dir)
    empty = [topic for topic in topics if read_topic(bootstrap, topic, schemas) == 0]
    for topic in empty:
        print(f"read nothing from {topic}: wrong name or bootstrap, or nothing written yet", file=sys.stderr)
    return 1 if empty or not topics else 0


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
