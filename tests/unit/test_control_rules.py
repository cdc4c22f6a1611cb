"""Pure control decisions: who is notified, back-off, service state, pre-call authorization."""

from __future__ import annotations

from datetime import UTC, datetime

from processors.charging import prepare
from processors.control import authorize, notifications, retry_at, service_state
from processors.inputs import tenant_from_dict
from processors.ledger import open_state
from processors.model import Cdr, Event
from tests.helpers import fixture_rates, tenant_entry

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)
RATES = fixture_rates()


def book_for(sc: dict) -> tuple:
    book = prepare(tenant_from_dict(tenant_entry(sc)))
    state, _ = open_state(book.tenant)
    return book, state


def ask(book, state, user: str, number: str, call_type: str = "user_out"):
    return authorize(book, state, Cdr("q", "T", user, call_type, "", number, NOW, NOW, 0), RATES)


def test_notifications_go_to_each_admin_once() -> None:
    entry = tenant_entry({"users": [["u1", "US", []]]})
    entry["users"] += [
        {
            "user_id": "a",
            "usage_country": "US",
            "licences": [],
            "roles": ["Teams Administrator", "Billing Administrator"],
            "email": "a@x.example",
        },
        {
            "user_id": "b",
            "usage_country": "US",
            "licences": [],
            "roles": ["Global Administrator"],
            "email": "b@x.example",
        },
        {"user_id": "c", "usage_country": "US", "licences": [], "roles": ["Reader"], "email": "c@x.example"},
        {"user_id": "d", "usage_country": "US", "licences": [], "roles": ["Teams Administrator"]},  # no email
    ]
    tenant = tenant_from_dict(entry)
    zero = Event("call-9:balance_zero", "balance_zero", "T", NOW, -5)
    sent = notifications(tenant, zero)
    assert [(n.recipient, n.role) for n in sent] == [
        ("a@x.example", "Billing Administrator"),
        ("b@x.example", "Global Administrator"),
    ]
    assert {n.notification_id for n in sent} == {"call-9:balance_zero:a@x.example", "call-9:balance_zero:b@x.example"}
    assert "reached zero" in sent[0].subject
    assert notifications(tenant, Event("x:balance_low", "balance_low", "T", NOW, 1)) == []
    pool = Event("c:pool_threshold:80", "pool_threshold", "T", NOW, 5, (("percent", 80), ("used", 240), ("total", 300)))
    assert "80 %" in notifications(tenant, pool)[0].subject


def test_back_off_grows_and_is_capped() -> None:
    delays = [(retry_at(NOW, n, 60, 3600) - NOW).total_seconds() for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_service_state_follows_the_balance_and_channel() -> None:
    book, state = book_for({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "funding": "1"})
    assert service_state(book.tenant, state).billable_calls is True
    state.deficit = 2_000_000
    state.lots = [lot.__class__(lot.lot_id, lot.amount, 0, lot.purchased_at, lot.expires_at) for lot in state.lots]
    blocked = service_state(book.tenant, state)
    assert (blocked.billable_calls, blocked.tollfree_numbers) == (False, False)
    mca, mstate = book_for({"channel": "mca", "users": [["u1", "US", ["PAYG"]]]})
    assert service_state(mca.tenant, mstate).billable_calls is True  # post-paid overage


def test_authorization_uses_the_charging_planner() -> None:
    book, state = book_for(
        {
            "users": [
                ["u1", "US", ["MCOPSTN1", "MCOPSTNPP"]],
                ["u2", "US", ["PAYG"]],
                ["u3", "US", ["PAYG", "MCOPSTNPP"], "DialoutCPCandPSTNDomestic"],
            ],
            "funding": "1",
        }
    )
    a = ask(book, state, "u1", "+12125550123")
    assert (a.allowed, a.bucket, a.max_minutes) == (True, "included", 3000 + 10)  # pool, then 1.00 at 0.10/min
    a = ask(book, state, "u1", "+442071234567")
    assert (a.allowed, a.bucket, a.max_minutes) == (True, "billable", 10)
    assert ask(book, state, "u2", "+12125550123").allowed is False  # no Communications Credits licence
    assert ask(book, state, "u3", "+442071234567").reason == "blocked by dial-out policy"
    assert ask(book, state, "u1", "911").bucket == "not_charged" and ask(book, state, "u1", "911").allowed
    assert ask(book, state, "u1", "+0000").allowed is False  # unparsable
    state.lots.clear()
    a = ask(book, state, "u1", "+442071234567")
    assert (a.allowed, a.reason) == (False, "credit balance is zero")
    nothing_drawn = ask(book, state, "u1", "+12125550123")
    assert nothing_drawn.max_minutes == 3000 and state.pool_used == {}


def test_expiry_is_due_twelve_months_after_purchase() -> None:
    _, state = book_for({"users": [["u1", "US", ["PAYG", "MCOPSTNPP"]]], "lots": [["L", "3", "2024-02-29T10:00:00Z"]]})
    assert state.lots[0].expires_at == datetime(2025, 2, 28, 10, tzinfo=UTC)  # leap day: the month's last day
