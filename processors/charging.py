"""Classify, rate and allocate one call: the pure planner both charging and
authorization use.

Order of buckets (DOMAIN.md): calling-plan minutes or the Zone A dial-out pool first,
then Communications Credits (or, for mca/nce after leftover credits, post-paid overage).
A call that overruns a pool is split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from . import tables
from .calendar import month_key
from .errors import DomainError
from .frozen import written_inits
from .ledger import (
    ALLOWED_LATENESS,
    TenantState,
    after_change,
    debit,
    forfeit_due,
    late_after_expiry,
    open_state,
)
from .model import (
    AUDIO_CONF,
    AUDIO_CONF_PPM,
    BILLABLE,
    CONF_OUTBOUND,
    CREDITS_LICENCE,
    DIRECT_ROUTING_CALL_TYPES,
    FREE_UNRATED,
    INBOUND,
    INCLUDED,
    MIXED,
    NOT_CHARGED,
    OVERAGE,
    POOLED_ZONE_A,
    POSTPAID_CHANNELS,
    Cdr,
    Charge,
    Event,
    Segment,
    Tenant,
    User,
    event_id,
)
from .money import MAX_AMOUNT, MAX_BALANCE, ceil_div, format_money
from .numbers import EMERGENCY, FIXED, MOBILE, PREMIUM, TOLLFREE, NumberInfo, analyze, try_analyze
from .rating import PER_MINUTE, RateCard, Tariff

ZONE_A_POOL = "zonea"
ZONE_A_MINUTES_PER_LICENCE = 60
POOL_ALERTS = (80, 100)
# Calling-plan preference when a user holds several plans.
PLAN_ORDER = ("MCOPSTN2", "MCOPSTN1", "MCOPSTN6", "MCOPSTN5", "MCOPSTN8", "PAYG")
# Countries whose calls count as domestic to each other for calling plans.
DOMESTIC_GROUP = {"US": "NA", "PR": "NA", "CA": "NA"}


class Unchargeable(DomainError):
    """A CDR the planner cannot take (unparsable dialed number, unknown call type)."""


class OutOfRange(DomainError):
    """A call whose charge would take its tenant's money past the range every record can
    carry (`money.MAX_AMOUNT` a charge, `money.MAX_BALANCE` a deficit or overage). Refused
    before anything changes: the call goes to the dead-letter topic, its tenant's state and
    every other tenant go on."""


def plan_of(user: User | None) -> str | None:
    if user is None:
        return None
    for cap in PLAN_ORDER:
        if cap in user.licences:
            return cap
    return None


def has_calling_licence(user: User) -> bool:
    """An Audio Conferencing licence (subscription or pay-per-minute) or a Calling Plan: a
    user holding neither breaches the licence rule when a call of theirs needs credits."""
    return AUDIO_CONF in user.licences or AUDIO_CONF_PPM in user.licences or plan_of(user) is not None


def plan_pool(user: User, plan: str) -> str:
    if plan == "MCOPSTN8":
        return f"cp:{plan}:user:{user.user_id}"
    country = "US" if user.usage_country in ("US", "PR") else user.usage_country
    return f"cp:{plan}:{country}"


@dataclass(frozen=True)
class Book:
    """A tenant's configuration with its derived pool totals, prepared once per version."""

    tenant: Tenant
    pools: dict[str, tuple[int, int]]  # pool id -> (domestic minutes, international minutes)
    plans: dict[str, tuple[str, str]]  # user id -> (calling plan, its pool id), users with a plan
    lateness: timedelta = ALLOWED_LATENESS  # a lot is forfeited this long after its expiry (data clock)


