"""The Avro primitives every compiled writer and reader calls: varints, strings,
timestamps. Typed for mypyc: `make setup` compiles this module with the generated
`fast.py` where a C compiler exists; as plain Python it behaves the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
LONG_MIN: Final = -(1 << 63)
LONG_MAX: Final = (1 << 63) - 1
INT_MIN: Final = -(1 << 31)
INT_MAX: Final = (1 << 31) - 1

# Varints 14 bits at a time: the unsigned varint of every z < 2**14 (one or two bytes), and
# the two continuation bytes carrying any 14 bits. A timestamp is 4 steps instead of 8.
_RAW: Final[list[bytes]] = []
_CONT2: Final[list[bytes]] = []
for _z in range(1 << 14):
    _RAW.append(bytes([_z]) if _z < 0x80 else bytes([(_z & 0x7F) | 0x80, _z >> 7]))
    _CONT2.append(bytes([(_z & 0x7F) | 0x80, (_z >> 7) | 0x80]))
# zig-zag varints of small non-negative longs (lengths, counts, minutes, partitions)
_SMALL: Final = 4096
_VARINT: Final = [_RAW[n << 1] for n in range(_SMALL)]
# the continuation bits of a k-byte varint: the top bit of every byte but the last
_CONTINUED: Final = [sum(0x80 << (8 * i) for i in range(k - 1)) for k in range(9)]


def _varint(n: int) -> bytes:
    """Avro zig-zag varint of a long. Unrolled by size: up to 4 bytes (money in
    micro-units) from the tables; 5 to 8 bytes (a timestamp in microseconds takes 8) by
    spreading the 7-bit groups over one integer and writing it little-endian (table
    lookups that far apart miss the CPU's caches)."""
    z = (n << 1) ^ (n >> 63)  # in [0, 2**64) exactly when n fits a long
    if z < 0x4000:
        return _RAW[z]
    if z < 0x10000000:
        return _CONT2[z & 0x3FFF] + _RAW[z >> 14]
    if z < 0x100000000000000:
        k = 5 if z < 0x800000000 else 6 if z < 0x40000000000 else 7 if z < 0x2000000000000 else 8
        w = (
            (z & 0x7F)
            | ((z << 1) & 0x7F00)
            | ((z << 2) & 0x7F0000)
            | ((z << 3) & 0x7F000000)
            | ((z << 4) & 0x7F00000000)
            | ((z << 5) & 0x7F0000000000)
            | ((z << 6) & 0x7F000000000000)
            | ((z << 7) & 0x7F00000000000000)
        )
        return (w | _CONTINUED[k]).to_bytes(k, "little")
    if not 0 <= z < 1 << 64:
        raise OverflowError(f"{n} does not fit an Avro long")
    out = _CONT2[z & 0x3FFF] + _CONT2[(z >> 14) & 0x3FFF] + _CONT2[(z >> 28) & 0x3FFF] + _CONT2[(z >> 42) & 0x3FFF]
    return out + _RAW[z >> 56]


def write_long(n: int) -> bytes:
    if 0 <= n < _SMALL:
        return _VARINT[n]
    return _varint(n)


def write_int(n: int) -> bytes:
    if not INT_MIN <= n <= INT_MAX:
        raise OverflowError(f"{n} does not fit an Avro int")
    return write_long(n)


def write_string(s: str) -> bytes:
    b = s.encode()
    n = len(b)
    return (_VARINT[n] if n < _SMALL else _varint(n)) + b


def write_bytes(b: Any) -> bytes:
    if not isinstance(b, (bytes, bytearray)):
        raise TypeError(f"{type(b).__name__} is not bytes")
    n = len(b)
    return (_VARINT[n] if n < _SMALL else _varint(n)) + bytes(b)


# Strings from a small vocabulary (a tenant, a user, a classification, a currency, a
# month): encoded once, then looked up. `writer_source(..., vocabulary=...)` names the
# fields that take this path; a call id or a phone number (a long tail) never does. The
# cache is bounded: full, it starts again (no stale entry is possible: a key is the string).
VOCABULARY_MAX: Final = 65536
_VOCAB: Final[dict[str, bytes]] = {}
_VOCAB_SOME: Final[dict[str, bytes]] = {}  # the same after a union's branch 1 (null first)


def write_vocab(s: str) -> bytes:
    b = _VOCAB.get(s)
    if b is None:
        b = write_string(s)
        if len(_VOCAB) >= VOCABULARY_MAX:
            _VOCAB.clear()
        _VOCAB[s] = b
    return b


def write_vocab_some(s: str) -> bytes:
    """b"\\x02" + write_string(s): the string branch of a ["null", "string"] union."""
    b = _VOCAB_SOME.get(s)
    if b is None:
        b = b"\x02" + write_string(s)
        if len(_VOCAB_SOME) >= VOCABULARY_MAX:
            _VOCAB_SOME.clear()
        _VOCAB_SOME[s] = b
    return b


def write_timestamp_micros(dt: datetime | int) -> bytes:
    if isinstance(dt, datetime):
        if dt.tzinfo is None:
            raise TypeError("naive datetime")  # fastavro's rule for these applies
        d = dt - EPOCH  # whole microseconds (no timedelta division: fewer steps)
        days: int = d.days
        seconds: int = d.seconds
        micros: int = d.microseconds
        return write_long((days * 86400 + seconds) * 1000000 + micros)
    return write_long(dt)


_last_timestamp: tuple[datetime | int | None, bytes] = (None, b"")


def write_timestamp_micros_same(dt: datetime | int) -> bytes:
    """`write_timestamp_micros` of a value that is usually the very object of the last
    call: an argument of the whole call (a batch's charged_at, on every charge of it)."""
    global _last_timestamp
    last, encoded = _last_timestamp  # one tuple: read and replaced whole, thread-safe
    if dt is last:
        return encoded
    encoded = write_timestamp_micros(dt)
    _last_timestamp = (dt, encoded)
    return encoded


def write_boolean(v: Any) -> bytes:
    if v is True:
        return b"\x01"
    if v is False:
        return b"\x00"
    raise TypeError(f"{v!r} is not a boolean")


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the zig-zag varint at `pos`."""
    shift = z = 0
    while True:
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            if shift == 63 and b > 1:  # the 10th byte holds bit 63 only
                raise ValueError("varint outside the signed 64-bit range")
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
