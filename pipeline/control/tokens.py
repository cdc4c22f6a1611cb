"""API tokens scoped to tenants.

A tokens file (`CALLCHARGE_API_TOKENS_FILE`, a JSON list, mounted from a secret) holds one
entry per token, never the token itself:

    {"name": "contoso-admin", "sha256": "<hex digest of the token>",
     "scope": "read" | "write", "tenants": ["<tenant id>", ...] or ["*"]}

An operator token names "*"; a tenant token names its tenant; a partner token the tenants
it manages. `write` includes `read`. `CALLCHARGE_API_TOKEN`, when set, is one more token:
the operator's, write scope on every tenant (name "operator"). A presented token is hashed
and compared with every entry in constant time; logs name the token, never show it.
`callcharge token new` makes a token and prints its entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.adapters import strict_json
from pipeline.errors import FatalError
from processors.inputs import canonical_id

SCOPES = ("read", "write")


@dataclass(frozen=True)
class Principal:
    name: str
    scope: str
    tenants: frozenset[str]  # "*": every tenant

    def may(self, tenant_id: str, scope: str) -> bool:
        if scope == "write" and self.scope != "write":
            return False
        return "*" in self.tenants or canonical_id(tenant_id) in self.tenants


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


class Tokens:
    def __init__(self, entries: list[_Entry]):
        self._entries = entries

    @classmethod
    def load(cls, path: str | Path | None, operator_token: str = "") -> Tokens:
        entries = []
        if path:
            try:
                raw = strict_json.loads(Path(path).read_text(encoding="utf-8-sig"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise FatalError(f"API tokens file {path}: {exc}") from None
            if not isinstance(raw, list):
                raise FatalError(f"API tokens file {path}: expected a JSON list of tokens")
            entries = [_parse(i, e, path) for i, e in enumerate(raw)]
        if operator_token:
            entries.append(_Entry(_digest(operator_token), Principal("operator", "write", frozenset({"*"}))))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def who(self, authorization: str) -> Principal | None:
        """The principal of an `Authorization: Bearer <token>` header, or None."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        digest = _digest(token.strip())
        found = None
        for entry in self._entries:  # every entry, whatever matches: constant time in the token
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found


def new_token(name: str, scope: str, tenants: list[str]) -> tuple[str, dict[str, Any]]:
    """A fresh random token and the entry to add to the tokens file."""
    if scope not in SCOPES:
        raise FatalError(f"scope must be one of {', '.join(SCOPES)}")
    token = "cc_" + secrets.token_urlsafe(32)
    return token, {"name": name, "sha256": _digest(token).hex(), "scope": scope, "tenants": tenants}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _parse(i: int, e: Any, path: str | Path) -> _Entry:
    where = f"API tokens file {path}, entry {i}"
    if not isinstance(e, dict):
        raise FatalError(f"{where}: expected an object")
    name, digest, scope, tenants = e.get("name"), e.get("sha256"), e.get("scope"), e.get("tenants")
    if not isinstance(name, str) or not name:
        raise FatalError(f"{where}: name is required")
    if not isinstance(digest, str) or len(digest) != 64:
        raise FatalError(f"{where} ({name}): sha256 must be the 64-hex-digit digest of the token")
    if scope not in SCOPES:
        raise FatalError(f"{where} ({name}): scope must be one of {', '.join(SCOPES)}")
    if not isinstance(tenants, list) or not tenants or not all(isinstance(t, str) for t in tenants):
        raise FatalError(f'{where} ({name}): tenants must be a list of tenant ids, or ["*"]')
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raise FatalError(f"{where} ({name}): sha256 is not hexadecimal") from None
    return _Entry(raw, Principal(name, scope, frozenset(canonical_id(t) for t in tenants)))
