"""The charging worker's Redis apply is packed by `pipeline.adapters.store` itself (redis-py's
packer cost 2.2-2.4 us per call): the bytes on the wire must be exactly what redis-py sends
for the same command, for any tenant id, call id, stored result and state."""

from __future__ import annotations

import redis
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.adapters.store import SeenWindow, apply_batch_command, call_digest, resp_command, tenant_key
from processors.ledger import TenantState

SHA = "0123456789abcdef0123456789abcdef01234567"


def redis_py_bytes(*args: object) -> bytes:
    return b"".join(redis.Connection().pack_command(*args))


def reference(
    writes: list[tuple[str, int, TenantState, dict[str, bytes]]], seen: SeenWindow, committed: dict[str, list[bytes]]
) -> bytes:
    """What `Store._apply_batch` would hand redis-py if it did not pack the command itself."""
    keys: list[str] = []
    args: list[object] = [len(writes), seen.epoch, seen.span, seen.expires, seen.step, len(committed)]
    for tid, ver, state, calls in writes:
        keys.append(tenant_key(tid))
        args += [len(calls), ver, state.to_json(pools=False)]
        dirty = [k for k in state.pools_dirty if k in state.pool_used]
        args.append(len(dirty))
        for k in dirty:
            args += [f"p:{k}", state.pool_used[k]]
        for c, value in calls.items():
            args += [call_digest(c), value]
    for tid, digests in committed.items():
        keys.append(tenant_key(tid))
        args += [len(digests), *digests]
    return redis_py_bytes("EVALSHA", SHA, len(keys), *keys, *args)


SEEN = SeenWindow.at(1_796_000_000, 45)


states = st.builds(
    TenantState,
    deficit=st.integers(0, 10**12),
    pool_used=st.dictionaries(st.text(max_size=12), st.integers(0, 10**6), max_size=3),
    pools_dirty=st.sets(st.text(max_size=12), max_size=3),
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
# call id, non-ASCII text; and no write at all, only committed outputs to drop
digests = st.lists(st.binary(min_size=12, max_size=12), max_size=4)


@given(writes, st.dictionaries(st.text(min_size=1, max_size=20), digests, max_size=3))
@example([("t-é", 7, TenantState(), {"c\u00a01": b"\x00" * 7000, "": b""})], {})
@example([], {"t": [call_digest("c1")]})
def test_the_apply_is_packed_byte_for_byte_as_redis_py_packs_it(
    ws: list[tuple[str, int, TenantState, dict[str, bytes]]], committed: dict[str, list[bytes]]
) -> None:
    named: dict[str, bytes] = {}
    assert apply_batch_command(SHA, ws, SEEN, committed, named) == reference(ws, SEEN, committed)
    assert named == {c: call_digest(c) for _, _, _, calls in ws for c in calls}  # dropped by these later


@given(st.lists(st.binary(max_size=50), min_size=1, max_size=5))
def test_a_plain_command_is_packed_as_redis_py_packs_it(args: list[bytes]) -> None:
    assert resp_command(b"WAIT", *args) == redis_py_bytes(b"WAIT", *args)


@given(st.floats(1.6e9, 2.5e9), st.integers(1, 400), st.floats(0, 1))
def test_the_seen_index_looks_in_every_epoch_a_call_of_the_window_can_be_in(
    now: float, window_days: int, back: float
) -> None:
    """A call charged at any moment within the dedup window (and a day) before now is in an
    epoch the write looks in, and that epoch's index outlives the window for it."""
    keep = (window_days + 1) * 86400
    charged = now - back * keep
    then, seen = SeenWindow.at(charged, window_days), SeenWindow.at(now, window_days)
    assert then.epoch in seen.epochs()
    assert then.expires >= charged + keep
    assert seen.span <= 7  # a long window is not more lookups
