"""Avro single-object encoding (marker C3 01, 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's canonical form, then the binary payload).

Every version of every schema in `schemas/` is known by fingerprint; decoding resolves
from the writer's version to the newest version (the reader schema) of that record kind.
No schema registry server is needed.

Records are written, and read when the writer is the newest version, by code compiled
from each schema (`compiler.py`); fastavro resolves older writers and explains a
datum that does not fit.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from pipeline.adapters.avro.compiler import (
    Access,
    compile_reader,
    compile_writer,
    schema_digest,
    schema_files,
)
from pipeline.errors import DecodeError, UnknownSchemaError, Unsupported

MARKER = b"\xc3\x01"
HEADER_LEN = 10

log = logging.getLogger(__name__)


def _load_fast() -> Any:
    """`fast` (the generated code, compiled by mypyc where `make setup` could: which build
    loads is chosen once, in processors/native.py), or None if it cannot be imported: then
    every schema is compiled here with `exec`."""
    try:
        from pipeline.adapters.avro import fast

        return fast
    except Exception as exc:  # a broken build must not stop the pipeline
        log.warning("pipeline.adapters.avro.fast cannot be used (%s); Avro runs as exec-compiled Python", exc)
        return None


_FAST = _load_fast()


def avro_mode() -> str:
    """How the hot path's Avro runs, in words (the worker logs it at start)."""
    if _FAST is None:
        return "exec-compiled Python (pipeline.adapters.avro.fast unavailable)"
    if str(getattr(_FAST, "__file__", "")).endswith(".py"):
        from processors import native  # fast is compiled in the core's group: it runs as the core does

        return f"generated Python (pipeline/adapters/avro/fast.py; the core's group runs {native.mode()})"
    return "compiled with mypyc (pipeline/adapters/avro/fast, in the core's group)"


@dataclass(frozen=True)
class SchemaVersion:
    kind: str  # "cdr"
    version: int
    fingerprint: bytes
    parsed: Any
    # Straight-line Python for this exact schema (pipeline/adapters/avro/compiler.py), or None
    # where the schema uses a type the compiler does not handle: fastavro serves it.
    write: Callable[[dict[str, Any]], bytes] | None = None
    read: Callable[[bytes, int], tuple[dict[str, Any], int]] | None = None
    schema: Any = None  # as written in schemas/ (what the compiler reads)


