"""The `callcharge rate` contract: output lines, bad lines on stderr, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import FIXTURES, cdr_entry, tenant_entry

TENANT = tenant_entry(
    {
        "users": [["u1", "US", ["PAYG", "MCOPSTNPP", "MCOMEETADD"]]],
        "funding": "1",
        "auto_recharge": {"enabled": True, "amount": "20", "trigger": "0.5"},
    }
)


def rate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "rate", *args], capture_output=True, text=True, timeout=60
    )


def run(
    tmp: Path, lines: list[str], *extra: str, card: Path = FIXTURES / "rates.csv", tenants: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """`callcharge rate` over `lines` for TENANT (or the `tenants` file's bytes) with `card`."""
    (tmp / "tenants.json").write_bytes(json.dumps([TENANT]).encode() if tenants is None else tenants)
    (tmp / "cdrs.jsonl").write_text("\n".join(lines) + "\n")
    return rate("--tenants", str(tmp / "tenants.json"), "--cdrs", str(tmp / "cdrs.jsonl"), "--rates", str(card), *extra)


def call(i: str, dur: int, to: str = "+12125550123", kind: str = "user_out") -> str:
    return json.dumps(cdr_entry({"id": i, "user": "u1", "type": kind, "to": to, "dur": dur}))


def test_rates_calls_and_reports_bad_lines_without_stopping(tmp_path: Path) -> None:
    lines = [
        call("c1", 600),
        "{not json",
        json.dumps({"call_id": "c2", "tenant_id": "T"}),
        call("c3", -5),
        json.dumps({**json.loads(call("c4", 60)), "tenant_id": "nobody"}),
        call("c5", 60, to="12345"),
        call("c1", 600),
        call("c6", 120, to="+442071234567", kind="conf_out"),
    ]
    proc = run(tmp_path, lines)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    charges = [o for o in out if "call_id" in o]
    assert [c["call_id"] for c in charges] == ["c1", "c6"]
    c1 = charges[0]
    assert c1["classification"] == "billable" and c1["amount"] == "1.00" and c1["balance_after"] == "0.00"
    assert c1["segments"] == [
        {
            "bucket": "billable",
            "minutes": 10,
            "amount": "1.00",
            "rate": "USD:calling:*:*:fixed",
            "lots": [{"lot_id": "L1", "amount": "1.00"}],
        }
    ]
    assert charges[1]["classification"] == "pooled_zone_a" and charges[1]["amount"] == "0.00"
    types = [o["type"] for o in out if "type" in o]
    assert "recharge_requested" in types and "balance_zero" in types
    err = proc.stderr.splitlines()
    assert any(line.startswith("line 2: undecodable") for line in err)
    assert any(line.startswith("line 3: missing_field") for line in err)
    assert any(line.startswith("line 4: bad_duration") for line in err)
    assert any(line.startswith("line 5: unknown_tenant") for line in err)
    assert any(line.startswith("line 6: unparsable_number") for line in err)
    assert any(line.startswith("line 7: duplicate") for line in err)
    assert "rated 2 calls" in err[-1] and "5 bad lines" in err[-1] and "1 duplicates" in err[-1]


def test_graph_response_file_is_accepted(tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "graph_getpstncalls_example.json").read_text())
    doc["tenantId"] = "T"
    (tmp_path / "g.json").write_text(json.dumps(doc))
    (tmp_path / "tenants.json").write_text(json.dumps([TENANT]))
    proc = rate(
        "--tenants",
        str(tmp_path / "tenants.json"),
        "--cdrs",
        str(tmp_path / "g.json"),
        "--out",
        str(tmp_path / "o.jsonl"),
    )
    assert proc.returncode == 0, proc.stderr
    charges = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines() if '"call_id"' in x]
    assert charges[0]["call_id"] == "9c4984c7-6c3c-427d-a30c-bd0b2eacee90"
    assert charges[0]["classification"] == "not_charged"


def test_unreadable_inputs_exit_non_zero(tmp_path: Path) -> None:
    proc = rate("--tenants", str(tmp_path / "none.json"), "--cdrs", str(tmp_path / "none.jsonl"))
    assert proc.returncode == 2
    assert "cannot read tenants file" in proc.stderr


def test_mca_tenant_cannot_enable_auto_recharge(tmp_path: Path) -> None:
    bad = {**TENANT, "channel": "mca"}
    (tmp_path / "tenants.json").write_text(json.dumps([bad]))
    (tmp_path / "c.jsonl").write_text("")
    proc = rate("--tenants", str(tmp_path / "tenants.json"), "--cdrs", str(tmp_path / "c.jsonl"))
    assert proc.returncode == 2
    assert "auto-recharge must be off for mca" in proc.stderr


def test_a_file_that_is_not_a_rate_card_is_refused_not_read_as_an_empty_card(tmp_path: Path) -> None:
    assert run(tmp_path, []).returncode == 0  # a real card
    for text in ("", "just one line\n", "a,b,c\n1,2,3\n"):
        (tmp_path / "card.csv").write_text(text)
        r = run(tmp_path, [], card=tmp_path / "card.csv")
        assert r.returncode == 2 and "not a rate card: the header lacks currency" in r.stderr, (text, r.stderr)


def test_output_goes_where_asked_or_says_why_it_cannot(tmp_path: Path) -> None:
    r = run(tmp_path, [call("c1", 60)], "--out", str(tmp_path / "new" / "dir" / "charges.jsonl"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "new" / "dir" / "charges.jsonl").read_text().splitlines()[0])["call_id"] == "c1"
    (tmp_path / "file").write_text("")
    r = run(tmp_path, [call("c1", 60)], "--out", str(tmp_path / "file" / "charges.jsonl"))
    assert r.returncode == 2 and f"cannot write {tmp_path / 'file' / 'charges.jsonl'}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_tenants_file_and_a_rate_card_saved_with_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" and PowerShell write a UTF-8 byte order mark first.
    bom = b"\xef\xbb\xbf"
    (tmp_path / "card.csv").write_bytes(bom + (FIXTURES / "rates.csv").read_bytes())
    r = run(tmp_path, [call("c1", 60)], card=tmp_path / "card.csv", tenants=bom + json.dumps([TENANT]).encode())
    assert r.returncode == 0, r.stderr
    charges = [c for c in map(json.loads, r.stdout.splitlines()) if c.get("call_id") == "c1"]
    assert charges[0]["tariff"] is not None and charges[0]["rate_card"].startswith("sha256:")  # the card was read


def test_a_rate_card_pricing_one_route_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    # Before, the later line silently won.
    card = (FIXTURES / "rates.csv").read_text().rstrip("\n").splitlines()
    (tmp_path / "card.csv").write_text("\n".join([*card, "usd, calling ,*,*,fixed,0.99,0,60,60"]) + "\n")
    r = run(tmp_path, [call("c1", 60)], card=tmp_path / "card.csv")
    first = next(i for i, line in enumerate(card, start=1) if line.startswith("USD,calling,*,*,fixed,"))
    assert r.returncode == 2, r.stderr
    assert f"rate card line {len(card) + 1}: the same route as line {first} (USD, calling, *, *, fixed)" in r.stderr