def prepare(tenant: Tenant, lateness: timedelta = ALLOWED_LATENESS) -> Book:
    pools: dict[str, tuple[int, int]] = {}
    plans: dict[str, tuple[str, str]] = {}
    conf = 0
    for user in tenant.users.values():
        if AUDIO_CONF in user.licences:
            conf += 1
        plan = plan_of(user)
        if plan is None:
            continue
        plans[user.user_id] = (plan, plan_pool(user, plan))
        allowance = tables.allowance(plan, user.usage_country)
        if allowance is None:
            continue
        pool = plan_pool(user, plan)
        dom, intl = pools.get(pool, (0, 0))
        pools[pool] = (dom + allowance.domestic_minutes, intl + allowance.international_minutes)
    pools[ZONE_A_POOL] = (conf * ZONE_A_MINUTES_PER_LICENCE, 0)
    return Book(tenant, pools, plans, lateness)


def pool_fields(book: Book, cdr: Cdr) -> list[str]:
    """Every `pool_used` key charging `cdr` can read or draw: its month (`month_key` of its
    start, as `charge_call` takes it) of the user's plan pool, if the user has a plan, and
    of the tenant's Zone A pool, both dimensions. The worker reads these from Redis, not
    every pool of the tenant (tests/unit/test_admission.py holds the fold on them alone
    equal to the fold on all)."""
    return _user_pool_fields(book, cdr.user_id, month_key(cdr.start, book.tenant.time_zone))


def _user_pool_fields(book: Book, user_id: str, month: str) -> list[str]:
    plan = book.plans.get(user_id)
    zone = f"{month}|{ZONE_A_POOL}|"
    if plan is None:
        return [zone + "dom", zone + "intl"]
    own = f"{month}|{plan[1]}|"
    return [own + "dom", own + "intl", zone + "dom", zone + "intl"]


def pool_fields_of(book: Book, cdrs: list[Cdr]) -> set[str]:
    """`pool_fields` of every call of a tenant's batch (once per user and month: a user's
    calls of one batch are nearly always of one month)."""
    out: set[str] = set()
    done: dict[str, str] = {}  # user -> the month whose fields were added last
    zone = book.tenant.time_zone
    for cdr in cdrs:
        month = month_key(cdr.start, zone)
        user = cdr.user_id
        if done.get(user) == month:
            continue
        done[user] = month
        out.update(_user_pool_fields(book, user, month))
    return out


def pool_available(book: Book, state: TenantState, pool: str, dim: str, month: str) -> int:
    total_dom, total_intl = book.pools.get(pool, (0, 0))
    used_dom = state.pool_used.get(f"{month}|{pool}|dom", 0)
    used_intl = state.pool_used.get(f"{month}|{pool}|intl", 0)
    if total_intl and (used_dom >= total_dom or used_intl >= total_intl):
        return 0  # domestic+international: whichever limit is reached first exhausts both
    if dim == "dom":
        return max(0, total_dom - used_dom)
    return max(0, total_intl - used_intl)


@dataclass(frozen=True)
class Route:
    """Where a call may draw from, before looking at any balance."""

    service: str | None  # None: not charged
    reason: str
    pool: str | None = None
    pool_dim: str = "dom"
    pool_bucket: str = INCLUDED
    pool_capability: str = ""
    origin: str | None = None
    destination: NumberInfo | None = None
    kind_for_rate: str = FIXED
    domestic: bool | None = None
    flags: tuple[str, ...] = ()

    def __init__(
        self,
        service: str | None,
        reason: str,
        pool: str | None = None,
        pool_dim: str = "dom",
        pool_bucket: str = INCLUDED,
        pool_capability: str = "",
        origin: str | None = None,
        destination: NumberInfo | None = None,
        kind_for_rate: str = FIXED,
        domestic: bool | None = None,
        flags: tuple[str, ...] = (),
    ) -> None:
        self.service = service  # type: ignore[misc]
        self.reason = reason  # type: ignore[misc]
        self.pool = pool  # type: ignore[misc]
        self.pool_dim = pool_dim  # type: ignore[misc]
        self.pool_bucket = pool_bucket  # type: ignore[misc]
        self.pool_capability = pool_capability  # type: ignore[misc]
        self.origin = origin  # type: ignore[misc]
        self.destination = destination  # type: ignore[misc]
        self.kind_for_rate = kind_for_rate  # type: ignore[misc]
        self.domestic = domestic  # type: ignore[misc]
        self.flags = flags  # type: ignore[misc]


