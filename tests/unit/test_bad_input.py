"""One bad input stops nothing: a CDR file's unreadable lines are reported with their line
number and reason while the rest go through, and a CDR's facts are checked against each
other (each a dead-letter reason)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.adapters.files import MAX_LINE_BYTES, read_cdr_lines
from processors.admission import Origin, fold_batch
from processors.charging import prepare
from processors.inputs import (
    NUMBER_TEXT,
    DeadLetterReason,
    Rejected,
    cdr_from_dict,
    number_text,
    parse_time,
    tenant_from_dict,
)
from tests.helpers import fixture_rates, tenant_entry

GOOD = (
    '{"call_id": "c%d", "tenant_id": "T", "user_id": "u1", "call_type": "user_out", "caller_number": "+12125550100",'
    ' "callee_number": "+12125550123", "start_time": "2026-11-10T12:00:00Z", "end_time": "2026-11-10T12:01:00Z",'
    ' "duration_s": 60}'
)


def test_every_unreadable_line_is_reported_and_the_good_ones_go_through(tmp_path: Path) -> None:
    path = tmp_path / "cdrs.jsonl"
    lines = [
        (GOOD % 1).encode(),
        b'{"call_id": "\xff\xfe not utf-8"}',  # a byte that is not UTF-8
        (GOOD % 2).replace('"c2"', '"c2\\udc80"').encode(),  # a lone surrogate escape: valid JSON, not text
        b'{"padding": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}',  # too big for a CDR (and a Kafka message)
        b"{not json",
        (GOOD % 3).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = list(read_cdr_lines(path))
    verdicts = {where: (obj.reason if isinstance(obj, Rejected) else "ok") for where, obj in rows}
    assert verdicts == {
        "line 1": "ok",
        "line 2": DeadLetterReason.UNDECODABLE,
        "line 3": DeadLetterReason.UNDECODABLE,
        "line 4": DeadLetterReason.UNDECODABLE,
        "line 5": DeadLetterReason.UNDECODABLE,
        "line 6": "ok",
    }
    details = {where: str(obj) for where, obj in rows if isinstance(obj, Rejected)}
    assert "not UTF-8" in details["line 2"] and "surrogate" in details["line 3"] and "bytes" in details["line 4"]


def cdr(**over: object) -> dict[str, object]:
    import json

    return {**json.loads(GOOD % 9), **over}


def test_a_duration_that_contradicts_the_timestamps_is_refused() -> None:
    r = cdr_from_dict(cdr(duration_s=86_400, end_time="2026-11-10T12:06:05Z"))  # 365 s by its timestamps
    assert isinstance(r, Rejected) and r.reason == DeadLetterReason.DURATION_MISMATCH and "365" in r.detail
    ok = cdr_from_dict(cdr(duration_s=59))  # within the tolerance (rounding)
    assert not isinstance(ok, Rejected)


def test_a_number_with_letters_is_refused_not_silently_converted() -> None:
    for bad in ("+1212ABC9994", "+1 212 555 0123", "+1(212)5550123"):
        r = cdr_from_dict(cdr(callee_number=bad))
        assert isinstance(r, Rejected) and r.reason == DeadLetterReason.UNPARSABLE_NUMBER, bad


@given(st.text(alphabet=st.sampled_from("+0123456789 \n٣²A"), max_size=24) | st.text(max_size=24))
@example("+" + "1" * 20)
@example("+" + "1" * 21)
@example("1" * 20 + "\n")
@example("+")
@example("++1")
@example("\u0663")  # an Arabic-Indic digit: a digit to str.isdigit, not to [0-9]
def test_number_text_is_the_patterns_answer(text: str) -> None:
    """The check without a regular expression says what NUMBER_TEXT says, for any text."""
    assert number_text(text) == (NUMBER_TEXT.match(text) is not None)


def test_a_call_starting_in_the_future_is_refused() -> None:
    book = prepare(tenant_from_dict(tenant_entry({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "5"})))
    now = datetime(2026, 11, 10, 12, 30, tzinfo=UTC)
    far = cdr_from_dict(cdr(start_time="9999-12-31T00:00:00Z", end_time="9999-12-31T00:01:00Z"))
    near = cdr_from_dict(cdr(call_id="near"))
    assert not isinstance(far, Rejected) and not isinstance(near, Rejected)
    folded = fold_batch(
        book,
        None,
        [(far, Origin(0, 1)), (near, Origin(0, 2))],
        {},
        fixture_rates(),
        latest=now + timedelta(seconds=300),
    )
    first, second = folded.outcomes
    assert first.reject is not None and first.reject.reason == DeadLetterReason.FUTURE_START
    assert second.charge is not None and all(not k.startswith("9999") for k in folded.state.pool_used)


def test_times_in_the_shapes_platforms_send_are_read_and_a_time_without_zone_is_not() -> None:
    utc = datetime(2019, 11, 1, 0, 0, 25, 105123, tzinfo=UTC)
    for text in (
        "2019-11-01T00:00:25.1051234Z",  # Graph: 7 fractional digits (truncated to the microsecond)
        "2019-11-01T00:00:25.105123z",  # RFC 3339 allows a lower-case z
        "2019-11-01T01:00:25.105123+01:00",
        "2019-11-01 00:00:25.105123Z",
    ):
        assert parse_time(text) == utc, text
    with pytest.raises(ValueError, match="without a zone"):
        parse_time("2019-11-01T00:00:25")
