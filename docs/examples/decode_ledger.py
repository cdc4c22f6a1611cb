"""Read callcharge's ledger without callcharge: fastavro and the files in `schemas/` only.

Every record on callcharge's topics is Avro single-object encoded:

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema (little-endian) | Avro binary

Map each fingerprint to its schema file once, then decode each message with that schema.
Money fields are integer micro-units of the record's currency (1 USD = 1 000 000).

    python decode_ledger.py SCHEMAS_DIR BOOTSTRAP TOPIC     # prints one JSON line per record

(reading a topic needs confluent-kafka; `decode()` alone needs only fastavro).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form


def schemas_by_fingerprint(schemas_dir: str | Path) -> dict[bytes, tuple[str, Any]]:
    """fingerprint -> (schema file name, parsed schema) for every `*.avsc` file."""
    out = {}
    for path in sorted(Path(schemas_dir).glob("*.avsc")):
        parsed = parse_schema(json.loads(path.read_text()))
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        out[fp] = (path.stem, parsed)
    return out


def decode(raw: bytes, schemas: dict[bytes, tuple[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(schema name such as "charge.v2", record) of one message value."""
    if raw[:2] != b"\xc3\x01":
        raise ValueError("not an Avro single-object message")
    found = schemas.get(bytes(raw[2:10]))  # fastavro's fingerprint() gives the bytes in this order
    if found is None:
        raise ValueError(f"unknown writer schema {raw[2:10].hex()}: get the newer schemas/ files")
    name, schema = found
    return name, schemaless_reader(io.BytesIO(raw[10:]), schema, schema)


def main(schemas_dir: str, bootstrap: str, topic: str) -> None:
    from confluent_kafka import Consumer

    schemas = schemas_by_fingerprint(schemas_dir)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "ledger-reader",
            "isolation.level": "read_committed",  # never an aborted transaction's records
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    idle = 0
    while idle < 5:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            idle += 1
            continue
        idle = 0
        name, record = decode(msg.value(), schemas)
        print(json.dumps({"schema": name, **record}, default=str))
    consumer.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