def route(book: Book, cdr: Cdr) -> Route:
    tenant = book.tenant
    user = tenant.users.get(cdr.user_id)
    # A row without a user is the tenant's own call (auto attendant, call queue, conference
    # bridge): nothing to flag. A user id the tenant does not have is flagged.
    flags: list[str] = [] if user or not cdr.user_id else ["unknown_user"]
    region = (user.usage_country if user else None) or cdr.usage_country or tenant.country
    if cdr.routing == "direct_routing" or cdr.call_type in DIRECT_ROUTING_CALL_TYPES:
        return Route(None, "direct_routing", flags=tuple(flags))
    if cdr.call_type in INBOUND:
        ours = try_analyze(cdr.callee_number, region)
        if ours is None or ours.kind != TOLLFREE:
            return Route(None, "inbound", destination=ours, flags=tuple(flags))
        caller = try_analyze(cdr.caller_number)
        kind = caller.kind if caller and caller.kind in (FIXED, MOBILE) else FIXED
        origin = caller.country if caller else None
        return Route(
            "tollfree",
            "tollfree_inbound",
            origin=origin,
            destination=ours,
            kind_for_rate=kind,
            domestic=origin == ours.country,
            flags=tuple(flags),
        )
    try:
        dest = analyze(cdr.callee_number, region)
    except ValueError as exc:
        raise Unchargeable(f"callee number: {exc}") from None
    if dest.kind == EMERGENCY:
        return Route(None, "emergency", destination=dest, domestic=True, flags=tuple(flags))
    if dest.kind == TOLLFREE:
        return Route(None, "tollfree_outbound", destination=dest, flags=tuple(flags))
    strict_domestic = dest.country == region
    policy = tables.dialout_policies().get(user.dialout_policy or "") if user else None
    if cdr.call_type in CONF_OUTBOUND:
        if policy and not _allowed(policy.conference_dialout, strict_domestic, dest):
            flags.append("policy_violation")
        pool = None
        if (
            user is not None
            and AUDIO_CONF in user.licences
            and dest.country in tables.zone_a()
            and dest.kind != PREMIUM
        ):
            pool = ZONE_A_POOL
        return Route(
            "dialout",
            "dialout",
            pool=pool,
            pool_bucket=POOLED_ZONE_A,
            pool_capability=AUDIO_CONF,
            origin="*",
            destination=dest,
            kind_for_rate=dest.kind,
            domestic=strict_domestic,
            flags=tuple(flags),
        )
    if policy and not _allowed(policy.user_pstn, strict_domestic, dest):
        flags.append("policy_violation")
    plan, plan_pool_id = book.plans.get(cdr.user_id, (None, None)) if user is not None else (None, None)
    plan_domestic = strict_domestic or (
        dest.country is not None
        and DOMESTIC_GROUP.get(region) is not None
        and DOMESTIC_GROUP.get(region) == DOMESTIC_GROUP.get(dest.country)
    )
    pool, dim = None, "dom"
    if plan_pool_id is not None and dest.kind != PREMIUM:
        if plan_domestic:
            pool = plan_pool_id
        elif book.pools.get(plan_pool_id, (0, 0))[1] > 0:
            pool, dim = plan_pool_id, "intl"
    return Route(
        "calling",
        "user_pstn",
        pool=pool,
        pool_dim=dim,
        pool_bucket=INCLUDED,
        pool_capability=plan or "",
        origin=region,
        destination=dest,
        kind_for_rate=dest.kind,
        domestic=plan_domestic,
        flags=tuple(flags),
    )


def _allowed(scope: str, strict_domestic: bool, dest: NumberInfo) -> bool:
    if scope == "none":
        return False
    if scope == "domestic":
        return strict_domestic
    if scope == "zone_a":
        return dest.country in tables.zone_a()
    return True


