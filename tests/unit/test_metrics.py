"""Worker metrics that are fed in bulk read exactly as if fed one value at a time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from pipeline.adapters.metrics import LATENCY_BUCKETS, BatchHistogram


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(0, 120, allow_nan=False) | st.sampled_from(LATENCY_BUCKETS), max_size=30)))
def test_observe_many_reads_like_observe_one_by_one(batches: list[list[float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BatchHistogram("lat_seconds", "x", buckets=LATENCY_BUCKETS, registry=ours)
    single = Histogram("lat_seconds", "x", buckets=LATENCY_BUCKETS, registry=theirs)
    for batch in batches:
        bulk.observe_many(batch)
        for value in batch:
            single.observe(value)
    got, want = samples(ours), samples(theirs)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key  # the sum is added per batch
