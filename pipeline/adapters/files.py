"""Input files: the rate card, the tenants file, CDR lines (JSONL or a Graph response)."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.adapters import strict_json
from pipeline.errors import InputError
from processors.inputs import (
    DeadLetterReason,
    Rejected,
    TenantError,
    first_repeated,
    is_direct_routing_row,
    is_graph_row,
    tenant_from_dict,
)
from processors.model import Tenant
from processors.rating import RateCard


def load_tenants(path: Path) -> list[Tenant]:
    try:
        data = strict_json.loads(Path(path).read_text(encoding="utf-8-sig"))  # a BOM (Windows tools) is skipped
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read tenants file {path}: {exc}") from None
    if isinstance(data, dict) and "tenants" in data:
        data = data["tenants"]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of tenants")
    try:
        tenants = [tenant_from_dict(d) for d in data]
    except TenantError as exc:
        raise InputError(f"{path}: {exc}") from None
    twice = first_repeated(t.tenant_id for t in tenants)
    if twice is not None:
        raise InputError(f"{path}: tenant {twice} is listed twice")
    return tenants


def load_rates(path: Path) -> RateCard:
    try:
        return RateCard.from_csv_text(Path(path).read_text(encoding="utf-8-sig"))  # Excel's "CSV UTF-8" has a BOM
    except OSError as exc:
        raise InputError(f"cannot read rate card {path}: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


# A CDR is well under 4 KB; a line longer than this is not a CDR (and might not fit in a
# Kafka message): it is refused with its size, the rest of the file goes on.
MAX_LINE_BYTES = 64 * 1024
_SURROGATE = Rejected(DeadLetterReason.UNDECODABLE, "a string holds a lone surrogate escape (not text)")


def read_cdr_lines(paths: Path | Sequence[Path], tenant_id: str | None = None) -> Iterator[tuple[str, Any]]:
    """(where, parsed JSON object or a Rejected) for each CDR of JSONL files or Microsoft
    Graph responses (`getPstnCalls`, `getDirectRoutingCalls`, a response split into page
    files by `@odata.nextLink`). Never raises on a row: bytes that are not UTF-8, a lone
    surrogate escape, an oversized line or bad JSON become a Rejected naming the line.

    `tenant_id` is the tenant of rows that carry none (a Graph response has no tenantId: the
    tenant is whoever's token fetched it). `where` is "line N" (or "FILE line N" when
    several files are read).
    """
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for path in files:
        prefix = f"{path.name} " if len(files) > 1 else ""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read CDR file {path}: {exc}") from None
        if data.startswith(codecs.BOM_UTF8):  # as Windows tools (PowerShell's Out-File) save UTF-8
            data = data[len(codecs.BOM_UTF8) :]
        doc = _graph_response(data)
        if doc is not None:
            rows, direct_routing = doc
            tenant = tenant_id
            for i, row in enumerate(rows, start=1):
                yield f"{prefix}row {i}", _with_tenant(row, tenant, direct_routing)
            continue
        for i, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            yield f"{prefix}line {i}", _with_tenant(_parse_line(raw), tenant_id, False)


def _parse_line(raw: bytes) -> Any:
    if len(raw) > MAX_LINE_BYTES:
        return Rejected(DeadLetterReason.UNDECODABLE, f"line of {len(raw)} bytes, more than {MAX_LINE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(DeadLetterReason.UNDECODABLE, f"not UTF-8 (byte {exc.start})")
    try:
        obj = strict_json.loads(text)
    except json.JSONDecodeError as exc:
        return Rejected(DeadLetterReason.UNDECODABLE, f"invalid JSON: {exc.msg}")
    if _has_lone_surrogate(obj):
        return _SURROGATE
    return obj


def _graph_response(data: bytes) -> tuple[list[Any], bool] | None:
    """The rows of a whole-file JSON document and whether they are Direct Routing rows: a
    Graph response (`{"value": [...]}`) or a JSON array of CDRs (an export, `jq -s`)."""
    head = data.lstrip()[:1]
    if head not in (b"{", b"["):
        return None
    try:
        doc = strict_json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # not one JSON document: JSON lines (or not JSON at all), read per line
    if isinstance(doc, list):
        return [_SURROGATE if _has_lone_surrogate(r) else r for r in doc], False
    if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
        return None
    context = str(doc.get("@odata.context", ""))
    rows = list(doc["value"])
    tenant = doc.get("tenantId")
    if isinstance(tenant, str):  # our own export format names the tenant in the document
        rows = [{"tenantId": tenant, **r} if isinstance(r, dict) else r for r in rows]
    direct = "directRoutingLogRow" in context or "getDirectRoutingCalls" in context
    return [_SURROGATE if _has_lone_surrogate(r) else r for r in rows], direct


def _with_tenant(row: Any, tenant_id: str | None, direct_routing: bool) -> Any:
    """A row that names no tenant gets `--tenant-id` (a Graph response's rows never name
    one), and a Direct Routing row its routing; anything else passes through."""
    if not isinstance(row, dict):
        return row
    if not is_graph_row(row):  # our own JSON form: `--tenant-id` fills a tenant it lacks too
        return {**row, "tenant_id": tenant_id} if tenant_id and not row.get("tenant_id") else row
    if tenant_id and not row.get("tenantId") and not row.get("tenant_id"):
        row = {**row, "tenantId": tenant_id}
    if direct_routing or is_direct_routing_row(row):
        row = {**row, "routing": "direct_routing"}
    return row


def _has_lone_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(obj, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_lone_surrogate(v) for v in obj)
    return False
