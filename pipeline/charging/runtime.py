"""CPython settings for a long-running charging worker, and the fault injection the crash
tests use to kill it between two steps of a batch."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Callable

from processors import numbers

log = logging.getLogger(__name__)


def tune_runtime() -> None:
    """CPython settings for a long-running worker (measured in one process, A/B):

    * Fewer, cheaper cyclic-GC passes: what exists after start (schemas, number metadata,
      rate card) is frozen out of collection, and the worker collects between batches
      (`collect_between_batches`) rather than every 700 allocations. The charging path
      makes many short-lived records and almost no cycles.
    * A 1 ms thread switch interval instead of 5 ms: when Redis answers step 5, the
      thread waiting on it gets the interpreter back soon instead of queueing behind the
      decoding of the next batch (about 20 % more CDR/s in one process).
    * Every country's number metadata prepared up front (`processors.numbers.warm`, about
      0.3 s): the first call to a country no longer stalls its batch by up to 100 ms, and
      the metadata is frozen out of collection with the rest.
    """
    numbers.warm()
    gc.freeze()
    gc.set_threshold(*GC_SAFETY_NET)
    sys.setswitchinterval(0.001)


# Cyclic GC runs between batches (`collect_between_batches`), when a batch's records are
# already freed by reference counting; the collector's own thresholds stay only as a net.
# Inside a batch every Item, Cdr and Charge is alive until the commit: a collection there
# walks them all and finds nothing to free (measured: 5-6 % of the worker's CPU, and pauses
# in the middle of a batch's latency).
GC_SAFETY_NET = (400_000, 20, 20)  # never reached by a batch of 2 000 CDRs (~60 000 objects)
GC_BETWEEN_BATCHES = 5_000  # young objects that make a collection between batches worth it


def collect_between_batches() -> None:
    """A generation-0 collection (older ones as CPython's own counters would) when enough
    young objects outlived their batch: what ends up in reference cycles is freed here."""
    young, middle, old = gc.get_count()
    if young < GC_BETWEEN_BATCHES:
        return
    gc.collect(2 if old >= GC_SAFETY_NET[2] else 1 if middle >= GC_SAFETY_NET[1] else 0)


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Faults:
    """`CALLCHARGE_CRASH_AFTER=STEP[:BATCH]`: die right after step STEP of batch BATCH (1 by
    default) of the commit protocol, as a SIGKILL would (the crash tests). `kill` is what
    dying means: the process's own SIGKILL, or in the component tests an exception that
    leaves the worker where it stood."""

    def __init__(self, spec: str = "", kill: Callable[[], None] = _sigkill) -> None:
        step, _, batch = spec.partition(":")  # another command's spec ("rerate:N") is not ours
        self.step, self.batch = (int(step), int(batch or 1)) if step.isdigit() else (0, 0)
        self.kill = kill

    def after(self, step: int, batch: int) -> None:
        if self.step == step and batch == self.batch:
            log.error("fault injection: SIGKILL after step %d of batch %d", step, batch)
            self.kill()
