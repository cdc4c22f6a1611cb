"""Pure decisions of the control side: who is notified, when a failed recharge is retried,
whether credit-funded services may run, and the pre-call authorization dry run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from . import tables
from .calendar import month_key
from .charging import Book, Unchargeable, pool_available, route, tariff_for
from .ledger import TenantState
from .model import CREDITS_LICENCE, POSTPAID_CHANNELS, Cdr, Event, Tenant
from .money import MAX_AMOUNT, MAX_BALANCE, format_money
from .rating import RateCard

NOTIFY = frozenset({"recharge_succeeded", "recharge_failed", "balance_zero", "pool_threshold"})
# What is true at zero depends on the channel: direct tenants buy credits themselves, csp
# tenants' partner funds them, mca/nce usage goes on as post-paid overage and credits
# cannot be bought.
ZERO_MESSAGES = {
    "direct": "Toll-free numbers and billable calls are stopped until funds are added.",
    "csp": "Toll-free numbers and billable calls are stopped until your partner adds funds.",
    "mca": "Your leftover credits are used up. Calls go on; usage beyond them is billed post-paid as overage "
    "on your invoice. No action is needed.",
    "nce": "Your leftover credits are used up. Calls go on; usage beyond them is billed post-paid as overage "
    "on your invoice. No action is needed.",
}


@dataclass(frozen=True)
class Notification:
    notification_id: str  # event id + recipient: sent once
    tenant_id: str
    event_id: str
    kind: str
    recipient: str
    role: str
    subject: str
    body: str


def admins(tenant: Tenant) -> list[tuple[str, str]]:
    """(email, role) of every user holding an admin role of data/admin_roles.txt."""
    roles = tables.admin_roles()
    out = []
    for user in sorted(tenant.users.values(), key=lambda u: u.user_id):
        held = sorted(user.roles & roles)
        if held and user.email:
            out.append((user.email, held[0]))
    return out


def notifications(tenant: Tenant, event: Event) -> list[Notification]:
    if event.type not in NOTIFY:
        return []
    f = event.field_dict()
    cur = tenant.currency
    if event.type == "recharge_succeeded":
        subject = f"Communications Credits recharged: {format_money(f.get('amount', 0))} {cur}"
        body = f"Auto-recharge {f.get('request_id')} succeeded. Invoice {f.get('invoice_id')}."
    elif event.type == "recharge_failed":
        subject = "Communications Credits auto-recharge failed"
        body = (
            f"Auto-recharge {f.get('request_id')} failed: {f.get('reason')}. We will retry; check the payment method."
        )
    elif event.type == "balance_zero":
        subject = "Communications Credits balance reached zero"
        body = ZERO_MESSAGES[tenant.channel]
    else:
        subject = f"Audio Conferencing dial-out minutes at {f.get('percent')} %"
        body = f"{f.get('used')} of {f.get('total')} pooled Zone A minutes used in {f.get('month')}."
    body += f"\nBalance: {format_money(event.balance)} {cur}."
    return [
        Notification(
            f"{event.event_id}:{email}", tenant.tenant_id, event.event_id, event.type, email, role, subject, body
        )
        for email, role in admins(tenant)
    ]


def funding_refusal(tenant: Tenant, kind: str, amount: int, minimum: int, balance: int) -> tuple[int, str] | None:
    """Why a funding of `amount` (kind `manual` or `partner`) is refused, as (HTTP status,
    reason), or None when it may be applied. The channel decides who may fund; a direct
    tenant's manual purchase has a minimum (our rule, a setting: the documents call $50 the
    minimum purchase); no funding may take the balance past MAX_BALANCE."""
    channel = tenant.channel
    if amount <= 0:
        return 400, "amount must be positive"
    if amount > MAX_AMOUNT:
        return 400, f"amount above the maximum of {format_money(MAX_AMOUNT)} per funding"
    if channel in POSTPAID_CHANNELS:
        return 409, f"{channel} tenants are billed post-usage and cannot buy credits"
    if channel == "csp" and kind != "partner":
        return 409, "csp tenants are funded by their partner (kind 'partner')"
    if channel == "direct" and kind == "partner":
        return 409, "partner funding is for csp tenants"
    if channel == "direct" and kind == "manual" and amount < minimum:
        return 422, f"below the minimum purchase of {format_money(minimum)} {tenant.currency} for a manual funding"
    if balance + amount > MAX_BALANCE:
        return 409, f"the balance would exceed the maximum of {format_money(MAX_BALANCE)}"
    return None


def retry_at(failed_at: datetime, attempt: int, base_s: float, cap_s: float) -> datetime:
    """Exponential back-off after the `attempt`-th failure (1-based): base, 2 base, 4 base ... cap."""
    return failed_at + timedelta(seconds=min(cap_s, base_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class ServiceState:
    billable_calls: bool
    tollfree_numbers: bool
    reason: str


def service_state(tenant: Tenant, state: TenantState) -> ServiceState:
    if tenant.removed_at is not None:
        return ServiceState(False, False, "tenant removed: calls are no longer charged")
    if tenant.channel in POSTPAID_CHANNELS:
        return ServiceState(True, True, "post-paid: usage beyond credits is billed as overage")
    if state.balance > 0:
        return ServiceState(True, True, "credits available")
    return ServiceState(False, False, "credit balance is zero")


@dataclass(frozen=True)
class Authorization:
    allowed: bool
    bucket: str  # included | pooled_zone_a | billable | overage | not_charged | free_unrated
    max_minutes: int | None  # None: no limit from us
    reason: str


def authorize(book: Book, state: TenantState, cdr: Cdr, rates: RateCard) -> Authorization:
    """May this call start now, from which bucket, for how many minutes at most?

    The same routing, pools and tariffs as charging, as a dry run: nothing is drawn.
    `cdr` carries the would-be call (duration 0, start = now).
    """
    if book.tenant.removed_at is not None:
        return Authorization(False, "not_charged", 0, "tenant removed: calls are no longer charged")
    try:
        r = route(book, cdr)
    except Unchargeable as exc:
        return Authorization(False, "not_charged", 0, str(exc))
    if r.service is None:
        return Authorization(True, "not_charged", None, r.reason)
    month = month_key(cdr.start, book.tenant.time_zone)
    pool_minutes = pool_available(book, state, r.pool, r.pool_dim, month) if r.pool else 0
    tariff = tariff_for(book, rates, r)
    user = book.tenant.users.get(cdr.user_id)
    if "policy_violation" in r.flags:
        return Authorization(False, r.pool_bucket if pool_minutes else "billable", 0, "blocked by dial-out policy")
    if pool_minutes and tariff is None:
        return Authorization(True, r.pool_bucket, pool_minutes, "pool minutes; no tariff beyond them")
    if tariff is None:
        return Authorization(True, "free_unrated", None, "no tariff: free and flagged")
    # Toll-free inbound and user-less calls are the tenant's: only a positive balance counts.
    tenant_level = r.service == "tollfree" or not cdr.user_id
    credits_ok = tenant_level or (user is not None and CREDITS_LICENCE in user.licences)
    if book.tenant.channel in POSTPAID_CHANNELS:
        return Authorization(True, r.pool_bucket if pool_minutes else "overage", None, "post-paid")
    balance = state.balance - tariff.connection_fee
    credit_minutes = (
        balance // tariff.price_per_minute if (credits_ok and balance > 0 and tariff.price_per_minute) else 0
    )
    if credits_ok and balance > 0 and not tariff.price_per_minute:
        return Authorization(True, r.pool_bucket if pool_minutes else "billable", None, "free tariff")
    if pool_minutes:
        return Authorization(True, r.pool_bucket, pool_minutes + credit_minutes, "pool first, then credits")
    if not credits_ok:
        return Authorization(False, "billable", 0, "user has no Communications Credits licence")
    if credit_minutes <= 0:
        return Authorization(False, "billable", 0, "credit balance is zero")
    return Authorization(True, "billable", int(credit_minutes), "credits")
