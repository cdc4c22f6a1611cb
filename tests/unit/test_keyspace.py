"""One map of the Redis keyspace: every key callcharge writes is spelled in
pipeline/adapters/keyspace.py, which lists its pattern, type, writer and lifetime."""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.adapters import keyspace

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_but_the_keyspace_spells_a_redis_key() -> None:
    spelled = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if path.name in ("keyspace.py", "avro_fast.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("cc:"):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.JoinedStr):  # f"cc:..."
                first = node.values[0] if node.values else None
                if isinstance(first, ast.Constant) and str(first.value).startswith("cc:"):
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} f-string")
    assert spelled == []


def test_every_tenant_key_carries_the_tenant_as_a_hash_tag() -> None:
    made = [
        keyspace.tenant("T"),
        keyspace.outputs("T", 20260101),
        keyspace.result("T", "c1"),
        keyspace.seen("T", 20260101),
        keyspace.payment("T", "r1"),
        keyspace.notified("T", "n1"),
        keyspace.history("T"),
        keyspace.api_command("T", "c1"),
    ]
    assert all(key.startswith("cc:{T}") for key in made)
    assert len(set(made)) == len(made)
    documented = keyspace.__doc__ or ""
    for pattern in ("cc:{T}`", "cc:{T}:seen:E",
                    "cc:{T}:outputs:E", "cc:{T}:out:ID", "cc:{T}:pay:R", "cc:{T}:notified:N", "cc:{T}:history",
                    "cc:{T}:api-command:C", "cc:recharge-retry", "cc:email-retry", "cc:txn-leases:G", "cc:redriven:",
                    "cc:ledger-split"):  # fmt: skip
        assert pattern in documented, pattern
