"""The compiled Avro writers and readers agree with fastavro, byte for byte, on every schema."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.avro.codec import HEADER_LEN, Codec
from pipeline.adapters.avro.compiler import LONG_MAX, LONG_MIN, compile_reader, compile_writer, read_long
from pipeline.config import Settings
from pipeline.errors import DecodeError, Unsupported

SCHEMAS = sorted(Settings().schemas_dir.glob("*.avsc"))
CODEC = Codec(Settings().schemas_dir)
# generated traffic starts here whatever the day (a test that needs a date pins it)
PINNED = datetime(2026, 11, 2, tzinfo=UTC)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])


def datum(schema: Any) -> st.SearchStrategy[Any]:
    """Any valid datum of an Avro schema."""
    if isinstance(schema, list):
        return st.one_of(*[datum(branch) for branch in schema])
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-micros":
            return st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=ZONES)
        kind = schema["type"]
        if kind == "record":
            return st.fixed_dictionaries({f["name"]: datum(f["type"]) for f in schema["fields"]})
        if kind == "array":
            return st.lists(datum(schema["items"]), max_size=4)
        if kind == "map":
            return st.dictionaries(TEXT, datum(schema["values"]), max_size=4)
        return datum(kind)
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "string": TEXT,
        "bytes": st.binary(max_size=40),
    }[schema]


def fastavro_bytes(parsed: Any, record: Any) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def fastavro_read(parsed: Any, data: bytes) -> tuple[Any, int]:
    buf = io.BytesIO(data)
    return schemaless_reader(buf, parsed, None), buf.tell()


def load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.name for p in SCHEMAS])
def test_every_schema_compiles(path: Path) -> None:
    schema = load(path)
    compile_writer(schema)
    compile_reader(schema)


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.name for p in SCHEMAS])
def test_compiled_writer_and_reader_match_fastavro(path: Path) -> None:
    schema = load(path)
    parsed = parse_schema(schema, _force=True)
    write, read = compile_writer(schema), compile_reader(schema)

    @settings(max_examples=150, deadline=None)
    @given(datum(schema))
    def check(record: dict[str, Any]) -> None:
        expected = fastavro_bytes(parsed, record)
        assert write(record) == expected
        got, end = read(expected, 0)
        assert end == len(expected)
        assert got == fastavro_read(parsed, expected)[0]

    check()


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.name for p in SCHEMAS])
def test_compiled_reader_never_accepts_what_fastavro_would_read_differently(path: Path) -> None:
    """Garbage: cut, flipped or random bytes. The compiled reader raises, or reads exactly
    what fastavro reads from the same bytes (it may be stricter, never looser)."""
    schema = load(path)
    parsed = parse_schema(schema, _force=True)
    read = compile_reader(schema)

    @settings(max_examples=150, deadline=None)
    @given(datum(schema), st.data())
    def check(record: dict[str, Any], data: st.DataObject) -> None:
        good = fastavro_bytes(parsed, record)
        how = data.draw(st.sampled_from(["cut", "flip", "random"]))
        if how == "cut":
            bad = good[: data.draw(st.integers(0, max(0, len(good) - 1)))]
        elif how == "flip" and good:
            i = data.draw(st.integers(0, len(good) - 1))
            bad = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1 :]
        else:
            bad = data.draw(st.binary(max_size=80))
        try:
            got, end = read(bad, 0)
        except Exception:
            return
        if end > len(bad):
            return  # the codec reports this as truncated
        assert (got, end) == fastavro_read(parsed, bad[:end])

    check()


@pytest.mark.parametrize(
    "raw",
    [
        # found by the garbage property on a clean clone: fastavro reads 1 << 62 from it,
        # the compiled reader read 3 << 62; neither is a long Avro could have written
        b"\x80" * 9 + b"\x03",
        b"\xff" * 9 + b"\x7f",
        b"\x80" * 9 + b"\x02",
    ],
)
def test_a_varint_outside_the_signed_64_bit_range_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="64-bit"):
        read_long(raw, 0)


def test_the_widest_longs_still_read() -> None:
    for n in (LONG_MIN, LONG_MAX, LONG_MIN + 1, LONG_MAX - 1, 0, -1):
        raw = fastavro_bytes(parse_schema("long"), n)
        assert read_long(raw, 0) == (n, len(raw))


def test_codec_rejects_garbage_after_a_valid_header_with_a_clear_error() -> None:
    cdr = CODEC.current["cdr"]
    header = b"\xc3\x01" + cdr.fingerprint
    for payload in (b"", b"\x02", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"\x7f" * 5):
        with pytest.raises(DecodeError, match="corrupt cdr payload"):
            CODEC.decode(header + payload)
    good = CODEC.encode("cdr", _cdr())
    with pytest.raises(DecodeError, match="truncated"):
        CODEC.decode(good[:-3])
    with pytest.raises(DecodeError, match="2 trailing bytes"):
        CODEC.decode(good + b"\x00\x00")
    assert len(good) > HEADER_LEN


def test_a_datum_that_does_not_fit_gets_fastavros_error() -> None:
    bad = dict(_cdr(), duration_s="long")
    with pytest.raises(Exception) as ours:
        CODEC.encode("cdr", bad)
    with pytest.raises(Exception) as theirs:
        fastavro_bytes(CODEC.current["cdr"].parsed, bad)
    assert type(ours.value) is type(theirs.value)


def test_the_compiler_refuses_what_it_does_not_know() -> None:
    with pytest.raises(Unsupported):
        compile_writer({"type": "record", "name": "F", "fields": [{"name": "x", "type": "float"}]})
    with pytest.raises(Unsupported):
        compile_reader({"type": "record", "name": "U", "fields": [{"name": "x", "type": ["int", "string"]}]})


def _cdr() -> dict[str, Any]:
    at = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    return {
        "call_id": "c-1",
        "tenant_id": "t-1",
        "user_id": "u-1",
        "call_type": "user_out",
        "caller_number": "+12125550100",
        "callee_number": "+442079460123",
        "start_time": at,
        "end_time": at + timedelta(seconds=61),
        "duration_s": 61,
        "usage_country": "US",
    }


def test_a_charge_encoded_straight_from_the_object_is_the_dict_paths_bytes() -> None:
    """The worker encodes a Charge without building its dict: byte for byte the same as
    `encode("charge", charge_to_avro(...))`, on every shape the traffic
    generator makes (pools, lots, deficits, tariffs or none, flags)."""
    from dataclasses import replace

    from pipeline.adapters.avro.records import charge_encoder, charge_to_avro
    from pipeline.adapters.files import load_rates
    from pipeline.dev import traffic
    from processors.engine import Engine
    from processors.inputs import cdr_from_dict, tenant_from_dict

    tenants = traffic.tenants(12, seed=3, prefix="enc", start=PINNED)
    engine = Engine([tenant_from_dict(t) for t in tenants], load_rates(Settings().rates_file))
    charges = []
    for row in traffic.cdrs(tenants, 4000, seed=4, start=PINNED + timedelta(days=2)):
        done = engine.process(cdr_from_dict(row))  # type: ignore[arg-type]
        if done is not None:
            charges.append(done[0])
    encode = charge_encoder(CODEC)
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    kinds = {(c.classification, c.tariff is None, bool(c.flags)) for c in charges}
    assert len(kinds) >= 6, kinds  # the shapes are varied
    for i, charge in enumerate(charges):
        assert encode(charge, i % 8, 1000 + i, now) == CODEC.encode(
            "charge", charge_to_avro(charge, i % 8, 1000 + i, now)
        )
    # a value that does not fit the schema takes the dict path and gets its error
    too_big = replace(charges[0], amount=1 << 70)
    with pytest.raises(OverflowError, match="too large"):  # fastavro's error, not ours
        encode(too_big, 0, 0, now)


# -- the generated module (pipeline/adapters/avro_fast.py), compiled by mypyc and as source --


def _fast_impls() -> list[Any]:
    """avro_fast as imported (the mypyc extension where `make setup` built one) and its
    source file loaded as plain Python: both must be fastavro's bytes."""
    import importlib.util

    from pipeline.adapters.avro import fast as avro_fast
    from pipeline.dev.build import FAST

    spec = importlib.util.spec_from_file_location("avro_fast_as_source", FAST)
    assert spec is not None and spec.loader is not None
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    compiled = not str(avro_fast.__file__).endswith(".py")
    return [
        pytest.param(avro_fast, id="compiled" if compiled else "imported-source"),
        pytest.param(source, id="source"),
    ]