def _classify(buckets: set[str]) -> str:
    """The call's classification from the buckets of its segments."""
    if not buckets:
        return NOT_CHARGED
    return next(iter(buckets)) if len(buckets) == 1 else MIXED


def _capability(buckets: set[str], route_: Route, cdr: Cdr) -> str:
    if FREE_UNRATED in buckets:
        return "FREECALL"
    if BILLABLE in buckets or OVERAGE in buckets:
        return CREDITS_LICENCE
    if buckets & {INCLUDED, POOLED_ZONE_A}:
        return route_.pool_capability
    return cdr.licence_capability or ""


def tariff_for(book: Book, rates: RateCard, r: Route) -> Tariff | None:
    if r.service is None or r.destination is None:
        return None
    return rates.lookup(book.tenant.currency, r.service, r.origin, r.destination.country, r.kind_for_rate)


def charge_call(
    book: Book, state: TenantState, cdr: Cdr, rates: RateCard, funding_pending: bool = True
) -> tuple[Charge, list[Event]]:
    """Fold one completed call into `state` (mutated; callers copy) and say what it cost.

    `funding_pending=False` says every configured funding lot is in `state` already
    (`ledger.missing_funding` is empty), so there is none to apply. Raises Unchargeable for input the planner
    cannot interpret.
    """
    tenant = book.tenant
    at = cdr.end
    r = route(book, cdr)  # raises Unchargeable before anything changes
    tariff = tariff_for(book, rates, r)
    billed = (tariff or PER_MINUTE).billed_seconds(cdr.duration_s)
    if tariff is not None and r.service is not None:
        check_range(tenant, state, cdr, tariff.connection_fee + tariff.price_seconds(billed))
    # Funding from the tenant's configuration bought before the call ended, at its purchase
    # time (a lot bought later is applied by a later call, or by the control worker).
    _, events = open_state(tenant, state, upto=at) if funding_pending else (state, [])
    month = month_key(cdr.start, tenant.time_zone)
    flags = list(r.flags)
    minutes = ceil_div(billed, 60)
    segments: list[Segment] = []
    amount = fee = 0
    if r.service is None:
        segments.append(Segment(NOT_CHARGED, minutes))
    else:
        drawn = 0
        if r.pool is not None and minutes:
            drawn = min(minutes, pool_available(book, state, r.pool, r.pool_dim, month))
            if drawn:
                key = f"{month}|{r.pool}|{r.pool_dim}"
                used_before = state.pool_used.get(key, 0)
                state.pool_used[key] = used_before + drawn
                state.pools_dirty.add(key)
                segments.append(Segment(r.pool_bucket, drawn, pool=r.pool))
                if r.pool == ZONE_A_POOL:
                    events.extend(_pool_alerts(book, state, cdr, month, used_before, drawn))
        rest_minutes = minutes - drawn
        rest_seconds = max(0, billed - drawn * 60)
        if rest_minutes and tariff is None:
            segments.append(Segment(FREE_UNRATED, rest_minutes))
            flags.append("FREECALL")
        elif rest_minutes and tariff is not None:
            user = tenant.users.get(cdr.user_id)
            if user is not None and r.service != "tollfree":  # tenant-level calls need no user licence
                if CREDITS_LICENCE not in user.licences:
                    flags.append("no_credits_licence")
                if not has_calling_licence(user):
                    flags.append("no_licence")
            fee = tariff.connection_fee
            amount = fee + tariff.price_seconds(rest_seconds)
            if late_after_expiry(state, cdr.start):
                flags.append("late_after_expiry")  # its lot was forfeited before the CDR came
            before = state.balance
            segments.extend(take_credits(tenant, state, rest_minutes, amount, tariff.rate_id, cdr.start))
            events.extend(after_change(tenant, state, before, at, cdr.call_id))
    if state.watermark is None or at > state.watermark:
        state.watermark = at
    events.extend(forfeit_due(tenant, state, book.lateness))
    segs = tuple(segments)
    buckets = {seg.bucket for seg in segs}
    charge = Charge(
        call_id=cdr.call_id,
        tenant_id=cdr.tenant_id,
        user_id=cdr.user_id,
        call_type=cdr.call_type,
        classification=_classify(buckets),
        billed_seconds=billed,
        billed_minutes=minutes,
        segments=segs,
        amount=amount,
        connection_fee=fee,
        capability=_capability(buckets, r, cdr),
        balance_after=state.balance,
        currency=tenant.currency,
        start=cdr.start,
        end=cdr.end,
        duration_s=cdr.duration_s,
        destination_country=r.destination.country if r.destination else None,
        number_type=r.destination.kind if r.destination else None,
        domestic=r.domestic,
        flags=tuple(flags),
        month=month,
        graph_call_id=cdr.graph_call_id,
        conference_id=cdr.conference_id,
        usage_country=cdr.usage_country,
        user_principal_name=cdr.user_principal_name,
        user_display_name=cdr.user_display_name,
        caller_number=cdr.caller_number,
        callee_number=cdr.callee_number,
        tariff=tariff,
        rate_card=rates.version if tariff is not None else None,
    )
    return charge, events


