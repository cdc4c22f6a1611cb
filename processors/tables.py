"""The data tables of DOMAIN.md, shipped as package data and loaded once."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


@lru_cache(maxsize=1)
def zone_a() -> frozenset[str]:
    return frozenset(row["iso2"] for row in _rows("zone_a.csv"))


@dataclass(frozen=True)
class Allowance:
    capability: str
    plan: str
    domestic_minutes: int
    international_minutes: int
    pooled: bool


@lru_cache(maxsize=1)
def _allowances() -> dict[tuple[str, str], Allowance]:
    out = {}
    for row in _rows("calling_plan_allowances.csv"):
        out[(row["capability"], row["usage_country"])] = Allowance(
            row["capability"],
            row["plan"],
            int(row["domestic_minutes_per_user"]),
            int(row["international_minutes_per_user"]),
            row["pooled"] == "yes",
        )
    return out


def allowance(capability: str, usage_country: str) -> Allowance | None:
    table = _allowances()
    return table.get((capability, usage_country)) or table.get((capability, "*"))


@dataclass(frozen=True)
class DialoutPolicy:
    name: str
    conference_dialout: str  # international | domestic | zone_a | none
    user_pstn: str  # international | domestic | none


@lru_cache(maxsize=1)
def dialout_policies() -> dict[str, DialoutPolicy]:
    return {
        row["policy"]: DialoutPolicy(row["policy"], row["conference_dialout"], row["user_pstn"])
        for row in _rows("dialout_policies.csv")
    }


# The licence capability codes of DOMAIN.md that charging knows.
CAPABILITIES = frozenset(
    {"MCOMEETADD", "MCOMEETACPEA", "MCOPSTN1", "MCOPSTN2", "MCOPSTN5", "MCOPSTN6", "MCOPSTN8", "PAYG", "MCOPSTNPP"}
)


@lru_cache(maxsize=1)
def sku_capabilities() -> dict[str, frozenset[str]]:
    """Microsoft SKU part number -> the capability codes it grants (data/sku_service_plans.csv)."""
    return {
        row["sku_part_number"]: frozenset(c for c in row["capabilities"].split() if c)
        for row in _rows("sku_service_plans.csv")
    }


def capabilities_of(licence: str) -> frozenset[str] | None:
    """What a licence name grants: a capability code is itself, a SKU part number what the
    table says (maybe nothing, e.g. E3); None for a name in neither."""
    if licence in CAPABILITIES:
        return frozenset({licence})
    return sku_capabilities().get(licence)


@lru_cache(maxsize=1)
def admin_roles() -> frozenset[str]:
    text = resources.files(__package__).joinpath("data", "admin_roles.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=1)
def number_masking() -> dict[str, int]:
    return {r["tenant_country"]: int(r["masked_trailing_digits"]) for r in _rows("number_masking.csv")}
