"""The charging worker's Redis apply is packed by `pipeline.adapters.store` itself (redis-py's
packer cost 2.2-2.4 us per call): the bytes on the wire must be exactly what redis-py sends
for the same command, for any tenant id, call id, stored result and state."""

from __future__ import annotations

import redis
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.adapters.store import apply_batch_command, call_key, resp_command, tenant_key
from processors.ledger import TenantState

SHA = "0123456789abcdef0123456789abcdef01234567"


def redis_py_bytes(*args: object) -> bytes:
    return b"".join(redis.Connection().pack_command(*args))


def reference(writes: list[tuple[str, int, TenantState, dict[str, bytes]]], ttl_s: int) -> bytes:
    """What `Store._apply_batch` handed redis-py before it packed the command itself."""
    keys: list[str] = []
    args: list[object] = [ttl_s, len(writes)]
    for tid, ver, state, calls in writes:
        keys.append(tenant_key(tid))
        keys.extend(call_key(tid, c) for c in calls)
        args += [len(calls), ver, state.to_json(), *calls.values()]
    return redis_py_bytes("EVALSHA", SHA, len(keys), *keys, *args)


states = st.builds(
    TenantState,
    deficit=st.integers(0, 10**12),
    pool_used=st.dictionaries(st.text(max_size=12), st.integers(0, 10**6), max_size=3),
    thresholds=st.lists(st.text(max_size=8), max_size=3),
    recharge_in_flight=st.none() | st.text(max_size=10),
)
writes = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=20),
        st.integers(0, 2**40),
        states,
        st.dictionaries(st.text(max_size=40), st.binary(max_size=300), max_size=6),
    ),
    max_size=5,
    unique_by=lambda w: w[0],
)


# a value past redis-py's buffer cut-off (which it sends as a chunk of its own), an empty
# call id, non-ASCII text; and no write at all
@given(writes, st.integers(1, 10**9))
@example([("t-é", 7, TenantState(), {"c\u00a01": b"\x00" * 7000, "": b""})], 4_060_800)
@example([], 1)
def test_the_apply_is_packed_byte_for_byte_as_redis_py_packs_it(
    ws: list[tuple[str, int, TenantState, dict[str, bytes]]], ttl_s: int
) -> None:
    assert apply_batch_command(SHA, ws, ttl_s) == reference(ws, ttl_s)


@given(st.lists(st.binary(max_size=50), min_size=1, max_size=5))
def test_a_plain_command_is_packed_as_redis_py_packs_it(args: list[bytes]) -> None:
    assert resp_command(b"WAIT", *args) == redis_py_bytes(b"WAIT", *args)
