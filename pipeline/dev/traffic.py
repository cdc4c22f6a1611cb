"""A deterministic traffic generator: tenants and CDRs that exercise every bucket.

Used by the demo, the benchmark and the differential tests. Same seed, same output.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

COUNTRIES = {
    "US": ("USD", "America/New_York", ["+1212555{:04d}", "+1415555{:04d}"]),
    "GB": ("GBP", "Europe/London", ["+44207946{:04d}", "+44740012{:04d}"]),
    "DE": ("EUR", "Europe/Berlin", ["+4930123{:05d}", "+49151123{:05d}"]),
    "FR": ("EUR", "Europe/Paris", ["+33142685{:03d}", "+33612345{:03d}"]),
}
FOREIGN = ["+81312345{:03d}", "+61212345{:03d}", "+5511912{:05d}", "+2348012{:05d}", "+8613812{:05d}"]
TOLLFREE = {"US": "+1800555{:04d}", "GB": "+44800123{:04d}", "DE": "+49800123{:04d}", "FR": "+33800123{:03d}"}
PREMIUM = {"US": "+1900555{:04d}", "GB": "+44909876{:04d}"}
PLANS = [["MCOPSTN1"], ["MCOPSTN2"], ["MCOPSTN5"], ["MCOPSTN8"], ["PAYG"], []]


def tenants(
    n: int, seed: int = 7, users_per_tenant: int = 6, start: datetime | None = None, prefix: str = ""
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = start or datetime.now(UTC) - timedelta(days=20)
    out = []
    for i in range(n):
        country = rng.choice(list(COUNTRIES))
        currency, tz, _ = COUNTRIES[country]
        channel = rng.choices(["direct", "csp", "mca", "nce"], [6, 2, 1, 1])[0]
        users = []
        for u in range(users_per_tenant):
            licences = list(rng.choice(PLANS))
            if rng.random() < 0.8:
                licences.append("MCOPSTNPP")
            if rng.random() < 0.5:
                licences.append("MCOMEETADD")
            users.append(
                {
                    "user_id": f"t{i:04d}-u{u}",
                    "usage_country": country,
                    "licences": licences,
                    "dialout_policy": rng.choice(
                        [None, "DialoutCPCandPSTNInternational", "DialoutCPCZoneAPSTNDomestic"]
                    ),
                    "email": f"user{u}@tenant{i}.example",
                    "roles": ["Teams Administrator"] if u == 0 else [],
                }
            )
        postpaid = channel in ("mca", "nce")
        tenant: dict[str, Any] = {
            "tenant_id": f"{prefix}tenant-{i:04d}",
            "country": country,
            "currency": currency,
            "channel": channel,
            "time_zone": tz,
            "users": users,
            "funding": [
                {
                    "lot_id": f"{prefix}tenant-{i:04d}-lot-1",
                    "amount": str(rng.choice([5, 20, 50, 200])),
                    "purchased_at": (start - timedelta(days=rng.randrange(0, 30))).isoformat(),
                }
            ],
        }
        if not postpaid:
            tenant["auto_recharge"] = {"enabled": rng.random() < 0.5, "amount": "50", "trigger": "10"}
        out.append(tenant)
    return out


def cdrs(
    tenant_list: list[dict[str, Any]],
    n: int,
    seed: int = 11,
    start: datetime | None = None,
    span: timedelta = timedelta(days=10),
    by_users: bool = False,
) -> list[dict[str, Any]]:
    """`n` CDRs of `tenant_list`'s users; a tenant is picked uniformly, or in proportion to
    its users (`by_users`: a tenant of 300 000 users makes most of the calls)."""
    rng = random.Random(seed)
    start = start or datetime.now(UTC) - timedelta(days=12)
    out = []
    cum: list[int] = []
    if by_users:
        total = 0
        for t in tenant_list:
            total += len(t["users"])
            cum.append(total)
    for k in range(n):
        t = rng.choices(tenant_list, cum_weights=cum)[0] if by_users else rng.choice(tenant_list)
        user = rng.choice(t["users"])
        country = t["country"]
        kind = rng.random()
        caller = _fmt(rng, rng.choice(COUNTRIES[country][2]))
        if kind < 0.45:
            call_type, callee = "user_out", _fmt(rng, rng.choice(COUNTRIES[country][2]))
        elif kind < 0.6:
            call_type, callee = "user_out", _fmt(rng, rng.choice(FOREIGN + [COUNTRIES[c][2][0] for c in COUNTRIES]))
        elif kind < 0.75:
            call_type, callee = "conf_out", _fmt(rng, rng.choice(FOREIGN + [COUNTRIES[c][2][1] for c in COUNTRIES]))
        elif kind < 0.85:
            call_type, callee = "user_in", _fmt(rng, TOLLFREE[country])
            caller = _fmt(rng, rng.choice(COUNTRIES[country][2]))
        elif kind < 0.95:
            call_type, callee = "user_in", _fmt(rng, COUNTRIES[country][2][0])
        elif kind < 0.98 and country in PREMIUM:
            call_type, callee = "user_out", _fmt(rng, PREMIUM[country])
        else:
            call_type, callee = "user_out", _fmt(rng, TOLLFREE[country])
        begin = start + timedelta(seconds=rng.randrange(int(span.total_seconds())))
        duration = int(rng.expovariate(1 / 240)) + 1
        out.append(
            {
                "call_id": f"call-{seed}-{k:07d}",
                "tenant_id": t["tenant_id"],
                "user_id": user["user_id"],
                "call_type": call_type,
                "caller_number": caller,
                "callee_number": callee,
                "start_time": begin.isoformat().replace("+00:00", "Z"),
                "end_time": (begin + timedelta(seconds=duration)).isoformat().replace("+00:00", "Z"),
                "duration_s": duration,
                "usage_country": country,
            }
        )
    out.sort(key=lambda c: c["end_time"])
    return out


def _fmt(rng: random.Random, pattern: str) -> str:
    width = int(pattern.split("{:0")[1].split("d}")[0])
    return pattern.format(rng.randrange(10**width))
