"""The worker's runtime settings: cyclic garbage is still freed when GC runs between batches."""

from __future__ import annotations

import gc
import weakref

from pipeline.charging.runtime import GC_BETWEEN_BATCHES, GC_SAFETY_NET, collect_between_batches


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycles(n: int) -> list[weakref.ref[Node]]:
    refs = []
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
        refs.append(weakref.ref(a))
    return refs


def test_cycles_left_by_a_batch_are_freed_between_batches() -> None:
    before = gc.get_threshold()
    gc.set_threshold(*GC_SAFETY_NET)
    try:
        gc.collect()
        refs = _cycles(GC_BETWEEN_BATCHES)  # 2 objects a cycle: past the trigger
        assert all(r() is not None for r in refs)  # the safety net alone did not run
        collect_between_batches()
        assert all(r() is None for r in refs)
    finally:
        gc.set_threshold(*before)


def test_a_quiet_moment_costs_no_collection() -> None:
    before = gc.get_threshold()
    gc.set_threshold(*GC_SAFETY_NET)
    try:
        gc.collect()
        refs = _cycles(10)
        collect_between_batches()  # a handful of young objects: not worth a pass
        assert all(r() is not None for r in refs)
        gc.collect()
        assert all(r() is None for r in refs)
    finally:
        gc.set_threshold(*before)
