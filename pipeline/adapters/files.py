"""Input files: the rate card, the tenants file, CDR lines (JSONL or a Graph response)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from processors.inputs import DeadLetterReason, Rejected, TenantError, tenant_from_dict
from processors.model import Tenant
from processors.rating import RateCard


def load_tenants(path: Path) -> list[Tenant]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read tenants file {path}: {exc}") from None
    if isinstance(data, dict) and "tenants" in data:
        data = data["tenants"]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of tenants")
    try:
        return [tenant_from_dict(d) for d in data]
    except TenantError as exc:
        raise InputError(f"{path}: {exc}") from None


def load_rates(path: Path) -> RateCard:
    try:
        return RateCard.from_csv_text(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"cannot read rate card {path}: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def read_cdr_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or a Rejected) for a JSONL file or a Graph response."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read CDR file {path}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("{") and '"value"' in stripped[:400]:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("value"), list):
            tenant = doc.get("tenantId")
            for i, row in enumerate(doc["value"], start=1):
                if tenant and isinstance(row, dict):
                    row = {"tenantId": tenant, **row}
                yield i, row
            return
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as exc:
            yield i, Rejected(DeadLetterReason.UNDECODABLE, f"invalid JSON: {exc.msg}")
