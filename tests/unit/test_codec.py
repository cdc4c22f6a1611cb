"""Avro single-object encoding: every schema round trips; old writers are read by new readers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from pipeline.adapters.avro.codec import MARKER, Codec
from pipeline.config import Settings
from pipeline.errors import DecodeError, UnknownSchemaError

CODEC = Codec(Settings().schemas_dir)
NOW = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)


def sample(schema: object) -> object:
    """A representative value for any Avro schema (every optional filled)."""
    if isinstance(schema, str):
        return {"string": "x", "long": 12345678901, "int": 42, "boolean": True, "bytes": b"\x00\xff"}[schema]
    if isinstance(schema, list):
        return sample(next(s for s in schema if s != "null"))
    assert isinstance(schema, dict)
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-micros":
        return NOW
    if kind == "record":
        return {f["name"]: sample(f["type"]) for f in schema["fields"]}
    if kind == "array":
        return [sample(schema["items"])]
    if kind == "map":
        return {"k": sample(schema["values"])}
    return sample(kind)


SCHEMAS = sorted(Settings().schemas_dir.glob("*.avsc"))


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.name for p in SCHEMAS])
def test_every_schema_round_trips(path) -> None:
    schema = json.loads(path.read_text())
    kind, _, version = path.name[:-5].rpartition(".v")
    record = sample(schema)
    assert validate(record, parse_schema(schema))
    data = CODEC.encode(kind, record, version=int(version))
    assert data[:2] == MARKER
    got_kind, got = CODEC.decode(data)
    assert got_kind == kind
    for key, value in record.items():
        assert got[key] == value


def test_v1_cdr_is_read_by_the_v2_reader_with_the_new_field_defaulted() -> None:
    v1 = sample(json.loads((Settings().schemas_dir / "cdr.v1.avsc").read_text()))
    data = CODEC.encode("cdr", v1, version=1)
    assert CODEC.current["cdr"].version == 2
    kind, record = CODEC.decode(data)
    assert kind == "cdr"
    assert record["routing"] is None  # added in v2, defaulted
    assert record["call_id"] == v1["call_id"]


def test_unknown_fingerprint_is_a_typed_error() -> None:
    data = bytearray(CODEC.encode("cdr", sample(json.loads((Settings().schemas_dir / "cdr.v2.avsc").read_text()))))
    data[2:10] = b"\x01" * 8
    with pytest.raises(UnknownSchemaError):
        CODEC.decode(bytes(data))


@pytest.mark.parametrize("data", [b"", b"{json}", b"\xc3\x01abc", b"\x00" * 40])
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(data)


def test_truncated_and_padded_payloads_are_decode_errors() -> None:
    data = CODEC.encode("cdr", sample(json.loads((Settings().schemas_dir / "cdr.v2.avsc").read_text())))
    with pytest.raises(DecodeError):
        CODEC.decode(data[:-5])
    with pytest.raises(DecodeError):
        CODEC.decode(data + b"\x00\x00")


def test_wrong_record_kind_is_refused() -> None:
    data = CODEC.encode(
        "notification", sample(json.loads((Settings().schemas_dir / "notification.v1.avsc").read_text()))
    )
    with pytest.raises(UnknownSchemaError, match="expected a cdr"):
        CODEC.decode(data, expect="cdr")
