"""The folder listing is the architecture: imports point one way, and there is no cycle.

    cli -> dev/ -> ops/ -> wiring -> charging/ | control/ -> reports/ -> adapters/ -> config, errors
        -> processors/

A module may import from its own room and from rooms to its right; charging/ and control/
are two workers that share adapters/ and never import each other. Imports inside functions
and under TYPE_CHECKING count the same as imports at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline

ROOT = Path(pipeline.__file__).parent

RANK = {
    "processors": 0,
    "pipeline.config": 1,
    "pipeline.errors": 1,
    "pipeline.adapters": 2,
    "pipeline.reports": 3,
    "pipeline.charging": 4,
    "pipeline.control": 4,
    "pipeline.wiring": 5,
    "pipeline.ops": 6,
    "pipeline.dev": 7,
    "pipeline.cli": 8,
}


def room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "processors":
        return "processors"
    if parts[0] != "pipeline":
        return None
    if len(parts) < 2:
        return "pipeline"
    return ".".join(parts[:2])


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, known: frozenset[str] = frozenset()) -> set[str]:
    """Every module `source` imports (absolute names; relative imports resolved; a name
    imported `from` a package counts as its module when `known` has it)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from pipeline import wiring` imports the module pipeline.wiring
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found.update(subs or {target})
    return {name for name in found if room(name) is not None}


def wrong_way(sources: dict[str, tuple[str, bool]]) -> list[str]:
    bad = []
    known = frozenset(sources)
    for module, (source, is_package) in sorted(sources.items()):
        mine = room(module)
        if mine is None or mine == "pipeline":
            continue
        for target in sorted(imports_of(source, module, is_package, known)):
            theirs = room(target)
            if theirs is None or theirs == mine or theirs == "pipeline":
                continue
            if theirs not in RANK or mine not in RANK:
                bad.append(f"{module} -> {target}: room not in the layering table")
            elif RANK[theirs] >= RANK[mine]:
                bad.append(f"{module} -> {target}")
    return bad


def cycles(sources: dict[str, tuple[str, bool]]) -> list[list[str]]:
    known = frozenset(sources)
    graph = {m: {t for t in imports_of(s, m, p, known) if t in sources and t != m} for m, (s, p) in sources.items()}
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def tree() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in sorted(ROOT.rglob("*.py"))}


def test_every_room_is_in_the_table() -> None:
    rooms = {room(m) for m in tree()} - {"pipeline"}
    assert rooms <= set(RANK), rooms - set(RANK)


def test_imports_point_one_way() -> None:
    assert wrong_way(tree()) == []


def test_no_import_cycle_in_pipeline() -> None:
    assert cycles(tree()) == []


def test_the_check_catches_a_planted_wrong_way_import() -> None:
    planted = dict(tree())
    source, is_package = planted["pipeline.adapters.store"]
    planted["pipeline.adapters.store"] = (source + "\nfrom pipeline.ops.rebuild import rebuild\n", is_package)
    assert wrong_way(planted) == ["pipeline.adapters.store -> pipeline.ops.rebuild"]
    source, is_package = planted["pipeline.charging.worker"]
    planted["pipeline.charging.worker"] = (source + "\ndef f():\n    from pipeline.control import lifecycle\n", False)
    assert "pipeline.charging.worker -> pipeline.control.lifecycle" in wrong_way(planted)


def test_the_check_catches_a_planted_cycle() -> None:
    planted = {
        "pipeline.ops.a": ("from pipeline.ops import b\n", False),
        "pipeline.ops.b": ("from . import a\n", False),
    }
    assert cycles(planted) == [["pipeline.ops.a", "pipeline.ops.b", "pipeline.ops.a"]]