FAST_IMPLS = _fast_impls()


def test_avro_fast_is_what_the_schemas_make() -> None:
    """The committed generated module is the generator's output for today's schemas (run
    `python -m pipeline.dev.build` after changing a schema or the generator)."""
    from pipeline.dev.build import FAST, fast_source

    assert FAST.read_text() == fast_source(Settings().schemas_dir)


def test_the_codec_uses_the_generated_code_for_the_newest_schemas() -> None:
    from pipeline.adapters.avro import fast as avro_fast
    from pipeline.adapters.avro.compiler import schema_digest

    for kind, sv in CODEC.current.items():
        write, read = avro_fast.CODE[schema_digest(sv.schema)]
        assert (sv.write, sv.read) == (write, read), kind


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("kind", sorted(CODEC.current))
def test_generated_code_matches_fastavro(impl: Any, kind: str) -> None:
    from pipeline.adapters.avro.compiler import schema_digest

    sv = CODEC.current[kind]
    write, read = impl.CODE[schema_digest(sv.schema)]

    @settings(max_examples=100, deadline=None)
    @given(datum(sv.schema), st.data())
    def check(record: dict[str, Any], data: st.DataObject) -> None:
        expected = fastavro_bytes(sv.parsed, record)
        assert write(record) == expected
        assert read(expected, 0) == (fastavro_read(sv.parsed, expected)[0], len(expected))
        i = data.draw(st.integers(0, max(0, len(expected) - 1)))  # garbage: stricter, never looser
        bad = expected[:i] + bytes([expected[i] ^ data.draw(st.integers(1, 255))]) + expected[i + 1 :]
        for garbage in (bad, expected[:i], data.draw(st.binary(max_size=60))):
            try:
                got, end = read(garbage, 0)
            except Exception:
                continue
            if end <= len(garbage):
                assert (got, end) == fastavro_read(sv.parsed, garbage[:end])

    check()


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("raw", [b"\x80" * 9 + b"\x03", b"\xff" * 9 + b"\x7f", b"\x80" * 11])
def test_generated_read_long_refuses_what_is_not_a_long(impl: Any, raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"64-bit|10 bytes"):
        impl.read_long(raw, 0)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_generated_charge_object_writer_is_fastavros_bytes(impl: Any) -> None:
    """Every traffic shape of Charge, written straight from the object by the generated
    code, is the bytes fastavro writes for its dict."""
    from pipeline.adapters.avro.compiler import schema_digest
    from pipeline.adapters.avro.records import charge_to_avro
    from pipeline.adapters.files import load_rates
    from pipeline.dev import traffic
    from processors.engine import Engine
    from processors.inputs import cdr_from_dict, tenant_from_dict

    sv = CODEC.current["charge"]
    write = impl.OBJECT_WRITERS[("charge", schema_digest(sv.schema))]
    tenants = traffic.tenants(8, seed=5, prefix="gen", start=PINNED)
    engine = Engine([tenant_from_dict(t) for t in tenants], load_rates(Settings().rates_file))
    n = 0
    for i, row in enumerate(traffic.cdrs(tenants, 1500, seed=6, start=PINNED + timedelta(days=2))):
        # charged_at: one batch's object for a few charges, then the next batch's (its
        # encoding is kept from one charge to the next while it is the same object)
        now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC) + timedelta(seconds=i // 7, microseconds=i // 7)
        done = engine.process(cdr_from_dict(row))  # type: ignore[arg-type]
        if done is not None:
            charge = done[0]
            assert write(charge, i % 8, 10**12 + i, now) == fastavro_bytes(
                sv.parsed, charge_to_avro(charge, i % 8, 10**12 + i, now)
            )
            n += 1
    assert n > 1000


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_every_varint_length_is_fastavros_at_its_edges(impl: Any) -> None:
    """Each branch of the varint writer (1 to 10 bytes, tables or arithmetic) at both
    edges of every length, positive and negative, and timestamps of either sign."""
    parsed = parse_schema("long")
    edges = {0, LONG_MAX, LONG_MIN}
    for bits in range(1, 64):
        for z in ((1 << bits) - 1, 1 << bits, (1 << bits) + 1):
            if z < 1 << 64:
                edges.add((z >> 1) ^ -(z & 1))  # the long whose zig-zag is z
    for n in sorted(edges):
        assert impl.write_long(n) == impl._varint(n) == fastavro_bytes(parsed, n), n
    ts = parse_schema({"type": "long", "logicalType": "timestamp-micros"})
    for dt in (
        datetime(2026, 11, 28, 9, 58, 1, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
    ):
        assert impl.write_timestamp_micros(dt) == impl.write_timestamp_micros_same(dt) == fastavro_bytes(ts, dt), dt
        assert impl.write_timestamp_micros_same(dt) == fastavro_bytes(ts, dt)  # kept from the call before
    with pytest.raises(OverflowError):
        impl._varint(LONG_MAX + 1)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_vocabulary_strings_are_the_same_bytes_before_and_after_the_cache_fills(impl: Any) -> None:
    """write_vocab caches a string's encoding; once VOCABULARY_MAX distinct strings are in,
    it starts again: every answer, cached or not, is write_string's."""
    words = ["DE", "user-\u00e9\u6f22", "", "x" * 5000] + [f"tenant-{i}" for i in range(impl.VOCABULARY_MAX + 10)]
    for _ in range(2):  # the second pass reads the cache (or refills it)
        for w in words:
            assert impl.write_vocab(w) == impl.write_string(w)
            assert impl.write_vocab_some(w) == b"\x02" + impl.write_string(w)
    assert len(impl._VOCAB) <= impl.VOCABULARY_MAX
    with pytest.raises((TypeError, AttributeError)):  # not a string: the writer fails, the dict path serves
        impl.write_vocab(42)


def test_every_traffic_cdr_comes_back_from_avro_equal() -> None:
    """A CDR through the codec and `cdr_from_avro` (which builds Cdr positionally) is the
    same CDR, field for field: traffic CDRs with every subset of the optional fields
    given (each a distinct value), and either routing."""
    from dataclasses import replace

    from pipeline.adapters.avro.records import cdr_from_avro, cdr_to_avro
    from pipeline.dev import traffic
    from processors.inputs import cdr_from_dict
    from processors.model import Cdr

    optional = ("usage_country", "conference_id", "licence_capability", "graph_call_id")
    optional += ("user_principal_name", "user_display_name")
    tenants = traffic.tenants(10, seed=8, prefix="rt", start=PINNED)
    shapes = set()
    for i, row in enumerate(traffic.cdrs(tenants, 1000, seed=9, start=PINNED + timedelta(days=2))):
        cdr = cdr_from_dict(row)
        assert isinstance(cdr, Cdr)
        given = {name: f"{name}-{i}"[:2] if name == "usage_country" else f"{name}-{i}" for name in optional}
        shape = {name: given[name] if i >> bit & 1 else None for bit, name in enumerate(optional)}
        cdr = replace(cdr, **shape, routing="direct_routing" if i & 64 else "calling_plan")
        message = CODEC.encode("cdr", cdr_to_avro(cdr))
        _, record = CODEC.decode(message, expect="cdr")
        assert cdr_from_avro(record) == cdr
        assert DECODE_CDR(message) == cdr  # the worker's reader, straight to a Cdr
        shapes.add((*(v is None for v in record.values()), cdr.routing))
    assert len(shapes) == 128


def _outcome(decode: Any, data: bytes) -> Any:
    """What a decoder makes of `data`: its value, or its error's type and message."""
    try:
        return decode(data)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def _cdr_decoders() -> Any:
    from pipeline.adapters.avro.records import cdr_decoder

    return cdr_decoder(CODEC, 60)


DECODE_CDR = _cdr_decoders()


def _by_record(data: bytes) -> Any:
    from pipeline.adapters.avro.records import cdr_from_avro

    return cdr_from_avro(CODEC.decoder("cdr")(data), 60)


@settings(max_examples=300, deadline=None)
@given(datum(CODEC.current["cdr"].schema), st.data())
def test_the_worker_reads_a_cdr_message_as_the_record_path_does(record: dict[str, Any], data: st.DataObject) -> None:
    """`cdr_decoder` (avro_fast builds the Cdr straight from the bytes) and the record path
    (`cdr_from_avro` of the decoded dict) agree on every message: the same Cdr, the same
    refusal (empty ids, bad durations, numbers, routing), the same error for bad bytes."""
    if data.draw(st.booleans()):  # a valid call half of the time, with the record's strings
        start = record["start_time"]
        seconds = data.draw(st.integers(0, 7200))
        record |= {
            "call_type": data.draw(st.sampled_from(["user_out", "user_in", "conf_out", "bogus"])),
            "end_time": start + timedelta(seconds=seconds),
            "duration_s": seconds + data.draw(st.integers(-90, 90)),
            "callee_number": data.draw(st.sampled_from(["+4930123456", "+1 555", "112", ""])),
            "routing": data.draw(st.sampled_from([None, "", "direct_routing", "calling_plan", "x"])),
        }
    message = CODEC.encode("cdr", record)
    assert _outcome(DECODE_CDR, message) == _outcome(_by_record, message)
    i = data.draw(st.integers(0, len(message) - 1))
    bad = message[:i] + bytes([message[i] ^ data.draw(st.integers(1, 255))]) + message[i + 1 :]
    for garbage in (bad, message[:i], message + b"\x00"):
        assert _outcome(DECODE_CDR, garbage) == _outcome(_by_record, garbage)