class Codec:
    def __init__(self, schemas_dir: Path):
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        self.current: dict[str, SchemaVersion] = {}
        files = schema_files(schemas_dir)
        if not files:
            raise FileNotFoundError(f"no Avro schemas in {schemas_dir}")
        for kind, version, schema in files:
            self.add(kind, version, schema)

    def add(self, kind: str, version: int, schema: Any) -> SchemaVersion:
        canonical = to_parsing_canonical_form(parse_schema(schema, _write_hint=False, _force=True))
        fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        # The write hint marks the dict as parsed: without it fastavro re-parses the
        # schema on every read and write (measured: 2x slower encode, 2.4x slower decode).
        fast = _FAST.CODE.get(schema_digest(schema)) if _FAST is not None else None
        if fast is not None:  # generated from this very schema text (fast.py)
            write, read = fast
        else:
            try:
                write, read = compile_writer(schema), compile_reader(schema)
            except Unsupported:
                write, read = None, None
        sv = SchemaVersion(kind, version, fp, parse_schema(schema, _force=True), write, read, schema)
        self.by_fingerprint[fp] = sv
        if kind not in self.current or self.current[kind].version < version:
            self.current[kind] = sv
        return sv

    def encode(self, kind: str, record: dict[str, Any], version: int | None = None) -> bytes:
        sv = self.current[kind] if version is None else self._version(kind, version)
        if sv.write is not None:
            try:
                return MARKER + sv.fingerprint + sv.write(record)
            except Exception:  # a datum that does not fit: fastavro says why below
                pass
        buf = io.BytesIO()
        buf.write(MARKER)
        buf.write(sv.fingerprint)
        schemaless_writer(buf, sv.parsed, record)
        return buf.getvalue()

    def object_encoder(
        self,
        kind: str,
        access: Access,
        extra: tuple[str, ...],
        to_record: Callable[..., dict[str, Any]],
        fast: bool = False,
        vocabulary: frozenset[str] = frozenset(),
    ) -> Callable[..., bytes]:
        """`encode(obj, *extra) -> bytes` of the newest `kind`, reading the fields straight
        off a domain object (`access`): no dict in between, the same bytes as
        `encode(kind, to_record(obj, *extra))`, which serves whatever does not fit.
        `fast`: use the generated writer (`fast`) for `kind` (records.charge_encoder only)."""
        sv = self.current[kind]
        header = MARKER + sv.fingerprint
        generated = _FAST.OBJECT_WRITERS.get((kind, schema_digest(sv.schema))) if _FAST is not None else None
        try:
            # fast's was generated with the access of records.charge_encoder (a test
            # keeps them equal); any other object encoder is compiled here
            write = (
                generated if generated is not None and fast else compile_writer(sv.schema, access, extra, vocabulary)
            )
        except Unsupported:
            return lambda obj, *args: self.encode(kind, to_record(obj, *args))

        def encode(obj: Any, *args: Any) -> bytes:
            try:
                return header + write(obj, *args)
            except Exception:  # a value that does not fit: the dict path says why
                return self.encode(kind, to_record(obj, *args))

        return encode

    def object_reader(self, kind: str) -> tuple[bytes, Callable[[bytes, int], tuple[Any, int]]] | None:
        """(header, read) for the newest `kind`: `read(data, HEADER_LEN)` is fast.py's
        domain object built straight from a message that starts with `header`, and the
        position it read to (a caller checks that is the end, and otherwise decodes with
        `decode`, which says what is wrong). None when fast.py has no such reader."""
        sv = self.current[kind]
        read = _FAST.OBJECT_READERS.get((kind, schema_digest(sv.schema))) if _FAST is not None else None
        return None if read is None else (MARKER + sv.fingerprint, read)

    def decoder(self, kind: str) -> Callable[[bytes], dict[str, Any]]:
        """`decode(data) -> record` of a `kind` message: `self.decode(data, expect=kind)[1]`,
        with one comparison of the header in front for the usual message (the newest
        version, read by its compiled reader, nothing left over). Anything else (another
        version, another kind, bad bytes) takes `decode` itself, which also says what is
        wrong with it."""
        sv = self.current[kind]
        header, read = MARKER + sv.fingerprint, sv.read

        def slow(data: bytes) -> dict[str, Any]:
            return self.decode(data, expect=kind)[1]

        if read is None:
            return slow

        def decode(data: bytes) -> dict[str, Any]:
            if type(data) is bytes and data[:HEADER_LEN] == header:
                try:
                    record, end = read(data, HEADER_LEN)
                except Exception:  # decode() raises the DecodeError that says what broke
                    return slow(data)
                if end == len(data):
                    return record
            return slow(data)

        return decode

    def decode(self, data: bytes, expect: str | None = None) -> tuple[str, dict[str, Any]]:
        """(kind, record) of a single-object-encoded message, resolved to the newest version.

        Raises DecodeError (not single-object encoded, corrupt payload) or
        UnknownSchemaError (fingerprint not among our schemas, or not the expected kind).
        """
        if not isinstance(data, (bytes, bytearray)) or len(data) < HEADER_LEN or data[:2] != MARKER:
            raise DecodeError("not Avro single-object encoded (no C3 01 marker)")
        writer = self.by_fingerprint.get(bytes(data[2:HEADER_LEN]))
        if writer is None:
            raise UnknownSchemaError(f"unknown schema fingerprint {bytes(data[2:HEADER_LEN]).hex()}")
        if expect is not None and writer.kind != expect:
            raise UnknownSchemaError(f"expected a {expect} record, got {writer.kind}")
        reader = self.current[writer.kind]
        if reader is writer and writer.read is not None:
            try:
                record, end = writer.read(data, HEADER_LEN)
            except IndexError:
                raise DecodeError(f"corrupt {writer.kind} payload: truncated") from None
            except Exception as exc:  # bad varint, bad UTF-8, union branch out of range, ...
                raise DecodeError(f"corrupt {writer.kind} payload: {type(exc).__name__}: {exc}") from None
            if end != len(data):
                problem = "truncated" if end > len(data) else f"{len(data) - end} trailing bytes"
                raise DecodeError(f"corrupt {writer.kind} payload: {problem}")
            return writer.kind, record
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            resolved = schemaless_reader(buf, writer.parsed, None if reader is writer else reader.parsed)
        except Exception as exc:  # fastavro raises many kinds on garbage
            raise DecodeError(f"corrupt {writer.kind} payload: {type(exc).__name__}") from None
        if buf.tell() != len(data):
            raise DecodeError(f"corrupt {writer.kind} payload: {len(data) - buf.tell()} trailing bytes")
        if not isinstance(resolved, dict):
            raise DecodeError(f"{writer.kind} payload is not a record")
        return writer.kind, resolved

    def _version(self, kind: str, version: int) -> SchemaVersion:
        for sv in self.by_fingerprint.values():
            if sv.kind == kind and sv.version == version:
                return sv
        raise KeyError(f"no schema {kind}.v{version}")


def fingerprints_text(schemas_dir: Path) -> str:
    """`schemas/fingerprints.json`: every schema file's name and the fingerprint its records
    carry (hex, in the byte order they appear in a message), for readers that do not compute
    fingerprints themselves (Apache avro computes others: docs/consuming.md)."""
    codec = Codec(schemas_dir)
    table = {f"{sv.kind}.v{sv.version}": sv.fingerprint.hex() for sv in codec.by_fingerprint.values()}
    return json.dumps(dict(sorted(table.items())), indent=2) + "\n"
