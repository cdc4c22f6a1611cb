"""processors/ stays pure: no I/O library, no environment, no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import processors

FORBIDDEN = {
    "confluent_kafka",
    "faust",
    "redis",
    "prometheus_client",
    "fastavro",
    "aiokafka",
    "asyncio",
    "socket",
    "requests",
    "aiohttp",
    "os",
    "subprocess",
    "time",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic"}


def modules() -> list[Path]:
    return sorted(Path(processors.__file__).parent.rglob("*.py"))


def test_processors_import_no_io_library() -> None:
    bad = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert bad == []


def test_processors_never_read_the_clock() -> None:
    calls = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
                calls.append(f"{path.name}:{node.lineno} .{node.func.attr}()")
    assert calls == []


def test_the_check_itself_catches_a_forbidden_import(tmp_path: Path) -> None:
    tree = ast.parse("import redis\nfrom confluent_kafka import Producer\n")
    found = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert len(found) == 2
