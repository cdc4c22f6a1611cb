"""Step 4 of a batch for one tenant: its calls folded into its state
(`processors.admission.fold_batch`) and the records each charge makes, encoded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.avro.records import charge_encoder, event_to_avro
from pipeline.adapters.metrics import ChargingMetrics
from pipeline.adapters.store import CHARGES, EVENTS, Snapshot, StoredCall, pack_call
from pipeline.charging.intake import Item
from processors.admission import Origin, fold_batch
from processors.charging import Book
from processors.inputs import DeadLetterReason, Rejected
from processors.ledger import TenantState
from processors.rating import RateCard

log = logging.getLogger(__name__)


class Fold:
    def __init__(self, codec: Codec, rates: RateCard, metrics: ChargingMetrics, window_days: int) -> None:
        self.codec = codec
        self.rates = rates
        self.metrics = metrics
        self.window_days = window_days
        self._encode_charge = charge_encoder(codec)

    def tenant(
        self,
        book: Book,
        stored_state: TenantState | None,
        stored: dict[str, StoredCall],
        items: list[Item],
        now: datetime,
        window: tuple[datetime, datetime],
        reread: Callable[[], Snapshot],
    ) -> tuple[TenantState, dict[str, bytes]] | None:
        """Step 4 for one tenant: `processors.admission.fold_batch`, then the encoding.

        The fold works on `stored_state` itself, not a copy (a copy costs a dict of every
        pool the tenant drew this month, per batch): whatever does not end in a write drops
        the state the worker keeps (`StateApply._settle`; a Redis error clears them all).

        A call whose records cannot be encoded (a value past a field's range that the core's
        bounds did not catch) goes to the DLQ with its reason, and the tenant's batch is
        folded again without it, on its state as Redis has it (`reread`): one call never stops
        its tenant, the worker or the others. None: that state could not be read again."""
        tid = book.tenant.tenant_id
        while True:
            try:
                return self._once(book, stored_state, stored, items, now, window)
            except _Unencodable as exc:
                log.error("tenant %s: call %s cannot be encoded: %s", tid, exc.call_id, exc.why)
                exc.item.reject = Rejected(
                    DeadLetterReason.MONEY_OUT_OF_RANGE,
                    f"tenant {tid}: call {exc.call_id}: its records cannot be encoded: {exc.why}",
                )
                items = [item for item in items if item is not exc.item]
                if stored_state is not None:  # folded in place: the state as stored, again
                    again = reread()
                    if again.unreadable is not None:
                        for item in items:
                            item.reject = Rejected(DeadLetterReason.STATE_UNREADABLE, str(again.unreadable))
                        return None
                    stored_state = again.state  # a version moved since fails the compare-and-set

    def _once(
        self,
        book: Book,
        stored_state: TenantState | None,
        stored: dict[str, StoredCall],
        items: list[Item],
        now: datetime,
        window: tuple[datetime, datetime],
    ) -> tuple[TenantState, dict[str, bytes]]:
        folded = fold_batch(
            book,
            stored_state,
            [(item.cdr, Origin(item.partition, item.offset)) for item in items if item.cdr is not None],
            {call_id: Origin(s.partition, s.offset) for call_id, s in stored.items()},
            self.rates,
            window[0],
            self.window_days,
            in_place=True,
            latest=window[1],
        )
        currency = book.tenant.currency
        encode_charge = self._encode_charge
        new_calls: dict[str, bytes] = {}
        for item, outcome in zip(items, folded.outcomes, strict=True):
            charge = outcome.charge
            if charge is not None:  # the usual case first
                partition, offset = item.partition, item.offset
                try:
                    records: tuple[tuple[int, bytes], ...] = ((CHARGES, encode_charge(charge, partition, offset, now)),)
                    if outcome.events:
                        records += tuple(
                            (EVENTS, self.codec.encode("balance_event", event_to_avro(e, currency)))
                            for e in outcome.events
                        )
                except (OverflowError, ValueError, TypeError) as exc:
                    raise _Unencodable(item, charge.call_id, str(exc)) from None
                item.reject, item.records, item.charge = None, records, charge
                new_calls[charge.call_id] = pack_call(partition, offset, records)
                continue
            item.reject, item.records, item.charge = outcome.reject, (), None
            if outcome.replay:
                item.records = stored[outcome.cdr.call_id].records
                self.metrics.replayed.inc()
        return folded.state, new_calls


class _Unencodable(Exception):
    """A charged call of a tenant's batch whose records cannot be encoded (`Fold.tenant`)."""

    def __init__(self, item: Item, call_id: str, why: str) -> None:
        super().__init__(why)
        self.item, self.call_id, self.why = item, call_id, why