def check_range(tenant: Tenant, state: TenantState, cdr: Cdr, worst: int) -> None:
    """OutOfRange unless a charge of at most `worst` keeps every sum of the tenant in range:
    the charge itself, the deficit it may add (direct, csp) or the overage (mca, nce). Two
    field reads per billable call: the balance's lots are not summed."""
    if worst > MAX_AMOUNT or state.deficit + worst > MAX_BALANCE or state.overage + worst > MAX_BALANCE:
        raise OutOfRange(
            f"tenant {tenant.tenant_id}: call {cdr.call_id} would cost up to {format_money(worst)} "
            f"{tenant.currency} on a deficit of {format_money(state.deficit)} and overage of "
            f"{format_money(state.overage)}: past the range of {format_money(MAX_BALANCE)} we keep"
        )


def take_credits(
    tenant: Tenant, state: TenantState, minutes: int, amount: int, rate_id: str, started: datetime
) -> list[Segment]:
    """Debit credits; for mca/nce the part leftover credits cannot cover is overage."""
    postpaid = tenant.channel in POSTPAID_CHANNELS
    draws, deficit, untaken = debit(state, amount, not postpaid, started)
    if not untaken:
        return [Segment(BILLABLE, minutes, amount, rate=rate_id, lots=draws, deficit=deficit)]
    state.overage += untaken
    taken = amount - untaken
    if taken == 0:
        return [Segment(OVERAGE, minutes, amount, rate=rate_id)]
    credit_minutes = minutes * taken // amount
    return [
        Segment(BILLABLE, credit_minutes, taken, rate=rate_id, lots=draws),
        Segment(OVERAGE, minutes - credit_minutes, untaken, rate=rate_id),
    ]


def _pool_alerts(book: Book, state: TenantState, cdr: Cdr, month: str, used_before: int, drawn: int) -> list[Event]:
    total = book.pools[ZONE_A_POOL][0]
    used = used_before + drawn
    events = []
    for pct in POOL_ALERTS:
        mark = f"{month}|{ZONE_A_POOL}|{pct}"
        if used * 100 >= pct * total > used_before * 100 and mark not in state.thresholds:
            state.thresholds.append(mark)
            events.append(
                Event(
                    event_id(cdr.tenant_id, cdr.call_id, f"pool_threshold:{pct}"),
                    "pool_threshold",
                    cdr.tenant_id,
                    cdr.end,
                    state.balance,
                    (("pool", ZONE_A_POOL), ("percent", pct), ("month", month), ("used", used), ("total", total)),
                )
            )
    # Keep only this and the previous months' marks.
    if len(state.thresholds) > 8:
        del state.thresholds[:-8]
    return events


written_inits(Route)
