"""docs/examples/decode_ledger.py decodes callcharge's records with fastavro and the schema
files alone, to the same records callcharge's own codec reads."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import charge_to_avro
from pipeline.config import Settings
from processors.charging import charge_call, prepare
from processors.inputs import tenant_from_dict
from processors.ledger import TenantState
from processors.model import Cdr
from tests.helpers import fixture_rates, tenant_entry

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "decode_ledger.py"


def test_the_documented_decoder_reads_a_charge_as_callcharge_does() -> None:
    spec = importlib.util.spec_from_file_location("decode_ledger", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    book = prepare(tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "10"})))
    at = datetime(2026, 11, 10, 12, tzinfo=UTC)
    charge, _ = charge_call(
        book, TenantState(), Cdr("c1", "T", "u1", "user_out", "+1", "+442071234567", at, at, 61), fixture_rates()
    )
    codec = Codec(Settings().schemas_dir)
    raw = codec.encode("charge", charge_to_avro(charge, 3, 42, at))

    name, record = example.decode(raw, example.schemas_by_fingerprint(Settings().schemas_dir))
    assert name == "charge.v2"
    assert record == codec.decode(raw)[1]
    assert record["amount"] == charge.amount and record["tariff"]["rate_id"] == charge.tariff.rate_id  # type: ignore[union-attr]


def test_fingerprints_json_names_every_schema_with_the_fingerprint_its_records_carry() -> None:
    import json

    schemas_dir = Settings().schemas_dir
    table = json.loads((schemas_dir / "fingerprints.json").read_text())
    assert sorted(table) == sorted(p.stem for p in schemas_dir.glob("*.avsc"))
    codec = Codec(schemas_dir)
    for name, fp in table.items():
        kind, version = name.rsplit(".v", 1)
        assert codec.by_fingerprint[bytes.fromhex(fp)].kind == kind, name
        assert codec.by_fingerprint[bytes.fromhex(fp)].version == int(version), name
    raw = codec.encode("charge", {**codec.decode(_a_charge(codec))[1]})
    assert raw[2:10].hex() == table["charge.v2"]  # as the bytes appear in a message


def _a_charge(codec: Codec) -> bytes:
    book = prepare(tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG"]]], "funding": "10"})))
    at = datetime(2026, 11, 10, 12, tzinfo=UTC)
    charge, _ = charge_call(
        book, TenantState(), Cdr("c2", "T", "u1", "user_out", "+1", "+12025550123", at, at, 61), fixture_rates()
    )
    return codec.encode("charge", charge_to_avro(charge, 0, 1, at))
