"""Tariffs and the operator-supplied rate card.

A tariff prices one (currency, service, origin, destination country, number type) with a
price per minute, a connection fee and increments. Default: billed per started minute
(first and next increment 60 s). Lookup prefers exact matches over `*` wildcards.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import DomainError
from .money import MAX_PRICE, MoneyError, ceil_div, format_money, parse_money

# A tariff increment of at most an hour (our rule): a call is billed in steps no coarser.
MAX_INCREMENT_S = 3600

SERVICES = frozenset({"calling", "dialout", "tollfree"})
COLUMNS = (
    "currency",
    "service",
    "origin",
    "destination",
    "number_type",
    "price_per_minute",
    "connection_fee",
    "first_increment",
    "next_increment",
)


class RateCardError(DomainError):
    """A rate card row that cannot be used, with its line number."""


@dataclass(frozen=True)
class Tariff:
    rate_id: str
    price_per_minute: int
    connection_fee: int = 0
    first_increment: int = 60
    next_increment: int = 60

    def billed_seconds(self, duration_s: int) -> int:
        """Duration rounded up to the tariff's increments; 0 for a call that never ran."""
        if duration_s <= 0:
            return 0
        if duration_s <= self.first_increment:
            return self.first_increment
        rest = duration_s - self.first_increment
        return self.first_increment + ceil_div(rest, self.next_increment) * self.next_increment

    def price_seconds(self, seconds: int) -> int:
        """Price of `seconds` billed seconds, rounded up to the micro-unit (no fee)."""
        return ceil_div(seconds * self.price_per_minute, 60)


def _version(items: object) -> str:
    return "sha256:" + hashlib.sha256(repr(items).encode()).hexdigest()[:16]


# Used for pool-only calls when no tariff is known: per started minute.
PER_MINUTE = Tariff("default", 0)


class RateCard:
    def __init__(self, tariffs: Mapping[tuple[str, str, str, str, str], Tariff], version: str = ""):
        self._tariffs = dict(tariffs)
        # The card's identity, named by every charge priced with it: a content hash, so a
        # replica that loaded another card during a rollout shows it, and so does a re-rating.
        self.version = version or _version(sorted((k, t) for k, t in self._tariffs.items()))
        # lookup() answers, memoized: the card never changes and the keys are few
        self._found: dict[tuple[str, str, str | None, str | None, str], Tariff | None] = {}

    def __len__(self) -> int:
        return len(self._tariffs)

    def lookup(
        self, currency: str, service: str, origin: str | None, destination: str | None, kind: str
    ) -> Tariff | None:
        key = (currency, service, origin, destination, kind)
        try:
            return self._found[key]
        except KeyError:
            found = self._found[key] = self._search(*key)
            return found

    def _search(
        self, currency: str, service: str, origin: str | None, destination: str | None, kind: str
    ) -> Tariff | None:
        t = self._tariffs
        for o in (origin or "*", "*"):
            for d in (destination or "*", "*"):
                for k in (kind, "*"):
                    found = t.get((currency, service, o, d, k))
                    if found is not None:
                        return found
        return None

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]], line_numbers: Sequence[int] = ()) -> RateCard:
        """A card from CSV rows; `line_numbers` are the rows' lines in the file (errors name
        them), by default 2, 3, ... (a header, then one row a line)."""
        tariffs: dict[tuple[str, str, str, str, str], Tariff] = {}
        lines: dict[tuple[str, str, str, str, str], int] = {}
        for i, row in enumerate(rows):
            line = line_numbers[i] if i < len(line_numbers) else i + 2
            try:
                missing = [c for c in COLUMNS[:6] if not (row.get(c) or "").strip()]
                if missing:
                    raise RateCardError(f"missing {', '.join(missing)}")
                service = row["service"].strip()
                if service not in SERVICES:
                    raise RateCardError(f"unknown service {service!r}")
                key = (
                    row["currency"].strip().upper(),
                    service,
                    row["origin"].strip().upper() if row["origin"].strip() != "*" else "*",
                    row["destination"].strip().upper() if row["destination"].strip() != "*" else "*",
                    row["number_type"].strip(),
                )
                first = int(row.get("first_increment") or 60)
                nxt = int(row.get("next_increment") or 60)
                if not (0 < first <= MAX_INCREMENT_S and 0 < nxt <= MAX_INCREMENT_S):
                    raise RateCardError(f"increments must be 1 to {MAX_INCREMENT_S} seconds")
                price = parse_money(row["price_per_minute"])
                fee = parse_money(row.get("connection_fee") or "0")
                if price < 0 or fee < 0:
                    raise RateCardError("negative price")
                if price > MAX_PRICE or fee > MAX_PRICE:
                    raise RateCardError(f"price or connection fee above the maximum of {format_money(MAX_PRICE)}")
                if key in lines:  # two prices for one route: which one is meant cannot be told
                    raise RateCardError(f"the same route as line {lines[key]} ({', '.join(key)})")
            except (RateCardError, MoneyError, ValueError) as exc:
                raise RateCardError(f"rate card line {line}: {exc}") from None
            lines[key] = line
            tariffs[key] = Tariff(":".join(key), price, fee, first, nxt)
        return cls(tariffs)

    @classmethod
    def from_csv_text(cls, text: str) -> RateCard:
        numbered = [
            (n, ln) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip() and not ln.lstrip().startswith("#")
        ]
        reader = csv.DictReader([ln for _, ln in numbered])
        # A file that is not a rate card (no header, another CSV) is refused, not read as
        # a card with no tariffs: every call would then be FREECALL.
        absent = [c for c in COLUMNS[:6] if c not in (reader.fieldnames or [])]
        if absent:
            raise RateCardError(f"not a rate card: the header lacks {', '.join(absent)}")
        card = cls.from_rows(reader, [n for n, _ in numbered[1:]])  # errors name the file's lines
        card.version = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
        return card
